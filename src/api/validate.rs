//! Decoding requests into domain values at the edge, collecting every field violation so
//! that one INVALID_ARGUMENT lists them all.
//!
//! Each field decoder records its violations and returns `Option<T>`: `None` exactly when it
//! recorded one. [`Violations::finish`] then turns the decoded fields into the typed values
//! all at once, or into the error: a handler never holds half-valid input.

use std::collections::HashSet;

use prost::Message;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::paging::{Binding, PageTokens};
use crate::domain::users::{SortKey, UserCursor, UserOrder};

use crate::domain::{
    DomainError, FieldViolation, Reason, idempotency::RequestKey, ids::CustomerId, paging,
    selection::MAX_SELECTED_CUSTOMERS,
};

/// Collects field violations while a request is decoded.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

/// Decoded fields that [`Violations::finish`] turns into their values: an `Option` (one
/// field) or a tuple of them.
pub trait Fields {
    /// The values.
    type Values;
    /// The values, if every field decoded.
    fn values(self) -> Option<Self::Values>;
}

impl<A> Fields for Option<A> {
    type Values = A;
    fn values(self) -> Option<A> {
        self
    }
}

macro_rules! tuple_fields {
    ($($name:ident),+) => {
        impl<$($name),+> Fields for ($(Option<$name>,)+) {
            type Values = ($($name,)+);
            #[allow(non_snake_case)]
            fn values(self) -> Option<Self::Values> {
                let ($($name,)+) = self;
                Some(($($name?,)+))
            }
        }
    };
}

tuple_fields!(A, B);
tuple_fields!(A, B, C);
tuple_fields!(A, B, C, D);
tuple_fields!(A, B, C, D, E);
tuple_fields!(A, B, C, D, E, F);
tuple_fields!(A, B, C, D, E, F, G);

