//! The subcommands: `serve`, `migrate`, `token`, and the operator's role management
//! (`grant`, `revoke`, `roles`), which work on the database directly, the way
//! `kubectl create rolebinding` does, so a fresh install is usable without SQL.

use std::time::Duration;

use anyhow::{Context, bail};
use sea_orm::DatabaseConnection;

use crate::{
    auth::{ServerSecret, mint_dev_token},
    config::{Cli, Command, CommonArgs, HealthArgs, Output, RoleArgs, Settings},
    demo,
    domain::{
        DomainError,
        ids::CustomerId,
        model::Role,
        roles::{self, RoleChange},
    },
    server::{Application, shutdown_signal},
    store,
    telemetry::{self, TelemetrySettings},
};

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Only the server exports traces; the one-shot subcommands (a health check every few
    // seconds among them) do not, whatever OTEL_* the environment sets.
    let (export_traces, otlp_endpoint, prometheus) = match &cli.command {
        Command::Serve(serve) => (
            true,
            serve.otlp_endpoint.clone(),
            serve.metrics_listen.is_some(),
        ),
        _ => (false, None, false),
    };
    let (subscriber, guard) = telemetry::get_subscriber(
        &TelemetrySettings {
            log_format: cli.common.log_format,
            log_filter: cli
                .common
                .log
                .clone()
                .unwrap_or_else(|| if export_traces { "info" } else { "warn" }.to_string()),
            export_traces,
            otlp_endpoint,
            service_name: "mfa-reset".into(),
            ansi: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            metrics: export_traces,
            prometheus,
        },
        std::io::stderr,
    )?;
    telemetry::init_subscriber(subscriber)?;
    let result = match cli.command {
        Command::Serve(serve) => {
            let settings = Settings::from_args(&cli.common, &serve);
            let app = Application::build(settings).await?;
            if serve.demo {
                let seeded = demo::seed(app.db()).await.context("seeding demo data")?;
                print_demo_help(&cli.common, &seeded, app.local_addr()?)?;
            }
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Migrate => {
            let db = open(&cli.common).await?;
            store::migrate(&db).await.context("migrating")?;
            answer(
                &cli.common,
                "database is up to date",
                serde_json::json!({ "up_to_date": true }),
            )
        }
        Command::Token(args) => {
            let secret = ServerSecret::load_or_create(&cli.common.secret_file())?;
            let token = mint_dev_token(
                &secret,
                &args.subject,
                Duration::from_secs(args.ttl_secs),
                &cli.common.jwt_issuer,
                &cli.common.jwt_audience,
            )?;
            answer(
                &cli.common,
                &token,
                serde_json::json!({ "subject": args.subject, "token": token }),
            )
        }
        Command::Grant(args) => change_role(&cli.common, &args, true).await,
        Command::Revoke(args) => change_role(&cli.common, &args, false).await,
        Command::PurgeResets(args) => {
            let db = open(&cli.common).await?;
            let txn = store::begin_write(&db).await?;
            // The database's clock, which decides expiry everywhere else, not this machine's.
            let now = store::db_now(&txn).await?;
            let cutoff = now - chrono::Duration::days(i64::from(args.older_than_days));
            let purged = store::resets::purge_finished(&txn, cutoff, now).await?;
            store::commit(txn).await?;
            answer(
                &cli.common,
                &format!("purged {purged} finished MFA reset(s) made before {cutoff}"),
                serde_json::json!({ "purged": purged, "cutoff": cutoff }),
            )
        }
        Command::PurgeAudit(args) => {
            let db = open(&cli.common).await?;
            let cutoff =
                crate::domain::now() - chrono::Duration::days(i64::from(args.older_than_days));
            let purged = crate::domain::audit::watch::purge(&db, cutoff).await?;
            answer(
                &cli.common,
                &format!("purged {purged} audit event(s) that happened before {cutoff}"),
                serde_json::json!({ "purged": purged, "cutoff": cutoff }),
            )
        }
        Command::Health(args) => health(&cli.common, &args).await,
        Command::Roles(args) => {
            let db = open(&cli.common).await?;
            let assignments = store::roles::list(&db, args.subject.as_deref()).await?;
            let rows: Vec<(String, String, String)> = assignments
                .into_iter()
                .map(|a| {
                    let customer = a
                        .customer_id
                        .map_or_else(|| "*".into(), |id| id.to_string());
                    (a.subject, customer, a.role)
                })
                .collect();
            let mut table = format!("{:<32} {:<38} ROLE", "SUBJECT", "CUSTOMER");
            for (subject, customer, role) in &rows {
                table.push_str(&format!("\n{subject:<32} {customer:<38} {role}"));
            }
            let json = rows
                .iter()
                .map(|(subject, customer, role)| {
                    serde_json::json!({ "subject": subject, "customer": customer, "role": role })
                })
                .collect();
            answer(&cli.common, &table, serde_json::Value::Array(json))
        }
    };
    // Flush exported spans before the process ends (blocking: off the async workers).
    let _ = tokio::task::spawn_blocking(move || guard.shutdown()).await;
    result
}

/// Opens and migrates the database, for the operator subcommands.
async fn open(common: &CommonArgs) -> anyhow::Result<DatabaseConnection> {
    let db = store::connect(&common.database_url())
        .await
        .context("connecting to the database")?;
    store::migrate(&db)
        .await
        .context("migrating the database")?;
    Ok(db)
}

async fn change_role(common: &CommonArgs, args: &RoleArgs, grant: bool) -> anyhow::Result<()> {
    let Some(role) = Role::parse(&args.role.to_ascii_uppercase()) else {
        bail!(
            "unknown role {:?}; use one of {}",
            args.role,
            Role::ALL
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    if args.subject.trim().is_empty() {
        bail!("--subject must not be empty");
    }
    let customer: Option<CustomerId> = match args.customer.as_str() {
        "*" => None,
        text => Some(
            CustomerId::parse(text)
                .with_context(|| format!("--customer must be a customer id or *, not {text:?}"))?,
        ),
    };
    let actor = args.actor();
    let db = open(common).await?;
    let change = if grant {
        roles::grant(&db, &actor, &args.subject, customer, role).await
    } else {
        roles::revoke(&db, &actor, &args.subject, customer, role).await
    };
    let change = match change {
        Ok(change) => change,
        Err(DomainError::NotFound { .. }) => bail!("no customer {}", args.customer),
        Err(err) => return Err(anyhow::Error::new(err).context("changing the role")),
    };
    let verb = if grant { "granted" } else { "revoked" };
    let state = match change {
        RoleChange::Changed => format!("{verb} (audited as done by {actor})"),
        RoleChange::Unchanged => format!("already {verb}; nothing changed"),
    };
    answer(
        common,
        &format!("{} {} on {}: {state}", args.subject, role, args.customer),
        serde_json::json!({
            "subject": args.subject,
            "role": role.as_str(),
            "customer": args.customer,
            "changed": change == RoleChange::Changed,
            "actor": actor,
        }),
    )
}

/// Prints a one-shot subcommand's answer on stdout, as `--output` asks: `text`, or `json`.
fn answer(common: &CommonArgs, text: &str, json: serde_json::Value) -> anyhow::Result<()> {
    match common.output {
        Output::Text => println!("{text}"),
        Output::Json => println!("{}", serde_json::to_string(&json)?),
    }
    Ok(())
}

/// `health`: one gRPC health check; prints SERVING, or fails naming the status.
async fn health(common: &CommonArgs, args: &HealthArgs) -> anyhow::Result<()> {
    use tonic::transport::Endpoint;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let scheme = if args.tls_ca.is_some() {
        "https"
    } else {
        "http"
    };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", args.addr))
        .with_context(|| format!("--addr {} is not HOST:PORT", args.addr))?
        .connect_timeout(timeout)
        .timeout(timeout);
    if let Some(ca) = &args.tls_ca {
        let identity = args
            .tls_client_cert
            .as_deref()
            .zip(args.tls_client_key.as_deref());
        let tls = crate::tls::client_config(ca, args.tls_server_name.as_deref(), identity)?;
        endpoint = endpoint.tls_config(tls).context("setting up TLS")?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.addr))?;
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: args.service.clone(),
        })
        .await
        .with_context(|| format!("health check of {:?}", args.service))?
        .into_inner()
        .status();
    if status != ServingStatus::Serving {
        bail!("{} is {}", args.addr, status.as_str_name());
    }
    answer(
        common,
        status.as_str_name(),
        serde_json::json!({ "addr": args.addr, "service": args.service, "status": status.as_str_name() }),
    )
}

