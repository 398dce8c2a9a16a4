//! What each kind of audit event records: one variant per action, so that an event's action
//! and its details cannot disagree, and consumers of the change stream get typed values
//! (counts as integers, kinds as kinds), never an untyped map. Never contact data.

use std::collections::BTreeMap;

use crate::domain::{
    model::{AuditAction, MethodKind, MethodScope, MfaPolicy, Removal, ResetScope, Role},
    reset::ResetState,
};

/// The particulars of an audit event; its variant decides the event's [`AuditAction`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditDetails {
    /// A customer was created.
    CustomerCreated {
        /// Its display name.
        display_name: String,
        /// Its policy.
        mfa_policy: MfaPolicy,
        /// Its enabled kinds.
        enabled_method_kinds: Vec<MethodKind>,
    },
    /// A customer's MFA policy changed.
    MfaPolicySet {
        /// Before.
        previous: MfaPolicy,
        /// After.
        policy: MfaPolicy,
    },
    /// A customer's approval threshold changed.
    ApprovalThresholdSet {
        /// Before.
        previous: u32,
        /// After.
        threshold: u32,
    },
    /// A user was created.
    UserCreated {
        /// An admin of the customer.
        admin: bool,
    },
    /// A user was updated.
    UserUpdated {
        /// The contract's names of the fields that changed (`display_name`, `email`,
        /// `external_subject`, `admin`).
        changed_fields: Vec<String>,
        /// An admin after the change.
        admin: bool,
    },
    /// A user was deleted with their methods.
    UserDeleted {
        /// Was an admin.
        admin: bool,
        /// Methods deleted with them.
        methods_deleted: u32,
    },
    /// A method was registered.
    MethodRegistered {
        /// Its kind.
        kind: MethodKind,
        /// Its scope.
        scope: MethodScope,
    },
    /// One method was deleted or deactivated.
    MethodDeleted {
        /// Its kind.
        kind: MethodKind,
        /// Deleted, or deactivated (hardware tokens).
        removal: Removal,
    },
    /// A user's MFA was reset.
    MfaReset {
        /// The reset's scope.
        scope: ResetScope,
        /// Deleted methods by kind.
        deleted: BTreeMap<MethodKind, u32>,
        /// Deactivated methods by kind.
        deactivated: BTreeMap<MethodKind, u32>,
        /// Who asked for the reset.
        requested_by: String,
        /// Who approved it, when it needed approval.
        approved_by: Option<String>,
    },
    /// A reset awaits approval (one event per customer of it).
    ResetApprovalRequested {
        /// Users it would reset in the event's customer.
        users_to_reset: u32,
        /// Whether this customer's threshold requires the approval.
        approval_required: bool,
    },
    /// A reset was approved and applied (one event per customer of it).
    ResetApproved {
        /// Who asked for it.
        requested_by: String,
        /// Users reset in the event's customer.
        users_reset: u32,
    },
    /// A reset was rejected (one event per customer of it).
    ResetRejected {
        /// Who asked for it.
        requested_by: String,
    },
    /// A reset was cancelled (one event per customer of it).
    ResetCancelled {
        /// PENDING or AWAITING_APPROVAL.
        previous_state: ResetState,
    },
    /// A role was granted.
    RoleGranted {
        /// To whom.
        subject: String,
        /// Which role.
        role: Role,
    },
    /// A role was taken away.
    RoleRevoked {
        /// From whom.
        subject: String,
        /// Which role.
        role: Role,
    },
}

impl AuditDetails {
    /// The action these details belong to.
    pub fn action(&self) -> AuditAction {
        match self {
            AuditDetails::CustomerCreated { .. } => AuditAction::CustomerCreated,
            AuditDetails::MfaPolicySet { .. } => AuditAction::MfaPolicySet,
            AuditDetails::ApprovalThresholdSet { .. } => AuditAction::ApprovalThresholdSet,
            AuditDetails::UserCreated { .. } => AuditAction::UserCreated,
            AuditDetails::UserUpdated { .. } => AuditAction::UserUpdated,
            AuditDetails::UserDeleted { .. } => AuditAction::UserDeleted,
            AuditDetails::MethodRegistered { .. } => AuditAction::MethodRegistered,
            AuditDetails::MethodDeleted { .. } => AuditAction::MethodDeleted,
            AuditDetails::MfaReset { .. } => AuditAction::MfaReset,
            AuditDetails::ResetApprovalRequested { .. } => AuditAction::ResetApprovalRequested,
            AuditDetails::ResetApproved { .. } => AuditAction::ResetApproved,
            AuditDetails::ResetRejected { .. } => AuditAction::ResetRejected,
            AuditDetails::ResetCancelled { .. } => AuditAction::ResetCancelled,
            AuditDetails::RoleGranted { .. } => AuditAction::RoleGranted,
            AuditDetails::RoleRevoked { .. } => AuditAction::RoleRevoked,
        }
    }
}
