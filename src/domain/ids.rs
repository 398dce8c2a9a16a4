//! Typed ids: a user id can never be passed where a customer id is meant. Parsed
//! once at the edge; ids are UUIDs (v7, time-ordered) in canonical text form.

use std::fmt;

use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered (v7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses the canonical (hyphenated) text form; anything else is refused so
            /// that one id has exactly one spelling.
            pub fn parse(text: &str) -> Option<Self> {
                let uuid = Uuid::try_parse(text).ok()?;
                (uuid.hyphenated().to_string() == text.to_ascii_lowercase()).then_some(Self(uuid))
            }

            /// The underlying UUID, for the store.
            pub fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

id_type!(
    /// A customer (tenant).
    CustomerId
);
id_type!(
    /// A user of one customer.
    UserId
);
id_type!(
    /// An authentication method (enrollment).
    MethodId
);
id_type!(
    /// An MFA reset (summary and its life cycle).
    ResetId
);
id_type!(
    /// An audit event.
    AuditEventId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_canonical_text() {
        let id = CustomerId::new();
        assert_eq!(CustomerId::parse(&id.to_string()), Some(id));
        assert_eq!(CustomerId::parse(&id.to_string().to_uppercase()), Some(id));
        assert_eq!(CustomerId::parse(&id.uuid().simple().to_string()), None);
        assert_eq!(CustomerId::parse("not-a-uuid"), None);
        assert_eq!(CustomerId::parse(""), None);
    }
}
