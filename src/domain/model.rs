//! The design's words as types: policies, roles, method kinds and the records the rules work
//! on, and what each word allows. The values kept in columns are defined, with their column
//! spellings, in [`crate::store::values`]; the rules here give them their behaviour.

use chrono::{DateTime, Utc};

pub(crate) use crate::store::values::named_enum;
pub use crate::store::values::{
    AuditAction, MethodKind, MethodScope, MethodState, MfaPolicy, ResetScope, Role,
};

use super::ids::{CustomerId, MethodId, UserId};

named_enum!(
    /// Something a principal may do in a customer; roles grant sets of actions.
    Action {
        /// List and read.
        Read => "READ",
        /// Reset MFA of users who are not admins.
        ResetMfa => "RESET_MFA",
        /// Reset MFA of admins, and delete an admin's method.
        ResetAdminMfa => "RESET_ADMIN_MFA",
        /// Delete one method.
        DeleteMethod => "DELETE_METHOD",
        /// Change the MFA policy.
        SetMfaPolicy => "SET_MFA_POLICY",
        /// Create, update and delete users, register methods.
        Provision => "PROVISION",
        /// Change the approval threshold.
        SetApprovalThreshold => "SET_APPROVAL_THRESHOLD",
    }
);

impl Role {
    /// Whether this role grants `action`. The table of DESIGN.md "Roles".
    pub fn allows(self, action: Action) -> bool {
        use Action::*;
        match self {
            Role::Reader => matches!(action, Read),
            Role::AuthenticationAdmin => matches!(action, Read | ResetMfa | DeleteMethod),
            Role::PrivilegedAuthenticationAdmin => {
                matches!(
                    action,
                    Read | ResetMfa
                        | ResetAdminMfa
                        | DeleteMethod
                        | SetMfaPolicy
                        | SetApprovalThreshold
                )
            }
            Role::Provisioner => matches!(action, Read | Provision),
        }
    }
}

impl MethodKind {
    /// What removing this kind of method means: hardware tokens belong to the
    /// customer and are deactivated for reassignment; everything else is deleted.
    pub fn removal(self) -> Removal {
        match self {
            MethodKind::HardwareOath => Removal::Deactivate,
            _ => Removal::Delete,
        }
    }
}

/// What removing a method does to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// The row is deleted.
    Delete,
    /// The row is kept, state DEACTIVATED.
    Deactivate,
}

named_enum!(
    /// A user's MFA state, derived from their methods and flag.
    MfaState {
        /// At least one active method, nothing pending.
        Registered => "REGISTERED",
        /// No active method, nothing required.
        NotRegistered => "NOT_REGISTERED",
        /// Must register at next sign-in.
        RegistrationRequired => "REGISTRATION_REQUIRED",
    }
);

impl MfaState {
    /// The state of a user with this flag and this many active methods.
    pub fn of(registration_required: bool, active_methods: u32) -> MfaState {
        if registration_required {
            MfaState::RegistrationRequired
        } else if active_methods > 0 {
            MfaState::Registered
        } else {
            MfaState::NotRegistered
        }
    }
}

/// A customer and its settings.
#[derive(Clone, Debug)]
pub struct Customer {
    /// Id.
    pub id: CustomerId,
    /// Display name, unique.
    pub display_name: String,
    /// MFA policy.
    pub mfa_policy: MfaPolicy,
    /// Enabled method kinds, in declaration order.
    pub enabled_method_kinds: Vec<MethodKind>,
    /// Resets of at least this many users here need approval; 0 means never.
    pub approval_threshold: u32,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A user of one customer, with the MFA facts lists show.
#[derive(Clone, Debug)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Customer.
    pub customer_id: CustomerId,
    /// Display name.
    pub display_name: String,
    /// E-mail, lower-cased.
    pub email: String,
    /// Subject the user signs in with, if known.
    pub external_subject: Option<String>,
    /// Administers the customer.
    pub admin: bool,
    /// Must register MFA at next sign-in.
    pub mfa_registration_required: bool,
    /// Last MFA reset.
    pub mfa_reset_at: Option<DateTime<Utc>>,
    /// Active methods.
    pub active_method_count: u32,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl User {
    /// The user's MFA state.
    pub fn mfa_state(&self) -> MfaState {
        MfaState::of(self.mfa_registration_required, self.active_method_count)
    }
}

/// An authentication method. `label` is the raw stored label: mask it before it
/// leaves the service ([`super::masking::mask_label`]).
#[derive(Clone, Debug)]
pub struct Method {
    /// Id.
    pub id: MethodId,
    /// Customer.
    pub customer_id: CustomerId,
    /// User.
    pub user_id: UserId,
    /// Kind.
    pub kind: MethodKind,
    /// Scope.
    pub scope: MethodScope,
    /// Raw label.
    pub label: String,
    /// State.
    pub state: MethodState,
    /// Whether a secret reference is recorded.
    pub has_secret_ref: bool,
    /// Enrolled.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}
