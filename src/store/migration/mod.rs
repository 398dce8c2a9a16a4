//! Schema migrations: one ordered list that runs unchanged on SQLite and PostgreSQL.
//!
//! Each migration is a file named `mYYYYMMDD_NNNNNN_what.rs`; its name is recorded in
//! `seaql_migrations` once applied, so a file, once released, is never edited: a change to the
//! schema is a new file appended to [`Migrator::migrations`].

use sea_orm_migration::prelude::*;

mod m20261125_000001_initial;
mod m20261201_000002_contract_v1;
mod m20261202_000003_change_stream;
mod m20261203_000004_search;

/// The service's migrations, oldest first. Run them with [`crate::store::migrate`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_initial::Migration),
            Box::new(m20261201_000002_contract_v1::Migration),
            Box::new(m20261202_000003_change_stream::Migration),
            Box::new(m20261203_000004_search::Migration),
        ]
    }
}
