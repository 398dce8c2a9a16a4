//! Typed ids of the stored rows: a user id can never be passed where a customer id is meant,
//! from the edge, where they are parsed once, down to the queries. Ids are UUIDs (v7,
//! time-ordered) in canonical text form. A new id is minted only by an explicit `new()`:
//! there is no `Default`.

use std::fmt;

use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// Mints a new, time-ordered (v7) id: for a row about to be created, never a
            /// placeholder.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses the canonical (hyphenated) text form; anything else is refused so
            /// that one id has exactly one spelling.
            pub fn parse(text: &str) -> Option<Self> {
                let uuid = Uuid::try_parse(text).ok()?;
                (uuid.hyphenated().to_string() == text.to_ascii_lowercase()).then_some(Self(uuid))
            }

            /// The underlying UUID, for the entities and the wire.
            pub fn uuid(self) -> Uuid {
                self.0
            }

            /// The underlying UUIDs of a list of ids.
            pub fn uuids(ids: &[Self]) -> Vec<Uuid> {
                ids.iter().map(|id| id.0).collect()
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl From<$name> for sea_orm::Value {
            fn from(id: $name) -> Self {
                id.0.into()
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
        let id = CustomerId::generate();
        assert_eq!(CustomerId::parse(&id.to_string()), Some(id));
        assert_eq!(CustomerId::parse(&id.to_string().to_uppercase()), Some(id));
        assert_eq!(CustomerId::parse(&id.uuid().simple().to_string()), None);
        assert_eq!(CustomerId::parse("not-a-uuid"), None);
        assert_eq!(CustomerId::parse(""), None);
    }
}
