//! Domain values to proto messages and back. Labels are masked here, on the way out, so
//! that no response can carry contact data.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use prost_types::{FieldMask, Timestamp};

use crate::{
    domain::{
        audit::{AuditDetails, AuditEvent},
        customers::VisibleCustomer,
        masking::mask_label,
        model::{self, Method, MethodKind, Removal, User},
        reset::{self, ResetState},
        selection::Offer,
    },
    proto::v1 as pb,
};

/// A timestamp for the wire.
pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// A wire timestamp, if it is a valid instant.
pub fn from_timestamp(ts: &Timestamp) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(ts.seconds, u32::try_from(ts.nanos).ok()?)
        .single()
}

/// A count for the wire (counts never exceed `i32` in practice; saturate if they did).
pub fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Proto enum conversions for the domain's named enums.
pub mod enums {
    use super::{model, pb, reset};

    /// Maps a domain enum to its proto twin, and back.
    macro_rules! mirror {
        ($domain:path => $proto:path { $($variant:ident),+ $(,)? }) => {
            impl From<$domain> for $proto {
                fn from(value: $domain) -> Self {
                    use $domain as D;
                    use $proto as P;
                    match value { $(D::$variant => P::$variant),+ }
                }
            }

            impl TryFrom<$proto> for $domain {
                type Error = ();
                fn try_from(value: $proto) -> Result<Self, ()> {
                    use $domain as D;
                    use $proto as P;
                    match value {
                        $(P::$variant => Ok(D::$variant),)+
                        #[allow(unreachable_patterns)]
                        _ => Err(()),
                    }
                }
            }
        };
    }

    mirror!(model::MfaPolicy => pb::MfaPolicy { Enforced, Optional });
    mirror!(model::Role => pb::Role {
        Reader, AuthenticationAdmin, PrivilegedAuthenticationAdmin, Provisioner
    });
    mirror!(model::Action => pb::Action {
        Read, ResetMfa, ResetAdminMfa, DeleteMethod, SetMfaPolicy, Provision,
        SetApprovalThreshold
    });
    mirror!(model::MethodKind => pb::MethodKind {
        Phone, AuthenticatorApp, SoftwareOath, HardwareOath, Email, Fido2, RecoveryCodes
    });
    mirror!(model::MethodScope => pb::MethodScope { User, Org });
    mirror!(model::MethodState => pb::MethodState { Active, Deactivated });
    mirror!(model::MfaState => pb::MfaState { Registered, NotRegistered, RegistrationRequired });
    mirror!(model::ResetScope => pb::ResetScope { All, OrgLevel });
    mirror!(model::AuditAction => pb::AuditAction {
        CustomerCreated, MfaPolicySet, UserCreated, UserUpdated, MethodRegistered,
        MethodDeleted, MfaReset, RoleGranted, RoleRevoked, UserDeleted,
        ResetApprovalRequested, ResetApproved, ResetRejected, ResetCancelled,
        ApprovalThresholdSet
    });
    mirror!(reset::ResetState => pb::MfaResetState {
        Pending, AwaitingApproval, Confirmed, Cancelled, Rejected, Expired
    });
    mirror!(reset::Disposition => pb::MethodDisposition { Delete, Deactivate, Keep });

    impl From<reset::SkipReason> for pb::SkipReason {
        fn from(value: reset::SkipReason) -> Self {
            match value {
                reset::SkipReason::NotEnrolled => pb::SkipReason::NotEnrolled,
                reset::SkipReason::ProtectedAdmin => pb::SkipReason::ProtectedAdmin,
                reset::SkipReason::SelfUser => pb::SkipReason::Self_,
            }
        }
    }

    impl TryFrom<pb::SkipReason> for reset::SkipReason {
        type Error = ();
        fn try_from(value: pb::SkipReason) -> Result<Self, ()> {
            match value {
                pb::SkipReason::NotEnrolled => Ok(reset::SkipReason::NotEnrolled),
                pb::SkipReason::ProtectedAdmin => Ok(reset::SkipReason::ProtectedAdmin),
                pb::SkipReason::Self_ => Ok(reset::SkipReason::SelfUser),
                pb::SkipReason::Unspecified => Err(()),
            }
        }
    }

    impl From<model::Removal> for pb::MethodDisposition {
        fn from(value: model::Removal) -> Self {
            match value {
                model::Removal::Delete => pb::MethodDisposition::Delete,
                model::Removal::Deactivate => pb::MethodDisposition::Deactivate,
            }
        }
    }
}

/// The wire value of a domain enum.
pub fn wire<D, P: From<D> + Into<i32>>(value: D) -> i32 {
    P::from(value).into()
}

