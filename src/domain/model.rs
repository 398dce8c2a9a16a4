//! The design's words as types: policies, roles, method kinds and the records the
//! rules work on. Stored as their `as_str` names; the gRPC layer maps them to and
//! from the proto enums.

use chrono::{DateTime, Utc};

use super::ids::{CustomerId, MethodId, UserId};

macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored (and displayed) name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses a stored name.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use named_enum;

named_enum!(
    /// A customer's MFA policy.
    MfaPolicy {
        /// MFA is enforced; after a reset the user must register again.
        Enforced => "ENFORCED",
        /// MFA is optional; after a reset it is off until the user turns it on.
        Optional => "OPTIONAL",
    }
);

named_enum!(
    /// What a principal may do in one customer.
    Role {
        /// Read customers, users, methods and audit events.
        Reader => "READER",
        /// Read; reset non-admins; delete one method of a non-admin.
        AuthenticationAdmin => "AUTHENTICATION_ADMIN",
        /// Everything above, for admins too; set the MFA policy.
        PrivilegedAuthenticationAdmin => "PRIVILEGED_AUTHENTICATION_ADMIN",
        /// Create and update users, register methods; read.
        Provisioner => "PROVISIONER",
    }
);

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

named_enum!(
    /// The kinds of authentication method.
    MethodKind {
        /// SMS or voice.
        Phone => "PHONE",
        /// Push / TOTP app on a device.
        AuthenticatorApp => "AUTHENTICATOR_APP",
        /// TOTP secret in any app.
        SoftwareOath => "SOFTWARE_OATH",
        /// A physical token owned by the customer.
        HardwareOath => "HARDWARE_OATH",
        /// One-time code by e-mail.
        Email => "EMAIL",
        /// FIDO2 key or passkey.
        Fido2 => "FIDO2",
        /// Recovery codes.
        RecoveryCodes => "RECOVERY_CODES",
    }
);

impl MethodKind {
    /// What removing this kind of method means: hardware tokens belong to the
    /// customer and are deactivated for reassignment; everything else is deleted.
    pub fn removal(self) -> Removal {
        match self {
            MethodKind::HardwareOath => Removal::Deactivate,
            _ => Removal::Delete,
        }
    }

    /// Parses a comma-separated list of stored names (as kept in `customers`).
    pub fn parse_list(text: &str) -> Vec<MethodKind> {
        text.split(',')
            .filter_map(|part| MethodKind::parse(part.trim()))
            .collect()
    }

    /// Formats kinds as a comma-separated list of stored names.
    pub fn format_list(kinds: &[MethodKind]) -> String {
        kinds
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(",")
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
    /// Why a method was enrolled.
    MethodScope {
        /// Of the user's own accord.
        User => "USER",
        /// For the customer's enforced policy.
        Org => "ORG",
    }
);

named_enum!(
    /// The state of a method.
    MethodState {
        /// Usable.
        Active => "ACTIVE",
        /// Kept but unusable (a hardware token taken back).
        Deactivated => "DEACTIVATED",
    }
);

named_enum!(
    /// Which enrollments a reset removes.
    ResetScope {
        /// Every method of the user.
        All => "ALL",
        /// Only org-level (scope ORG) methods; applies where MFA is enforced.
        OrgLevel => "ORG_LEVEL",
    }
);

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

named_enum!(
    /// What an audit event records.
    AuditAction {
        /// A customer was created.
        CustomerCreated => "CUSTOMER_CREATED",
        /// A customer's MFA policy changed.
        MfaPolicySet => "MFA_POLICY_SET",
        /// A user was created.
        UserCreated => "USER_CREATED",
        /// A user was updated.
        UserUpdated => "USER_UPDATED",
        /// A method was registered.
        MethodRegistered => "METHOD_REGISTERED",
        /// One method was deleted or deactivated.
        MethodDeleted => "METHOD_DELETED",
        /// A user's MFA was reset.
        MfaReset => "MFA_RESET",
        /// A role was granted.
        RoleGranted => "ROLE_GRANTED",
        /// A role was revoked.
        RoleRevoked => "ROLE_REVOKED",
        /// A user was deleted.
        UserDeleted => "USER_DELETED",
        /// A reset awaits approval.
        ResetApprovalRequested => "RESET_APPROVAL_REQUESTED",
        /// A reset was approved and applied.
        ResetApproved => "RESET_APPROVED",
        /// A reset was rejected.
        ResetRejected => "RESET_REJECTED",
        /// A reset was cancelled.
        ResetCancelled => "RESET_CANCELLED",
        /// A customer's approval threshold changed.
        ApprovalThresholdSet => "APPROVAL_THRESHOLD_SET",
    }
);

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
