//! How [`AuditDetails`] are kept in `audit_events.details`: a JSON object whose shape the
//! row's action decides. The keys are those the first release wrote (`is_admin`,
//! `previous_policy`, `methods_deleted` as an object from kind to count, ...), with the newer
//! keys optional, so rows written before the contract was typed read back as typed details.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::AuditDetails;
use crate::domain::{
    DomainError, DomainResult,
    model::{AuditAction, MethodKind, MethodScope, MfaPolicy, Removal, ResetScope, Role},
    reset::ResetState,
};

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct CustomerCreated {
    display_name: String,
    mfa_policy: String,
    /// Comma-separated, as in `customers.enabled_method_kinds`.
    enabled_method_kinds: String,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct MfaPolicySet {
    previous_policy: String,
    mfa_policy: String,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct ApprovalThresholdSet {
    previous_approval_threshold: u32,
    approval_threshold: u32,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct UserCreated {
    is_admin: bool,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct UserUpdated {
    changed_fields: Vec<String>,
    is_admin: bool,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct UserDeleted {
    is_admin: bool,
    methods_deleted: u32,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct MethodRegistered {
    kind: String,
    scope: String,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct MethodDeleted {
    kind: String,
    /// `DELETE` or `DEACTIVATE`.
    disposition: String,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct MfaReset {
    scope: String,
    methods_deleted: BTreeMap<String, u32>,
    methods_deactivated: BTreeMap<String, u32>,
    /// Absent in the first release: the actor was the requester.
    requested_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approved_by: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct ResetApprovalRequested {
    users_to_reset: u32,
    approval_required: bool,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct ResetApproved {
    requested_by: String,
    users_reset: u32,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct ResetRejected {
    requested_by: String,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct ResetCancelled {
    previous_state: String,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct RoleChanged {
    subject: String,
    role: String,
}

const DELETE: &str = "DELETE";
const DEACTIVATE: &str = "DEACTIVATE";

fn counts_out(counts: &BTreeMap<MethodKind, u32>) -> BTreeMap<String, u32> {
    counts
        .iter()
        .map(|(k, n)| (k.as_str().to_string(), *n))
        .collect()
}

fn json(value: impl Serialize) -> String {
    // Serializing these plain structs cannot fail.
    serde_json::to_string(&value).unwrap_or_else(|_| "{}".to_string())
}

/// The details as stored JSON.
pub fn to_json(details: &AuditDetails) -> String {
    match details {
        AuditDetails::CustomerCreated {
            display_name,
            mfa_policy,
            enabled_method_kinds,
        } => json(CustomerCreated {
            display_name: display_name.clone(),
            mfa_policy: mfa_policy.as_str().into(),
            enabled_method_kinds: MethodKind::format_list(enabled_method_kinds),
        }),
        AuditDetails::MfaPolicySet { previous, policy } => json(MfaPolicySet {
            previous_policy: previous.as_str().into(),
            mfa_policy: policy.as_str().into(),
        }),
        AuditDetails::ApprovalThresholdSet {
            previous,
            threshold,
        } => json(ApprovalThresholdSet {
            previous_approval_threshold: *previous,
            approval_threshold: *threshold,
        }),
        AuditDetails::UserCreated { admin } => json(UserCreated { is_admin: *admin }),
        AuditDetails::UserUpdated {
            changed_fields,
            admin,
        } => json(UserUpdated {
            changed_fields: changed_fields.clone(),
            is_admin: *admin,
        }),
        AuditDetails::UserDeleted {
            admin,
            methods_deleted,
        } => json(UserDeleted {
            is_admin: *admin,
            methods_deleted: *methods_deleted,
        }),
        AuditDetails::MethodRegistered { kind, scope } => json(MethodRegistered {
            kind: kind.as_str().into(),
            scope: scope.as_str().into(),
        }),
        AuditDetails::MethodDeleted { kind, removal } => json(MethodDeleted {
            kind: kind.as_str().into(),
            disposition: match removal {
                Removal::Delete => DELETE,
                Removal::Deactivate => DEACTIVATE,
            }
            .into(),
        }),
        AuditDetails::MfaReset {
            scope,
            deleted,
            deactivated,
            requested_by,
            approved_by,
        } => json(MfaReset {
            scope: scope.as_str().into(),
            methods_deleted: counts_out(deleted),
            methods_deactivated: counts_out(deactivated),
            requested_by: Some(requested_by.clone()),
            approved_by: approved_by.clone(),
        }),
        AuditDetails::ResetApprovalRequested {
            users_to_reset,
            approval_required,
        } => json(ResetApprovalRequested {
            users_to_reset: *users_to_reset,
            approval_required: *approval_required,
        }),
        AuditDetails::ResetApproved {
            requested_by,
            users_reset,
        } => json(ResetApproved {
            requested_by: requested_by.clone(),
            users_reset: *users_reset,
        }),
        AuditDetails::ResetRejected { requested_by } => json(ResetRejected {
            requested_by: requested_by.clone(),
        }),
        AuditDetails::ResetCancelled { previous_state } => json(ResetCancelled {
            previous_state: previous_state.as_str().into(),
        }),
        AuditDetails::RoleGranted { subject, role }
        | AuditDetails::RoleRevoked { subject, role } => json(RoleChanged {
            subject: subject.clone(),
            role: role.as_str().into(),
        }),
    }
}

fn broken(action: AuditAction, what: &str) -> DomainError {
    DomainError::Internal(anyhow::anyhow!(
        "audit event {action} has unreadable details ({what})"
    ))
}

fn read<T: DeserializeOwned>(action: AuditAction, text: &str) -> DomainResult<T> {
    serde_json::from_str(text).map_err(|_| broken(action, "not the expected JSON object"))
}

fn parse<T>(action: AuditAction, value: &str, f: fn(&str) -> Option<T>) -> DomainResult<T> {
    f(value).ok_or_else(|| broken(action, value))
}

fn counts_in(
    action: AuditAction,
    counts: BTreeMap<String, u32>,
) -> DomainResult<BTreeMap<MethodKind, u32>> {
    counts
        .into_iter()
        .map(|(k, n)| Ok((parse(action, &k, MethodKind::parse)?, n)))
        .collect()
}

/// Reads the details of a row of `action`. `actor` stands in for what the first release
/// did not record (the requester of a reset was its actor).
pub fn from_json(action: AuditAction, text: &str, actor: &str) -> DomainResult<AuditDetails> {
    use AuditAction as A;
    Ok(match action {
        A::CustomerCreated => {
            let d: CustomerCreated = read(action, text)?;
            AuditDetails::CustomerCreated {
                display_name: d.display_name,
                mfa_policy: parse(action, &d.mfa_policy, MfaPolicy::parse)?,
                enabled_method_kinds: MethodKind::parse_list(&d.enabled_method_kinds),
            }
        }
        A::MfaPolicySet => {
            let d: MfaPolicySet = read(action, text)?;
            AuditDetails::MfaPolicySet {
                previous: parse(action, &d.previous_policy, MfaPolicy::parse)?,
                policy: parse(action, &d.mfa_policy, MfaPolicy::parse)?,
            }
        }
        A::ApprovalThresholdSet => {
            let d: ApprovalThresholdSet = read(action, text)?;
            AuditDetails::ApprovalThresholdSet {
                previous: d.previous_approval_threshold,
                threshold: d.approval_threshold,
            }
        }
        A::UserCreated => {
            let d: UserCreated = read(action, text)?;
            AuditDetails::UserCreated { admin: d.is_admin }
        }
        A::UserUpdated => {
            let d: UserUpdated = read(action, text)?;
            AuditDetails::UserUpdated {
                // The first release named the admin flag by its column.
                changed_fields: d
                    .changed_fields
                    .into_iter()
                    .map(|f| if f == "is_admin" { "admin".into() } else { f })
                    .collect(),
                admin: d.is_admin,
            }
        }
        A::UserDeleted => {
            let d: UserDeleted = read(action, text)?;
            AuditDetails::UserDeleted {
                admin: d.is_admin,
                methods_deleted: d.methods_deleted,
            }
        }
        A::MethodRegistered => {
            let d: MethodRegistered = read(action, text)?;
            AuditDetails::MethodRegistered {
                kind: parse(action, &d.kind, MethodKind::parse)?,
                scope: parse(action, &d.scope, MethodScope::parse)?,
            }
        }
        A::MethodDeleted => {
            let d: MethodDeleted = read(action, text)?;
            AuditDetails::MethodDeleted {
                kind: parse(action, &d.kind, MethodKind::parse)?,
                removal: match d.disposition.as_str() {
                    DELETE => Removal::Delete,
                    DEACTIVATE => Removal::Deactivate,
                    other => return Err(broken(action, other)),
                },
            }
        }
        A::MfaReset => {
            let d: MfaReset = read(action, text)?;
            AuditDetails::MfaReset {
                scope: parse(action, &d.scope, ResetScope::parse)?,
                deleted: counts_in(action, d.methods_deleted)?,
                deactivated: counts_in(action, d.methods_deactivated)?,
                requested_by: d.requested_by.unwrap_or_else(|| actor.to_string()),
                approved_by: d.approved_by,
            }
        }
        A::ResetApprovalRequested => {
            let d: ResetApprovalRequested = read(action, text)?;
            AuditDetails::ResetApprovalRequested {
                users_to_reset: d.users_to_reset,
                approval_required: d.approval_required,
            }
        }
        A::ResetApproved => {
            let d: ResetApproved = read(action, text)?;
            AuditDetails::ResetApproved {
                requested_by: d.requested_by,
                users_reset: d.users_reset,
            }
        }
        A::ResetRejected => {
            let d: ResetRejected = read(action, text)?;
            AuditDetails::ResetRejected {
                requested_by: d.requested_by,
            }
        }
        A::ResetCancelled => {
            let d: ResetCancelled = read(action, text)?;
            AuditDetails::ResetCancelled {
                previous_state: parse(action, &d.previous_state, ResetState::parse)?,
            }
        }
        A::RoleGranted | A::RoleRevoked => {
            let d: RoleChanged = read(action, text)?;
            let role = parse(action, &d.role, Role::parse)?;
            let subject = d.subject;
            if action == A::RoleGranted {
                AuditDetails::RoleGranted { subject, role }
            } else {
                AuditDetails::RoleRevoked { subject, role }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(details: AuditDetails) {
        let text = to_json(&details);
        let back = from_json(details.action(), &text, "someone").expect("reads back");
        assert_eq!(back, details, "{text}");
    }

    #[test]
    fn every_kind_of_details_reads_back_as_written() {
        let kinds = BTreeMap::from([(MethodKind::Phone, 2), (MethodKind::Fido2, 1)]);
        for details in [
            AuditDetails::CustomerCreated {
                display_name: "Contoso".into(),
                mfa_policy: MfaPolicy::Enforced,
                enabled_method_kinds: vec![MethodKind::Phone, MethodKind::Email],
            },
            AuditDetails::MfaPolicySet {
                previous: MfaPolicy::Optional,
                policy: MfaPolicy::Enforced,
            },
            AuditDetails::ApprovalThresholdSet {
                previous: 0,
                threshold: 25,
            },
            AuditDetails::UserCreated { admin: true },
            AuditDetails::UserUpdated {
                changed_fields: vec!["email".into(), "admin".into()],
                admin: false,
            },
            AuditDetails::UserDeleted {
                admin: false,
                methods_deleted: 3,
            },
            AuditDetails::MethodRegistered {
                kind: MethodKind::HardwareOath,
                scope: MethodScope::Org,
            },
            AuditDetails::MethodDeleted {
                kind: MethodKind::HardwareOath,
                removal: Removal::Deactivate,
            },
            AuditDetails::MfaReset {
                scope: ResetScope::OrgLevel,
                deleted: kinds.clone(),
                deactivated: BTreeMap::new(),
                requested_by: "alice".into(),
                approved_by: Some("bob".into()),
            },
            AuditDetails::ResetApprovalRequested {
                users_to_reset: 40,
                approval_required: true,
            },
            AuditDetails::ResetApproved {
                requested_by: "alice".into(),
                users_reset: 40,
            },
            AuditDetails::ResetRejected {
                requested_by: "alice".into(),
            },
            AuditDetails::ResetCancelled {
                previous_state: ResetState::AwaitingApproval,
            },
            AuditDetails::RoleGranted {
                subject: "sync".into(),
                role: Role::Provisioner,
            },
            AuditDetails::RoleRevoked {
                subject: "sync".into(),
                role: Role::Reader,
            },
        ] {
            round_trip(details);
        }
    }

    #[test]
    fn rows_of_the_first_release_read_as_typed_details() {
        let reset = from_json(
            AuditAction::MfaReset,
            r#"{"methods_deactivated":{"HARDWARE_OATH":1},"methods_deleted":{"PHONE":2},"mfa_registration_required":true,"scope":"ALL"}"#,
            "admin-1",
        )
        .unwrap();
        assert_eq!(
            reset,
            AuditDetails::MfaReset {
                scope: ResetScope::All,
                deleted: BTreeMap::from([(MethodKind::Phone, 2)]),
                deactivated: BTreeMap::from([(MethodKind::HardwareOath, 1)]),
                requested_by: "admin-1".into(),
                approved_by: None,
            }
        );
        let updated = from_json(
            AuditAction::UserUpdated,
            r#"{"changed_fields":["display_name","is_admin"],"is_admin":true}"#,
            "p",
        )
        .unwrap();
        assert_eq!(
            updated,
            AuditDetails::UserUpdated {
                changed_fields: vec!["display_name".into(), "admin".into()],
                admin: true
            }
        );
        let created = from_json(
            AuditAction::CustomerCreated,
            r#"{"enabled_method_kinds":"EMAIL,PHONE","mfa_policy":"OPTIONAL"}"#,
            "p",
        )
        .unwrap();
        assert!(matches!(
            created,
            AuditDetails::CustomerCreated { mfa_policy: MfaPolicy::Optional, ref enabled_method_kinds, .. }
                if enabled_method_kinds == &[MethodKind::Email, MethodKind::Phone]
        ));
    }

    #[test]
    fn unreadable_details_are_an_internal_error_not_a_panic() {
        assert!(from_json(AuditAction::MethodDeleted, r#"{"kind":"LASER"}"#, "p").is_err());
        assert!(from_json(AuditAction::MfaPolicySet, "not json", "p").is_err());
    }
}
