// Reset one user's MFA the way a help desk does, from TypeScript: name the user by the subject
// the sign-in system knows, print the summary (what happens to each method), confirm it.
// Errors are explained from their google.rpc details.
//
//   npm install @grpc/grpc-js @bufbuild/protobuf ts-proto @bufbuild/buf typescript @types/node
//   npx buf generate ../../proto --template ../../tests/clients/node/buf.gen.yaml -o .
//   npx tsc -p . && node dist/reset_one_user.js "$ADDR" "$TOKEN" "$NORTHWIND" 'northwind|0002'
//
// (`cargo run -- serve --demo` prints ADDR, TOKEN and NORTHWIND. tests/clients/node runs this
// program in CI.)

import { Metadata, ServiceError, credentials } from "@grpc/grpc-js";

import { MethodDisposition } from "./gen/mfareset/v1/authentication_method";
import { MfaResetItemOutcome, MfaResetState } from "./gen/mfareset/v1/mfa_reset";
import {
  UsersClient,
  UsersConfirmMfaResetRequest,
  UsersConfirmMfaResetResponse,
  UsersSummarizeMfaResetRequest,
  UsersSummarizeMfaResetResponse,
} from "./gen/mfareset/v1/users_service";

async function main(addr: string, token: string, customer: string, subject: string): Promise<number> {
  const users = new UsersClient(addr, credentials.createInsecure());
  const metadata = new Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  try {
    const summary = await new Promise<UsersSummarizeMfaResetResponse>((ok, fail) =>
      users.summarizeMfaReset(
        UsersSummarizeMfaResetRequest.fromPartial({
          customerIds: [customer],
          users: { userIds: [], externalSubjects: [subject] },
          reason: "help desk: lost phone",
        }),
        metadata,
        (error, answer) => (error ? fail(error) : ok(answer)),
      ),
    );
    for (const item of summary.items) {
      console.log(`${item.displayName}: ${MfaResetItemOutcome[item.outcome]}`);
      for (const method of item.methods) console.log(`  ${method.label}: ${MethodDisposition[method.disposition]}`);
    }
    const reset = summary.mfaReset!;
    if (reset.totals?.usersToResetCount === 0) {
      console.log("nothing to reset");
      return 0;
    }
    const confirmed = await new Promise<UsersConfirmMfaResetResponse>((ok, fail) =>
      users.confirmMfaReset(
        UsersConfirmMfaResetRequest.fromPartial({ resetId: reset.id, etag: reset.etag }),
        metadata,
        (error, answer) => (error ? fail(error) : ok(answer)),
      ),
    );
    console.log(`reset ${reset.id}: ${MfaResetState[confirmed.mfaReset!.state]}`);
    return 0;
  } catch (error) {
    const status = error as ServiceError;
    // The ErrorInfo reason and each bad field travel in grpc-status-details-bin (see the Node
    // test for decoding them with the google.rpc types); the message says them in words.
    console.error(`${status.code} ${status.details}`);
    return 1;
  } finally {
    users.close();
  }
}

const [addr, token, customer, subject] = process.argv.slice(2);
if (!addr || !token || !customer || !subject) {
  console.error("usage: node dist/reset_one_user.js ADDR TOKEN CUSTOMER_ID EXTERNAL_SUBJECT");
  process.exit(2);
}
main(addr, token, customer, subject).then((code) => process.exit(code));
