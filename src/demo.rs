//! Demo data for `serve --demo`: four customers with different settings, about sixty
//! users with methods of every kind and scope, principal `demo-admin` with a different
//! role in each of three customers and none in the fourth, and a second administrator,
//! `demo-approver`, who approves what `demo-admin` asks for where a customer's four-eyes
//! threshold is met (Contoso's is 3 users).
//!
//! Seeding is idempotent: customers are found by name and users by e-mail, and only
//! what is missing is inserted, in one transaction. Demo rows are written through the
//! store directly (they are fixtures, not changes anyone made), so they carry no audit
//! events.

use std::collections::HashMap;

use chrono::Utc;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
use uuid::Uuid;

use crate::{
    domain::{
        ids::UserId,
        model::{MethodKind, MethodScope, MethodState, MfaPolicy, Role},
    },
    store::{
        self,
        entities::{authentication_methods, customers, users},
    },
};

/// The demo principal.
pub const DEMO_ADMIN: &str = "demo-admin";
/// The second administrator, who approves large resets: PRIVILEGED in Northwind,
/// AUTHENTICATION_ADMIN in Contoso.
pub const DEMO_APPROVER: &str = "demo-approver";
/// Contoso's approval threshold: a reset of this many of its users needs a second admin.
pub const CONTOSO_APPROVAL_THRESHOLD: u32 = 3;
/// Enforced MFA, hardware OATH enabled; `demo-admin` is PRIVILEGED here.
pub const NORTHWIND: &str = "Northwind Health";
/// Optional MFA; `demo-admin` is AUTHENTICATION_ADMIN here.
pub const CONTOSO: &str = "Contoso Retail";
/// Enforced MFA without hardware OATH; `demo-admin` is READER here.
pub const FABRIKAM: &str = "Fabrikam Logistics";
/// Optional MFA; `demo-admin` has no role here.
pub const TAILSPIN: &str = "Tailspin Travel";

const FIRST_NAMES: [&str; 20] = [
    "Ada", "Bruno", "Chloe", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Keira",
    "Luis", "Maya", "Nils", "Olga", "Priya", "Quentin", "Rosa", "Sven", "Tariq",
];
const LAST_NAMES: [&str; 7] = [
    "Lovelace", "Okafor", "Nguyen", "Ivanova", "Schmidt", "Haddad", "Tanaka",
];

struct DemoCustomer {
    name: &'static str,
    policy: MfaPolicy,
    kinds: &'static [MethodKind],
    users: usize,
    demo_admin_role: Option<Role>,
    demo_approver_role: Option<Role>,
    approval_threshold: u32,
}

const ALL_KINDS: &[MethodKind] = MethodKind::ALL;
const WITHOUT_HARDWARE: &[MethodKind] = &[
    MethodKind::Phone,
    MethodKind::AuthenticatorApp,
    MethodKind::SoftwareOath,
    MethodKind::Email,
    MethodKind::Fido2,
    MethodKind::RecoveryCodes,
];

const CUSTOMERS: [DemoCustomer; 4] = [
    DemoCustomer {
        name: NORTHWIND,
        policy: MfaPolicy::Enforced,
        kinds: ALL_KINDS,
        users: 20,
        demo_admin_role: Some(Role::PrivilegedAuthenticationAdmin),
        demo_approver_role: Some(Role::PrivilegedAuthenticationAdmin),
        approval_threshold: 0,
    },
    DemoCustomer {
        name: CONTOSO,
        policy: MfaPolicy::Optional,
        kinds: WITHOUT_HARDWARE,
        users: 18,
        demo_admin_role: Some(Role::AuthenticationAdmin),
        demo_approver_role: Some(Role::AuthenticationAdmin),
        approval_threshold: CONTOSO_APPROVAL_THRESHOLD,
    },
    DemoCustomer {
        name: FABRIKAM,
        policy: MfaPolicy::Enforced,
        kinds: WITHOUT_HARDWARE,
        users: 16,
        demo_admin_role: Some(Role::Reader),
        demo_approver_role: None,
        approval_threshold: 0,
    },
    DemoCustomer {
        name: TAILSPIN,
        policy: MfaPolicy::Optional,
        kinds: WITHOUT_HARDWARE,
        users: 8,
        demo_admin_role: None,
        demo_approver_role: None,
        approval_threshold: 0,
    },
];

