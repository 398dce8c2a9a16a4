//! Per-principal rate limiting: RESOURCE_EXHAUSTED with RetryInfo past the quota.

use mfa_reset::{config::Settings, proto::v1 as pb};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_types::StatusExt;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_over_its_quota_is_told_when_to_retry() {
    let database = TestDatabase::create(Backend::Sqlite).await.expect("sqlite");
    let settings = Settings {
        rate_limit_per_minute: 3,
        ..<Settings as TestSettings>::default_for_tests(database.url.clone())
    };
    let app = TestApp::spawn_with(settings).await;
    let list = |subject: &str| {
        let mut client = app.customers();
        let token = app.token(subject);
        async move {
            client
                .list_customers(authed(pb::ListCustomersRequest::default(), &token))
                .await
        }
    };
    for _ in 0..3 {
        list("busy").await.expect("within the quota");
    }
    let status = assert_error(list("busy").await, Code::ResourceExhausted, "RATE_LIMITED");
    let delay = status
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(
        delay > std::time::Duration::ZERO && delay <= std::time::Duration::from_secs(20),
        "{delay:?}"
    );
    // Other principals have their own quota, and health is never limited.
    list("someone-else").await.expect("another principal");
    let mut health = HealthClient::new(app.channel.clone());
    for _ in 0..5 {
        health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health");
    }
    app.stop().await;
    database.drop_now().await;
}
