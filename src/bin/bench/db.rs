//! The database a run uses: a fresh PostgreSQL database on the given server, or a SQLite file
//! in a fresh temp directory; dropped (removed) when the run ends, whether it passed or not.

use std::path::PathBuf;

use anyhow::Context;
use mfa_reset::store;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend,
    sqlx::{PgPool, SqlitePool},
};
use uuid::Uuid;

/// The backend under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// A SQLite file (the embedded default).
    Sqlite,
    /// PostgreSQL (production).
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The database of one run.
pub struct Target {
    /// The URL the service and the bench connect to.
    pub url: String,
    /// Temp directory: the server secret, and the SQLite file.
    pub dir: PathBuf,
    /// `(admin URL, database name)` of a PostgreSQL database to drop at the end.
    postgres: Option<(String, String)>,
}

impl Target {
    /// A fresh, empty database.
    /// With `log_statements` (PostgreSQL), every statement on the new database is written to
    /// the server's log with its duration (`log_min_duration_statement = 0`, parameters left
    /// out), for a breakdown of where a call's time goes.
    pub async fn create(
        backend: Backend,
        postgres_url: Option<&str>,
        log_statements: bool,
    ) -> anyhow::Result<Target> {
        let id = Uuid::now_v7().simple().to_string();
        let dir = std::env::temp_dir().join(format!("mfa-reset-bench-{id}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the temp directory {}", dir.display()))?;
        match backend {
            Backend::Sqlite => Ok(Target {
                url: format!("sqlite://{}?mode=rwc", dir.join("bench.db").display()),
                dir,
                postgres: None,
            }),
            Backend::Postgres => {
                let admin_url = postgres_url.filter(|u| !u.is_empty()).context(
                    "--backend postgres needs --postgres-url or MFA_RESET_TEST_POSTGRES_URL",
                )?;
                let name = format!("mfa_reset_bench_{id}");
                let admin = store::connect(admin_url)
                    .await
                    .context("connecting to PostgreSQL")?;
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .context("creating the bench database")?;
                if log_statements {
                    admin
                        .execute_unprepared(&format!(
                            "ALTER DATABASE \"{name}\" SET log_min_duration_statement = 0; \
                             ALTER DATABASE \"{name}\" SET log_parameter_max_length = 0"
                        ))
                        .await
                        .context("turning statement logging on")?;
                }
                admin.close().await.ok();
                Ok(Target {
                    url: store::with_database(admin_url, &name),
                    dir,
                    postgres: Some((admin_url.to_string(), name)),
                })
            }
        }
    }

    /// Where the data is, without credentials: the PostgreSQL database's name or the
    /// SQLite file.
    pub fn describe(&self) -> String {
        match &self.postgres {
            Some((_, name)) => format!("PostgreSQL database {name}"),
            None => format!("SQLite file {}", self.dir.join("bench.db").display()),
        }
    }

    /// Drops the PostgreSQL database (`WITH (FORCE)`) and removes the temp directory.
    pub async fn drop_now(self) {
        if let Some((admin_url, name)) = &self.postgres {
            match store::connect(admin_url).await {
                Ok(admin) => {
                    if let Err(err) = admin
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .await
                    {
                        eprintln!("warning: could not drop database {name}: {err}");
                    }
                    admin.close().await.ok();
                }
                Err(err) => eprintln!("warning: could not drop database {name}: {err}"),
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The sqlx pool under a sea-orm connection: the raw transactions use it directly.
#[derive(Clone)]
pub enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Pool {
    pub fn of(db: &DatabaseConnection) -> anyhow::Result<Pool> {
        match db.get_database_backend() {
            DbBackend::Postgres => Ok(Pool::Postgres(db.get_postgres_connection_pool().clone())),
            DbBackend::Sqlite => Ok(Pool::Sqlite(db.get_sqlite_connection_pool().clone())),
            other => anyhow::bail!("unsupported backend {other:?}"),
        }
    }
}

/// A JSON array of the ids as hex strings: how the SQLite statements take a list of ids in
/// one bound parameter (`SELECT unhex(value) FROM json_each(?)`; UUIDs are 16-byte BLOBs
/// there).
pub fn hex_json(ids: &[Uuid]) -> String {
    let mut out = String::with_capacity(2 + ids.len() * 35);
    out.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(id.simple().encode_lower(&mut Uuid::encode_buffer()));
        out.push('"');
    }
    out.push(']');
    out
}
