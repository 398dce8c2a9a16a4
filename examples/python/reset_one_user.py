"""Reset one user's MFA the way a help desk does: name the user by the subject the sign-in
system knows, print the summary (what happens to each method), and confirm it. Errors are
decoded with the standard google.rpc types.

    python -m pip install grpcio grpcio-tools grpcio-status   # or: bash .ci/python-venv
    mkdir -p gen/python && python -m grpc_tools.protoc -I proto --python_out=gen/python \\
        --grpc_python_out=gen/python $(find proto/mfareset -name '*.proto')
    PYTHONPATH=gen/python python examples/python/reset_one_user.py \\
        --addr "$ADDR" --token "$TOKEN" --customer "$NORTHWIND" --subject northwind\\|0002

(`cargo run -- serve --demo` prints ADDR, TOKEN and NORTHWIND.)
"""

import argparse
import sys

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mfareset.v1 import (
    authentication_method_pb2,
    mfa_reset_pb2,
    user_pb2,
    users_service_pb2 as users,
    users_service_pb2_grpc,
)


def explain(error: grpc.RpcError) -> str:
    """The status, its ErrorInfo reason and any bad fields, from the google.rpc details."""
    text = f"{error.code().name}: {error.details()}"
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            text += f" (reason {info.reason})"
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            text += "".join(f"\n  {v.field}: {v.description}" for v in bad.field_violations)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--customer", required=True)
    parser.add_argument("--subject", required=True, help="the user's external subject")
    parser.add_argument("--reason", default="help desk: lost phone")
    args = parser.parse_args()

    auth = (("authorization", f"Bearer {args.token}"),)
    stub = users_service_pb2_grpc.UsersStub(grpc.insecure_channel(args.addr))
    try:
        summary = stub.SummarizeMfaReset(
            users.UsersSummarizeMfaResetRequest(
                customer_ids=[args.customer],
                users=user_pb2.UserReferences(external_subjects=[args.subject]),
                reason=args.reason,
            ),
            metadata=auth,
        )
        reset = summary.mfa_reset
        for item in summary.items:
            print(f"{item.display_name}: {mfa_reset_pb2.MfaResetItemOutcome.Name(item.outcome)}")
            for method in item.methods:
                print(f"  {method.label}: {authentication_method_pb2.MethodDisposition.Name(method.disposition)}")
        if reset.totals.users_to_reset_count == 0:
            print("nothing to reset")
            return 0
        confirmed = stub.ConfirmMfaReset(
            users.UsersConfirmMfaResetRequest(reset_id=reset.id, etag=reset.etag), metadata=auth
        ).mfa_reset
        print(f"reset {confirmed.id}: {mfa_reset_pb2.MfaResetState.Name(confirmed.state)}")
    except grpc.RpcError as error:
        print(explain(error), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