impl Violations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// The values of `fields` when the request is valid; otherwise INVALID_ARGUMENT with
    /// every violation.
    pub fn finish<F: Fields>(self, fields: F) -> Result<F::Values, DomainError> {
        match fields.values() {
            Some(values) if self.0.is_empty() => Ok(values),
            _ => Err(self.refusal()),
        }
    }

    /// INVALID_ARGUMENT with every violation recorded so far, for a request that cannot be
    /// decoded further (a required message is missing).
    pub fn refusal(self) -> DomainError {
        if self.0.is_empty() {
            return DomainError::Internal(anyhow::anyhow!(
                "a request field failed to decode without saying why"
            ));
        }
        DomainError::InvalidArgument {
            reason: Reason::InvalidArgument,
            violations: self.0,
        }
    }

    /// A required message field: a violation when it is missing.
    pub fn required<'a, T>(&mut self, field: &str, value: &'a Option<T>) -> Option<&'a T> {
        if value.is_none() {
            self.add(field, "is required");
        }
        value.as_ref()
    }

    /// A required id of type `T` (canonical UUID text).
    pub fn id<T>(&mut self, field: &str, text: &str, parse: fn(&str) -> Option<T>) -> Option<T> {
        if text.is_empty() {
            self.add(field, "is required");
            return None;
        }
        let parsed = parse(text);
        if parsed.is_none() {
            self.add(field, "must be a UUID in canonical text form");
        }
        parsed
    }

    /// An optional id: empty means none.
    pub fn optional_id<T>(
        &mut self,
        field: &str,
        text: &str,
        parse: fn(&str) -> Option<T>,
    ) -> Option<Option<T>> {
        if text.is_empty() {
            Some(None)
        } else {
            self.id(field, text, parse).map(Some)
        }
    }

    /// A selection: 1 to 500 distinct customer ids.
    pub fn selection(&mut self, field: &str, ids: &[String]) -> Option<Vec<CustomerId>> {
        self.distinct_ids(
            field,
            ids,
            1,
            MAX_SELECTED_CUSTOMERS,
            "customer",
            CustomerId::parse,
        )
    }

    /// `min` to `max` distinct ids: one violation of `field` for a list too short or too
    /// long (its elements are then not examined), otherwise one per malformed or repeated
    /// element.
    pub fn distinct_ids<T: Copy + Eq + std::hash::Hash>(
        &mut self,
        field: &str,
        ids: &[String],
        min: usize,
        max: usize,
        noun: &str,
        parse: fn(&str) -> Option<T>,
    ) -> Option<Vec<T>> {
        if ids.len() < min {
            let at_least = if min == 1 {
                "one".to_string()
            } else {
                min.to_string()
            };
            self.add(field, format!("name at least {at_least} {noun}"));
            return None;
        }
        if ids.len() > max {
            self.add(field, format!("name at most {max} {noun}s"));
            return None;
        }
        let before = self.0.len();
        let mut seen = HashSet::new();
        let mut parsed = Vec::with_capacity(ids.len());
        for (i, text) in ids.iter().enumerate() {
            let Some(id) = self.id(&format!("{field}[{i}]"), text, parse) else {
                continue;
            };
            if seen.insert(id) {
                parsed.push(id);
            } else {
                self.add(format!("{field}[{i}]"), "is listed twice");
            }
        }
        (self.0.len() == before).then_some(parsed)
    }

    /// Up to `max` distinct, non-empty texts of at most `max_len` characters each.
    pub fn distinct_texts(
        &mut self,
        field: &str,
        values: &[String],
        max: usize,
        max_len: usize,
    ) -> Option<Vec<String>> {
        if values.len() > max {
            self.add(field, format!("name at most {max}"));
            return None;
        }
        let before = self.0.len();
        let mut seen = HashSet::new();
        let mut texts = Vec::with_capacity(values.len());
        for (i, value) in values.iter().enumerate() {
            let text = self.text(&format!("{field}[{i}]"), value, 1, max_len);
            if !seen.insert(text.clone()) {
                self.add(format!("{field}[{i}]"), "is listed twice");
            }
            texts.push(text);
        }
        (self.0.len() == before).then_some(texts)
    }

    /// Text of `min..=max` characters, trimmed. Its violations are recorded; the text is
    /// returned either way (a violation fails [`Self::finish`]).
    pub fn text(&mut self, field: &str, value: &str, min: usize, max: usize) -> String {
        let value = value.trim();
        let len = value.chars().count();
        if len < min {
            self.add(
                field,
                if min == 1 {
                    "is required".to_string()
                } else {
                    format!("needs at least {min} characters")
                },
            );
        } else if len > max {
            self.add(field, format!("must be at most {max} characters"));
        } else if value.chars().any(char::is_control) {
            self.add(field, "must not contain control characters");
        }
        value.to_string()
    }

    /// Optional text of at most `max` characters: empty means none.
    pub fn optional_text(&mut self, field: &str, value: &str, max: usize) -> Option<String> {
        let value = self.text(field, value, 0, max);
        (!value.is_empty()).then_some(value)
    }

    /// An e-mail address, lower-cased: one `@` with something on each side, no spaces.
    pub fn email(&mut self, field: &str, value: &str) -> String {
        let value = self.text(field, value, 1, 254).to_lowercase();
        if !value.is_empty() {
            let valid = match value.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && domain.contains('.')
                        && !domain.contains('@')
                        && !value.contains(char::is_whitespace)
                }
                None => false,
            };
            if !valid {
                self.add(field, "must be an e-mail address");
            }
        }
        value
    }

    /// A page size (see [`paging::page_size`]).
    pub fn page_size(&mut self, field: &str, raw: i32) -> Option<u64> {
        paging::page_size(field, raw)
            .map_err(|v| self.0.push(v))
            .ok()
    }

    /// The keyset cursor (an id of type `T`) in a page token (`Some(None)`: first page), or
    /// a violation of `page_token` when the token is not one made for this request.
    pub fn cursor<T: From<Uuid>>(
        &mut self,
        tokens: &PageTokens,
        binding: &Binding,
        token: &str,
    ) -> Option<Option<T>> {
        tokens
            .open_id(binding, token)
            .map(|cursor| cursor.map(T::from))
            .map_err(|violation| self.0.push(violation))
            .ok()
    }

    /// A user list's `order_by` (AIP-132): a key, then ` desc` or ` asc`; empty is the
    /// list's default order (`Some(None)`).
    pub fn user_order(&mut self, field: &str, raw: &str) -> Option<Option<UserOrder>> {
        let words: Vec<&str> = raw.split_whitespace().collect();
        let (key, descending) = match words.as_slice() {
            [] => return Some(None),
            [key] => (*key, false),
            [key, direction] if direction.eq_ignore_ascii_case("asc") => (*key, false),
            [key, direction] if direction.eq_ignore_ascii_case("desc") => (*key, true),
            _ => ("", false),
        };
        let key = match key {
            "display_name" => SortKey::DisplayName,
            "email" => SortKey::Email,
            "create_time" => SortKey::CreateTime,
            "mfa_reset_time" => SortKey::MfaResetTime,
            _ => {
                self.add(
                    field,
                    "must be one of display_name, email, create_time, mfa_reset_time, \
                     optionally followed by \" desc\"",
                );
                return None;
            }
        };
        Some(Some(UserOrder { key, descending }))
    }

    /// The cursor of a user list in a page token (`Some(None)`: first page).
    pub fn user_cursor(
        &mut self,
        tokens: &PageTokens,
        binding: &Binding,
        token: &str,
    ) -> Option<Option<UserCursor>> {
        tokens
            .open_user(binding, token)
            .map_err(|violation| self.0.push(violation))
            .ok()
    }

    /// A position cursor (items of a reset) in a page token.
    pub fn position(
        &mut self,
        tokens: &PageTokens,
        binding: &Binding,
        token: &str,
    ) -> Option<Option<i32>> {
        if token.is_empty() {
            return Some(None);
        }
        match tokens.open(binding, token) {
            Ok(bytes) => match <[u8; 4]>::try_from(bytes.as_slice()) {
                Ok(bytes) => Some(Some(i32::from_be_bytes(bytes))),
                Err(_) => {
                    self.add("page_token", "is malformed");
                    None
                }
            },
            Err(violation) => {
                self.0.push(violation);
                None
            }
        }
    }

    /// An enum value that must be known and, when `required`, not UNSPECIFIED (0), mapped
    /// to its domain value. `Some(None)` is an unspecified optional value.
    pub fn enum_value<P, D>(&mut self, field: &str, raw: i32, required: bool) -> Option<Option<D>>
    where
        P: TryFrom<i32>,
        D: TryFrom<P>,
    {
        if raw == 0 {
            if required {
                self.add(field, "is required");
                return None;
            }
            return Some(None);
        }
        match P::try_from(raw).ok().and_then(|p| D::try_from(p).ok()) {
            Some(value) => Some(Some(value)),
            None => {
                self.add(field, format!("unknown enum value {raw}"));
                None
            }
        }
    }

    /// A required enum value.
    pub fn required_enum<P, D>(&mut self, field: &str, raw: i32) -> Option<D>
    where
        P: TryFrom<i32>,
        D: TryFrom<P>,
    {
        self.enum_value::<P, D>(field, raw, true).flatten()
    }

    /// A list of enum values, each known and specified; sorted and distinct.
    pub fn enum_list<P, D>(&mut self, field: &str, raw: &[i32]) -> Option<Vec<D>>
    where
        P: TryFrom<i32>,
        D: TryFrom<P> + Ord,
    {
        let before = self.0.len();
        let mut values: Vec<D> = raw
            .iter()
            .enumerate()
            .filter_map(|(i, raw)| self.required_enum::<P, D>(&format!("{field}[{i}]"), *raw))
            .collect();
        values.sort();
        values.dedup();
        (self.0.len() == before).then_some(values)
    }

    /// The AIP-155 key of a mutating call: its `request_id` (empty: none, `Some(None)`) and a
    /// digest of `request` with the id taken out by `take_id`.
    pub fn request_key<M: Message + Clone>(
        &mut self,
        rpc: &'static str,
        request: &M,
        take_id: impl FnOnce(&mut M) -> String,
    ) -> Option<Option<RequestKey>> {
        let mut rest = request.clone();
        let text = take_id(&mut rest);
        self.request_key_of(rpc, &text, &rest)
    }

    /// [`Self::request_key`] of a request already split into its `request_id` text and the
    /// rest of it.
    pub fn request_key_of(
        &mut self,
        rpc: &'static str,
        request_id: &str,
        rest: &impl Message,
    ) -> Option<Option<RequestKey>> {
        if request_id.is_empty() {
            return Some(None);
        }
        let request_id = self.id("request_id", request_id, canonical_uuid)?;
        let digest = hex::encode(Sha256::digest(rest.encode_to_vec()));
        Some(Some(RequestKey {
            rpc,
            request_id,
            digest,
        }))
    }
}

