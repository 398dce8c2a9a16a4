//! Why a call failed, as the contract names it: every `ErrorInfo.reason` this service sends is
//! one of these values (the proto's `ErrorReason` without its `ERROR_REASON_` prefix). Errors
//! carry a [`Reason`], never a string, so the code cannot send a reason the contract does not
//! declare; `api::status` tests that the two lists are the same.

use super::model::named_enum;

named_enum!(
    /// An `ErrorInfo.reason`. See `proto/mfareset/v1/error_reason.proto` for the status code
    /// and metadata keys of each.
    Reason {
        /// Request fields are invalid (BadRequest lists them).
        InvalidArgument => "INVALID_ARGUMENT",
        /// The body is not a valid message of the RPC's type.
        MalformedRequest => "MALFORMED_REQUEST",
        /// A `request_id` reused for a different request.
        RequestIdReused => "REQUEST_ID_REUSED",
        /// No bearer token.
        TokenMissing => "TOKEN_MISSING",
        /// Not `Bearer <JWT>`, or not a JWT.
        TokenMalformed => "TOKEN_MALFORMED",
        /// `exp` has passed.
        TokenExpired => "TOKEN_EXPIRED",
        /// No key verifies the signature.
        TokenInvalidSignature => "TOKEN_INVALID_SIGNATURE",
        /// Signed, but not acceptable here.
        TokenInvalid => "TOKEN_INVALID",
        /// A bearer token longer than the server reads.
        TokenTooLarge => "TOKEN_TOO_LARGE",
        /// No role in some selected customers.
        NoRole => "NO_ROLE",
        /// A role too weak for the action.
        RoleTooWeak => "ROLE_TOO_WEAK",
        /// One's own MFA, or one's own user in an approval.
        SelfUser => "SELF",
        /// Not inside the selection.
        NotFound => "NOT_FOUND",
        /// A unique value is taken.
        AlreadyExists => "ALREADY_EXISTS",
        /// A reset option that does not apply in every selected customer.
        OptionNotCommon => "OPTION_NOT_COMMON",
        /// A method kind the customer has not enabled.
        MethodKindNotEnabled => "METHOD_KIND_NOT_ENABLED",
        /// The user holds the most methods a user may.
        TooManyMethods => "TOO_MANY_METHODS",
        /// An external subject naming users in several selected customers.
        ExternalSubjectAmbiguous => "EXTERNAL_SUBJECT_AMBIGUOUS",
        /// A reset filter matching more users than one reset may cover.
        TooManyUsers => "TOO_MANY_USERS",
        /// Every user of the reset is skipped.
        NothingToReset => "NOTHING_TO_RESET",
        /// The reset expired.
        ResetExpired => "RESET_EXPIRED",
        /// The reset was cancelled.
        ResetCancelled => "RESET_CANCELLED",
        /// The reset was already applied.
        ResetConfirmed => "RESET_CONFIRMED",
        /// The reset was rejected.
        ResetRejected => "RESET_REJECTED",
        /// Approve or reject of a reset that is not awaiting approval.
        ResetNotAwaitingApproval => "RESET_NOT_AWAITING_APPROVAL",
        /// Confirm or cancel by someone other than the requester.
        NotResetRequester => "NOT_RESET_REQUESTER",
        /// The requester approving or rejecting their own reset.
        SelfApproval => "SELF_APPROVAL",
        /// Not the reset's etag.
        EtagMismatch => "ETAG_MISMATCH",
        /// What the plan covers changed since the summary.
        PlanStale => "PLAN_STALE",
        /// Lost a race with a concurrent change; retry.
        ConcurrentUpdate => "CONCURRENT_UPDATE",
        /// Over the principal's call rate.
        RateLimited => "RATE_LIMITED",
        /// A change-stream consumer fell too far behind.
        ConsumerTooSlow => "CONSUMER_TOO_SLOW",
        /// A change-stream cursor older than the retention.
        CursorExpired => "CURSOR_EXPIRED",
        /// A request message over the size limit.
        MessageTooLarge => "MESSAGE_TOO_LARGE",
        /// Too many change streams open for the principal or the replica.
        TooManyStreams => "TOO_MANY_STREAMS",
        /// The database cannot be reached.
        DatabaseUnavailable => "DATABASE_UNAVAILABLE",
        /// A declared RPC this release does not serve yet.
        Unimplemented => "UNIMPLEMENTED",
        /// A bug or an unexpected failure.
        Internal => "INTERNAL",
        /// The call ran out of time.
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        /// The replica is shutting down (a change stream it ended).
        ShuttingDown => "SHUTTING_DOWN",
    }
);