/// A customer as the caller sees it.
pub fn customer(visible: &VisibleCustomer) -> pb::Customer {
    let c = &visible.customer;
    pb::Customer {
        id: c.id.to_string(),
        display_name: c.display_name.clone(),
        mfa_policy: wire::<_, pb::MfaPolicy>(c.mfa_policy),
        enabled_method_kinds: c
            .enabled_method_kinds
            .iter()
            .map(|k| wire::<_, pb::MethodKind>(*k))
            .collect(),
        caller_roles: visible
            .caller_roles
            .iter()
            .map(|r| wire::<_, pb::Role>(*r))
            .collect(),
        create_time: Some(timestamp(c.created_at)),
        update_time: Some(timestamp(c.updated_at)),
        approval_threshold: count(c.approval_threshold),
        user_counts: visible.user_counts.map(|n| pb::CustomerUserCounts {
            user_count: saturating(n.users),
            mfa_registered_user_count: saturating(n.mfa_registered),
            mfa_registration_required_user_count: saturating(n.registration_required),
        }),
    }
}

/// A database count as an `int32` of the contract.
fn saturating(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A user.
pub fn user(u: &User) -> pb::User {
    pb::User {
        id: u.id.to_string(),
        customer_id: u.customer_id.to_string(),
        mfa_state: wire::<_, pb::MfaState>(u.mfa_state()),
        display_name: u.display_name.clone(),
        email: u.email.clone(),
        external_subject: u.external_subject.clone().unwrap_or_default(),
        admin: u.admin,
        mfa_registration_required: u.mfa_registration_required,
        mfa_reset_time: u.mfa_reset_at.map(timestamp),
        active_method_count: count(u.active_method_count),
        create_time: Some(timestamp(u.created_at)),
        update_time: Some(timestamp(u.updated_at)),
    }
}

/// A method, its label masked.
pub fn method(m: &Method) -> pb::AuthenticationMethod {
    pb::AuthenticationMethod {
        id: m.id.to_string(),
        customer_id: m.customer_id.to_string(),
        user_id: m.user_id.to_string(),
        kind: wire::<_, pb::MethodKind>(m.kind),
        scope: wire::<_, pb::MethodScope>(m.scope),
        label: mask_label(m.kind, &m.label),
        state: wire::<_, pb::MethodState>(m.state),
        has_secret_ref: m.has_secret_ref,
        create_time: Some(timestamp(m.created_at)),
        update_time: Some(timestamp(m.updated_at)),
    }
}

/// Method counts by kind, for the wire, in declaration order; kinds with no methods are
/// left out.
pub fn kind_counts(counts: &BTreeMap<MethodKind, u32>) -> Vec<pb::MethodKindCount> {
    counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(kind, n)| pb::MethodKindCount {
            kind: wire::<_, pb::MethodKind>(*kind),
            method_count: count(*n),
        })
        .collect()
}

/// An audit event, with its typed details.
pub fn audit_event(e: &AuditEvent) -> pb::AuditEvent {
    let user = e.user.as_ref();
    pb::AuditEvent {
        id: e.id.to_string(),
        customer_id: e.customer_id.map(|id| id.to_string()).unwrap_or_default(),
        all_customers: e.customer_id.is_none(),
        occur_time: Some(timestamp(e.occurred_at)),
        actor: e.actor.clone(),
        action: wire::<_, pb::AuditAction>(e.action()),
        user_id: user.map(|u| u.id.to_string()).unwrap_or_default(),
        external_subject: user
            .and_then(|u| u.external_subject.clone())
            .unwrap_or_default(),
        mfa_registration_required: user.and_then(|u| u.mfa_registration_required),
        mfa_reset_time: user.and_then(|u| u.mfa_reset_at).map(timestamp),
        method_id: e.method_id.map(|id| id.to_string()).unwrap_or_default(),
        reset_id: e.reset_id.map(|id| id.to_string()).unwrap_or_default(),
        reason: e.reason.clone().unwrap_or_default(),
        correlation_id: e.correlation_id.clone().unwrap_or_default(),
        details: Some(audit_details(&e.details)),
    }
}