/// What the seed left in the database: the demo customers' ids by name, and a few
/// users worth resetting in the walkthrough.
#[derive(Clone, Debug, Default)]
pub struct Seeded {
    customers: HashMap<&'static str, Uuid>,
    /// Walkthrough users as (shell variable, user id): a Northwind user with MFA
    /// (`RESET_ME`), demo-admin's own user (`SELF_USER`), a Contoso admin with MFA
    /// (`CONTOSO_ADMIN`, protected from an AUTHENTICATION_ADMIN), a Contoso user
    /// without MFA (`NO_MFA`), and three Contoso users with MFA (`TEAM_1`..`TEAM_3`), whose
    /// reset meets Contoso's approval threshold.
    pub samples: Vec<(&'static str, Uuid)>,
}

impl Seeded {
    /// The id of a demo customer.
    pub fn customer_id(&self, name: &str) -> Option<Uuid> {
        self.customers.get(name).copied()
    }
}

/// Picks the walkthrough users (see [`Seeded::samples`]) from what is stored.
async fn pick_samples(
    db: &impl sea_orm::ConnectionTrait,
    seeded: &Seeded,
) -> anyhow::Result<Vec<(&'static str, Uuid)>> {
    let mut samples = Vec::new();
    for (name, picks) in [
        (
            NORTHWIND,
            &[
                ("RESET_ME", false, true, false),
                ("SELF_USER", true, true, true),
            ][..],
        ),
        (
            CONTOSO,
            &[
                ("CONTOSO_ADMIN", true, true, false),
                ("NO_MFA", false, false, false),
                ("TEAM_1", false, true, false),
                ("TEAM_2", false, true, false),
                ("TEAM_3", false, true, false),
            ][..],
        ),
    ] {
        let Some(customer) = seeded.customer_id(name) else {
            continue;
        };
        let users = users::Entity::find()
            .filter(users::Column::CustomerId.eq(customer))
            .order_by_asc(users::Column::Id)
            .all(db)
            .await?;
        let ids: Vec<UserId> = users.iter().map(|u| u.id.into()).collect();
        let counts = store::users::active_method_counts(db, &[customer.into()], &ids).await?;
        for &(var, admin, has_mfa, is_self) in picks {
            let found = users.iter().find(|u| {
                !samples.iter().any(|(_, id)| *id == u.id)
                    && u.is_admin == admin
                    && counts.contains_key(&u.id.into()) == has_mfa
                    && (u.external_subject.as_deref() == Some(DEMO_ADMIN)) == is_self
            });
            if let Some(user) = found {
                samples.push((var, user.id));
            }
        }
    }
    Ok(samples)
}

/// Seeds the demo data; safe to run any number of times.
pub async fn seed(db: &DatabaseConnection) -> anyhow::Result<Seeded> {
    let txn = store::begin_write(db).await?;
    let now = crate::domain::now();
    let mut seeded = Seeded::default();
    for spec in &CUSTOMERS {
        let customer = match store::customers::find_by_name(&txn, spec.name).await? {
            // A data directory seeded before thresholds existed gets its threshold, so that
            // the walkthrough's approval works there too.
            Some(existing) if existing.approval_threshold == 0 && spec.approval_threshold > 0 => {
                let setting = store::customers::Setting::ApprovalThreshold(spec.approval_threshold);
                store::customers::set(&txn, existing.id.into(), setting, now).await?;
                existing
            }
            Some(existing) => existing,
            None => {
                store::customers::insert(
                    &txn,
                    customers::Model {
                        id: Uuid::now_v7(),
                        name: spec.name.to_string(),
                        mfa_policy: spec.policy.as_str().to_string(),
                        enabled_method_kinds: MethodKind::format_list(spec.kinds),
                        created_at: now,
                        updated_at: now,
                        approval_threshold: i32::try_from(spec.approval_threshold)?,
                    },
                )
                .await?
            }
        };
        seeded.customers.insert(spec.name, customer.id);
        for (subject, role) in [
            (DEMO_ADMIN, spec.demo_admin_role),
            (DEMO_APPROVER, spec.demo_approver_role),
        ] {
            if let Some(role) = role {
                store::roles::grant(&txn, subject, Some(customer.id.into()), role).await?;
            }
        }
        seed_users(&txn, spec, customer.id, now).await?;
    }
    seeded.samples = pick_samples(&txn, &seeded).await?;
    store::commit(txn).await?;
    Ok(seeded)
}

async fn seed_users(
    txn: &impl sea_orm::ConnectionTrait,
    spec: &DemoCustomer,
    customer_id: Uuid,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<()> {
    let domain = spec
        .name
        .split(' ')
        .next()
        .unwrap_or("example")
        .to_lowercase();
    let existing: Vec<String> = users::Entity::find()
        .filter(users::Column::CustomerId.eq(customer_id))
        .all(txn)
        .await?
        .into_iter()
        .map(|u| u.email)
        .collect();
    for i in 0..spec.users {
        let first = cyclic(&FIRST_NAMES, i).unwrap_or("Alex");
        let last = cyclic(&LAST_NAMES, i * 3 + spec.users).unwrap_or("Doe");
        // The first Northwind user is demo-admin themself: an admin the demo cannot reset (SELF).
        let is_self = spec.name == NORTHWIND && i == 0;
        let (display_name, email, external_subject) = if is_self {
            (
                "Demo Admin".to_string(),
                format!("demo.admin@{domain}.example"),
                Some(DEMO_ADMIN.to_string()),
            )
        } else {
            let email = format!(
                "{}.{}@{domain}.example",
                first.to_lowercase(),
                last.to_lowercase()
            );
            (
                format!("{first} {last}"),
                email,
                Some(format!("{domain}|{:04}", i)),
            )
        };
        if existing.contains(&email) {
            continue;
        }
        let user = store::users::insert(
            txn,
            users::Model {
                id: Uuid::now_v7(),
                customer_id,
                external_subject,
                display_name_folded: store::search::fold(&display_name),
                search_key: store::search::key(&display_name, &email),
                display_name,
                email: email.clone(),
                is_admin: is_self || i % 6 == 1,
                mfa_registration_required: false,
                mfa_reset_at: None,
                created_at: now,
                updated_at: now,
            },
        )
        .await?;
        // Every fifth user has no MFA; the others get one to three methods, of every
        // kind the customer enables, some org-level where MFA is enforced.
        if i % 5 == 4 {
            continue;
        }
        let count = 1 + i % 3;
        for m in 0..count {
            let Some(kind) = cyclic(spec.kinds, i + m * 2) else {
                break;
            };
            let scope = if spec.policy == MfaPolicy::Enforced && m == 0 {
                MethodScope::Org
            } else {
                MethodScope::User
            };
            store::methods::insert(
                txn,
                authentication_methods::Model {
                    id: Uuid::now_v7(),
                    customer_id,
                    user_id: user.id,
                    kind: kind.as_str().to_string(),
                    scope: scope.as_str().to_string(),
                    label: demo_label(kind, i, &email),
                    state: MethodState::Active.as_str().to_string(),
                    secret_ref: matches!(
                        kind,
                        MethodKind::SoftwareOath | MethodKind::AuthenticatorApp
                    )
                    .then(|| format!("vault://mfa/{}/{m}", user.id)),
                    created_at: now,
                    updated_at: now,
                    last_used_at: None,
                },
            )
            .await?;
        }
    }
    Ok(())
}

/// The `i`-th of `items`, counting round and round (`None` only for no items).
fn cyclic<T: Copy>(items: &[T], i: usize) -> Option<T> {
    items.get(i.checked_rem(items.len())?).copied()
}

fn demo_label(kind: MethodKind, i: usize, email: &str) -> String {
    match kind {
        MethodKind::Phone => format!("+1 555 {:03} {:04}", 100 + i, 4000 + i * 37),
        MethodKind::AuthenticatorApp => cyclic(&["Pixel 8", "iPhone 15", "Galaxy S24"], i)
            .unwrap_or_default()
            .to_string(),
        MethodKind::SoftwareOath => "Authenticator".to_string(),
        MethodKind::HardwareOath => format!("serial {:08}", 88_410_000 + i * 7),
        MethodKind::Email => email.to_string(),
        MethodKind::Fido2 => cyclic(&["YubiKey 5", "Passkey (MacBook)", "Titan Key"], i)
            .unwrap_or_default()
            .to_string(),
        MethodKind::RecoveryCodes => format!("{} codes left", 10 - i % 4),
    }
}
