//! A sign-in service's side of an MFA reset: watch the change stream, and for every user whose
//! MFA was reset, stop trusting their remembered devices and (when the event says so) ask them
//! to register again at their next sign-in. Here "acting" is a printed line.
//!
//! ```sh
//! cargo run --example watch_resets -- $NORTHWIND $CONTOSO   # with the demo's exports
//! ```
//!
//! The cursor of the last response is kept in `watch_resets.cursor`, so a restart (or a
//! reconnect after an error) resumes where it stopped: nothing is missed, and an event seen
//! twice (delivery is at least once) is recognised by its id.

use std::{collections::HashSet, time::Duration};

use mfa_reset::proto::v1::{
    self as pb, AuditAction, audit_log_client::AuditLogClient, watch_audit_events_response::Payload,
};
use tonic::{Request, transport::Channel};

const CURSOR_FILE: &str = "watch_resets.cursor";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:50051".into());
    let token = std::env::var("TOKEN")?;
    let customer_ids: Vec<String> = std::env::args().skip(1).collect();
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect_lazy();
    let mut client = AuditLogClient::new(channel);
    let mut seen = HashSet::new();
    loop {
        let cursor = std::fs::read_to_string(CURSOR_FILE).unwrap_or_default();
        let mut request = Request::new(pb::WatchAuditEventsRequest {
            customer_ids: customer_ids.clone(),
            actions: vec![AuditAction::MfaReset.into()],
            after_cursor: cursor.trim().to_string(),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let ended = match client.watch_audit_events(request).await {
            Ok(stream) => consume(stream.into_inner(), &mut seen).await,
            Err(status) => status,
        };
        // Every end is resumable from the cursor: a replica shutting down (UNAVAILABLE), a
        // consumer that fell behind (RESOURCE_EXHAUSTED). A revoked role or a bad request is
        // not: stop there.
        use tonic::Code;
        match ended.code() {
            Code::PermissionDenied
            | Code::Unauthenticated
            | Code::InvalidArgument
            | Code::OutOfRange => {
                anyhow::bail!("the stream ended for good: {ended:?}")
            }
            _ => eprintln!("stream ended ({}); reconnecting", ended.message()),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Acts on each event of `stream` and saves its cursor; returns how the stream ended.
async fn consume(
    mut stream: tonic::Streaming<pb::WatchAuditEventsResponse>,
    seen: &mut HashSet<String>,
) -> tonic::Status {
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return tonic::Status::unavailable("the server closed the stream"),
            Err(status) => return status,
        };
        if let Some(Payload::AuditEvent(event)) = &response.payload {
            if seen.insert(event.id.clone()) {
                let reset_at = event.mfa_reset_time.as_ref().map(|t| t.seconds);
                println!(
                    "MFA reset: {} (customer {}): forget devices remembered before {reset_at:?}; {}",
                    event.external_subject,
                    event.customer_id,
                    match event.mfa_registration_required {
                        Some(true) => "require MFA registration at next sign-in",
                        _ => "no registration required",
                    }
                );
            }
        }
        // A heartbeat's cursor too: an idle consumer keeps its place.
        if let Err(err) = std::fs::write(CURSOR_FILE, &response.cursor) {
            eprintln!("cannot save the cursor: {err}");
        }
    }
}