/// A UUID of any version in canonical (hyphenated) text form.
fn canonical_uuid(text: &str) -> Option<Uuid> {
    let uuid = Uuid::try_parse(text).ok()?;
    (uuid.hyphenated().to_string() == text.to_ascii_lowercase()).then_some(uuid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1 as pb;

    #[test]
    fn selection_names_each_bad_element() {
        let mut v = Violations::new();
        let good = CustomerId::generate().to_string();
        let ids = v.selection("customer_ids", &[good.clone(), "nope".into(), good]);
        assert!(ids.is_none());
        let Err(DomainError::InvalidArgument { violations, .. }) = v.finish(ids) else {
            panic!()
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["customer_ids[1]", "customer_ids[2]"]);
    }

    #[test]
    fn finish_gives_every_value_or_every_violation() {
        let mut v = Violations::new();
        let size = v.page_size("page_size", 7);
        let id = v.id("user_id", &Uuid::now_v7().to_string(), CustomerId::parse);
        assert!(matches!(v.finish((size, id)), Ok((7, _))));
        let mut v = Violations::new();
        let size = v.page_size("page_size", -1);
        let id = v.id("user_id", "", CustomerId::parse);
        let Err(DomainError::InvalidArgument { violations, .. }) = v.finish((size, id)) else {
            panic!()
        };
        assert_eq!(violations.len(), 2);
    }

    #[test]
    fn email_is_lower_cased_and_checked() {
        let mut v = Violations::new();
        assert_eq!(v.email("email", " Ann@Example.COM "), "ann@example.com");
        assert!(v.finish(Some(())).is_ok());
        let mut v = Violations::new();
        v.email("email", "not-an-address");
        assert!(v.finish(Some(())).is_err());
    }

    #[test]
    fn request_key_digests_the_request_without_its_id() {
        let request = |name: &str, id: &str| pb::CreateUserRequest {
            user: Some(pb::User {
                display_name: name.into(),
                ..Default::default()
            }),
            request_id: id.into(),
        };
        let id = Uuid::now_v7().to_string();
        let key = |r: &pb::CreateUserRequest| {
            let mut v = Violations::new();
            let key = v.request_key("rpc", r, |r| std::mem::take(&mut r.request_id));
            v.finish(key).unwrap()
        };
        let first = key(&request("Ann", &id)).unwrap();
        let other_id = key(&request("Ann", &Uuid::now_v7().to_string())).unwrap();
        assert_eq!(
            first.digest, other_id.digest,
            "the id is not part of the digest"
        );
        assert_ne!(first.digest, key(&request("Bob", &id)).unwrap().digest);
        assert_eq!(key(&request("Ann", "")), None);
        let mut v = Violations::new();
        let bad = v.request_key("rpc", &request("Ann", "42"), |r| {
            std::mem::take(&mut r.request_id)
        });
        assert!(bad.is_none() && v.finish(bad).is_err());
    }
}
