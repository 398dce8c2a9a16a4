//! The enumerated values the store keeps in columns, and how each is spelled there: one
//! `named_enum!` per value set, its `as_str` the column spelling (also the name shown in logs
//! and audit records), its `parse` the way back. The database's CHECK constraints name the
//! same spellings. The rules (`domain`) give these types their behaviour; the gRPC layer maps
//! them to the proto enums.

macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The column (and displayed) spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The value a column spelling names.
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

named_enum!(
    /// What a reset does to one method.
    Disposition {
        /// Deleted.
        Delete => "DELETE",
        /// Deactivated (hardware tokens).
        Deactivate => "DEACTIVATE",
        /// Left as it is.
        Keep => "KEEP",
    }
);

named_enum!(
    /// Why a reset leaves a user alone.
    SkipReason {
        /// No MFA to reset within the options.
        NotEnrolled => "NOT_ENROLLED",
        /// An admin, and the requester is not privileged in their customer.
        ProtectedAdmin => "PROTECTED_ADMIN",
        /// The requester themself.
        SelfUser => "SELF",
    }
);

named_enum!(
    /// The life cycle of a reset. An open set (DESIGN.md): clients treat a state they do not
    /// know as "not applied".
    ResetState {
        /// Summarized, waiting for its requester's confirmation.
        Pending => "PENDING",
        /// Confirmed by its requester, waiting for a second administrator's approval.
        AwaitingApproval => "AWAITING_APPROVAL",
        /// Applied once.
        Confirmed => "CONFIRMED",
        /// Cancelled by its requester.
        Cancelled => "CANCELLED",
        /// Rejected by an approver.
        Rejected => "REJECTED",
        /// Neither confirmed nor approved in time (derived from `expires_at`, never stored).
        Expired => "EXPIRED",
    }
);

impl MethodKind {
    /// Reads a comma-separated list of column spellings (as kept in
    /// `customers.enabled_method_kinds` and `mfa_resets.method_kinds`); unknown parts are
    /// left out.
    pub fn parse_list(text: &str) -> Vec<MethodKind> {
        text.split(',')
            .filter_map(|part| MethodKind::parse(part.trim()))
            .collect()
    }

    /// Writes kinds as a comma-separated list of column spellings.
    pub fn format_list(kinds: &[MethodKind]) -> String {
        kinds
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}