fn audit_details(details: &AuditDetails) -> pb::audit_event::Details {
    use pb::audit_event::Details as D;
    let kinds = |kinds: &[MethodKind]| {
        kinds
            .iter()
            .map(|k| wire::<_, pb::MethodKind>(*k))
            .collect()
    };
    match details {
        AuditDetails::CustomerCreated {
            display_name,
            mfa_policy,
            enabled_method_kinds,
        } => D::CustomerCreated(pb::CustomerCreatedDetails {
            display_name: display_name.clone(),
            mfa_policy: wire::<_, pb::MfaPolicy>(*mfa_policy),
            enabled_method_kinds: kinds(enabled_method_kinds),
        }),
        AuditDetails::MfaPolicySet { previous, policy } => {
            D::MfaPolicySet(pb::MfaPolicySetDetails {
                previous_mfa_policy: wire::<_, pb::MfaPolicy>(*previous),
                mfa_policy: wire::<_, pb::MfaPolicy>(*policy),
            })
        }
        AuditDetails::ApprovalThresholdSet {
            previous,
            threshold,
        } => D::ApprovalThresholdSet(pb::ApprovalThresholdSetDetails {
            previous_approval_threshold: count(*previous),
            approval_threshold: count(*threshold),
        }),
        AuditDetails::UserCreated { admin } => {
            D::UserCreated(pb::UserCreatedDetails { admin: *admin })
        }
        AuditDetails::UserUpdated {
            changed_fields,
            admin,
        } => D::UserUpdated(pb::UserUpdatedDetails {
            changed_fields: Some(FieldMask {
                paths: changed_fields.clone(),
            }),
            admin: *admin,
        }),
        AuditDetails::UserDeleted {
            admin,
            methods_deleted,
        } => D::UserDeleted(pb::UserDeletedDetails {
            admin: *admin,
            methods_deleted_count: count(*methods_deleted),
        }),
        AuditDetails::MethodRegistered { kind, scope } => {
            D::MethodRegistered(pb::MethodRegisteredDetails {
                kind: wire::<_, pb::MethodKind>(*kind),
                scope: wire::<_, pb::MethodScope>(*scope),
            })
        }
        AuditDetails::MethodDeleted { kind, removal } => {
            D::MethodDeleted(pb::MethodDeletedDetails {
                kind: wire::<_, pb::MethodKind>(*kind),
                disposition: wire::<Removal, pb::MethodDisposition>(*removal),
            })
        }
        AuditDetails::MfaReset {
            scope,
            deleted,
            deactivated,
            requested_by,
            approved_by,
        } => D::MfaReset(pb::MfaResetDetails {
            scope: wire::<_, pb::ResetScope>(*scope),
            methods_deleted_count: count(deleted.values().sum()),
            methods_deleted_by_kind: kind_counts(deleted),
            methods_deactivated_count: count(deactivated.values().sum()),
            methods_deactivated_by_kind: kind_counts(deactivated),
            requested_by: requested_by.clone(),
            approved_by: approved_by.clone().unwrap_or_default(),
        }),
        AuditDetails::ResetApprovalRequested {
            users_to_reset,
            approval_required,
        } => D::ResetApprovalRequested(pb::ResetApprovalRequestedDetails {
            users_to_reset_count: count(*users_to_reset),
            approval_required: *approval_required,
        }),
        AuditDetails::ResetApproved {
            requested_by,
            users_reset,
        } => D::ResetApproved(pb::ResetApprovedDetails {
            requested_by: requested_by.clone(),
            users_reset_count: count(*users_reset),
        }),
        AuditDetails::ResetRejected { requested_by } => {
            D::ResetRejected(pb::ResetRejectedDetails {
                requested_by: requested_by.clone(),
            })
        }
        AuditDetails::ResetCancelled { previous_state } => {
            D::ResetCancelled(pb::ResetCancelledDetails {
                previous_state: wire::<ResetState, pb::MfaResetState>(*previous_state),
            })
        }
        AuditDetails::RoleGranted { subject, role } => D::RoleGranted(pb::RoleGrantedDetails {
            subject: subject.clone(),
            role: wire::<_, pb::Role>(*role),
        }),
        AuditDetails::RoleRevoked { subject, role } => D::RoleRevoked(pb::RoleRevokedDetails {
            subject: subject.clone(),
            role: wire::<_, pb::Role>(*role),
        }),
    }
}

/// A selection gap's subject.
pub fn gap_item(offer: Offer) -> pb::selection_gap::Item {
    use pb::selection_gap::Item;
    match offer {
        Offer::Action(a) => Item::Action(wire::<_, pb::Action>(a)),
        Offer::ResetScope(s) => Item::ResetScope(wire::<_, pb::ResetScope>(s)),
        Offer::MethodKind(k) => Item::MethodKind(wire::<_, pb::MethodKind>(k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::{Action, ResetScope};

    /// The domain spells contract enum values by prefixing its own names (in
    /// PreconditionFailure types such as `METHOD_KIND_PHONE`): the two must agree.
    #[test]
    fn domain_names_are_the_suffixes_of_the_contracts_enum_values() {
        for &kind in MethodKind::ALL {
            let name = format!("METHOD_KIND_{}", kind.as_str());
            assert_eq!(pb::MethodKind::from(kind).as_str_name(), name);
        }
        for &scope in ResetScope::ALL {
            let name = format!("RESET_SCOPE_{}", scope.as_str());
            assert_eq!(pb::ResetScope::from(scope).as_str_name(), name);
        }
        for &action in Action::ALL {
            let name = format!("ACTION_{}", action.as_str());
            assert_eq!(pb::Action::from(action).as_str_name(), name);
        }
        for &state in ResetState::ALL {
            let name = format!("MFA_RESET_STATE_{}", state.as_str());
            assert_eq!(pb::MfaResetState::from(state).as_str_name(), name);
        }
    }
}