fn print_demo_help(
    common: &CommonArgs,
    seeded: &demo::Seeded,
    addr: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let secret = ServerSecret::load_or_create(&common.secret_file())?;
    let token = |subject| {
        mint_dev_token(
            &secret,
            subject,
            Duration::from_secs(8 * 3600),
            &common.jwt_issuer,
            &common.jwt_audience,
        )
    };
    let mut exports = vec![
        format!("export TOKEN={}", token(demo::DEMO_ADMIN)?),
        format!("export APPROVER_TOKEN={}", token(demo::DEMO_APPROVER)?),
        format!("export ADDR={addr}"),
    ];
    for (var, name) in [
        ("NORTHWIND", demo::NORTHWIND),
        ("CONTOSO", demo::CONTOSO),
        ("FABRIKAM", demo::FABRIKAM),
        ("TAILSPIN", demo::TAILSPIN),
    ] {
        if let Some(id) = seeded.customer_id(name) {
            exports.push(format!("export {var}={id}"));
        }
    }
    for (var, id) in &seeded.samples {
        exports.push(format!("export {var}={id}"));
    }
    println!(
        r#"
Demo data is ready. Principal `{admin}` ($TOKEN) holds
PRIVILEGED_AUTHENTICATION_ADMIN in {n}, AUTHENTICATION_ADMIN in {c},
READER in {f}, and nothing in {t}.
A reset of {threshold} or more {c} users needs a second administrator's approval:
`{approver}` ($APPROVER_TOKEN) gives it.
Paste these lines into a shell, then follow the README's walkthrough:

{exports}

grpcurl -plaintext -H "authorization: Bearer $TOKEN" $ADDR mfareset.v1.Customers/ListCustomers
grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d "{{\"customer_ids\":[\"$NORTHWIND\",\"$CONTOSO\"],\"page_size\":5}}" $ADDR mfareset.v1.Users/ListUsers
grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d "{{\"customer_ids\":[\"$NORTHWIND\",\"$CONTOSO\",\"$FABRIKAM\"]}}" $ADDR mfareset.v1.Customers/DescribeSelection
"#,
        admin = demo::DEMO_ADMIN,
        approver = demo::DEMO_APPROVER,
        threshold = demo::CONTOSO_APPROVAL_THRESHOLD,
        n = demo::NORTHWIND,
        c = demo::CONTOSO,
        f = demo::FABRIKAM,
        t = demo::TAILSPIN,
        exports = exports.join("\n"),
    );
    Ok(())
}
