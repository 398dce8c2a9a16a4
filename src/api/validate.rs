//! Decoding requests into domain values at the edge, collecting every field
//! violation so that one INVALID_ARGUMENT lists them all.

use std::collections::HashSet;

use uuid::Uuid;

use super::paging::{Binding, PageTokens};

use crate::domain::{
    DomainError, FieldViolation, ids::CustomerId, paging, selection::MAX_SELECTED_CUSTOMERS,
};

/// Collects field violations while a request is decoded.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// INVALID_ARGUMENT with every violation, or Ok.
    pub fn finish(self) -> Result<(), DomainError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DomainError::InvalidArgument(self.0))
        }
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
    ) -> Option<T> {
        if text.is_empty() {
            None
        } else {
            self.id(field, text, parse)
        }
    }

    /// A selection: 1 to 500 distinct customer ids.
    pub fn selection(&mut self, field: &str, ids: &[String]) -> Vec<CustomerId> {
        self.distinct_ids(
            field,
            ids,
            MAX_SELECTED_CUSTOMERS,
            "customer",
            CustomerId::parse,
        )
    }

    /// 1 to `max` distinct ids: one violation of `field` for an empty or oversized list
    /// (its elements are then not examined), otherwise one per malformed or repeated
    /// element.
    pub fn distinct_ids<T: Copy + Eq + std::hash::Hash>(
        &mut self,
        field: &str,
        ids: &[String],
        max: usize,
        noun: &str,
        parse: fn(&str) -> Option<T>,
    ) -> Vec<T> {
        if ids.is_empty() {
            self.add(field, format!("name at least one {noun}"));
            return Vec::new();
        }
        if ids.len() > max {
            self.add(field, format!("name at most {max} {noun}s"));
            return Vec::new();
        }
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
        parsed
    }

    /// Text of `min..=max` characters, trimmed.
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
    pub fn page_size(&mut self, field: &str, raw: i32) -> u64 {
        paging::page_size(field, raw).unwrap_or_else(|v| {
            self.0.push(v);
            paging::DEFAULT_PAGE_SIZE
        })
    }

    /// The keyset cursor in a page token (`None`: first page), or a violation of
    /// `page_token` when the token is not one made for this request.
    pub fn cursor(&mut self, tokens: &PageTokens, binding: &Binding, token: &str) -> Option<Uuid> {
        tokens.open_id(binding, token).unwrap_or_else(|violation| {
            self.0.push(violation);
            None
        })
    }

    /// An enum value that must be known and, when `required`, not UNSPECIFIED (0).
    /// Returns `None` for UNSPECIFIED or invalid values.
    pub fn enum_value<P: TryFrom<i32>>(
        &mut self,
        field: &str,
        raw: i32,
        required: bool,
    ) -> Option<P> {
        if raw == 0 {
            if required {
                self.add(field, "is required");
            }
            return None;
        }
        match P::try_from(raw) {
            Ok(value) => Some(value),
            Err(_) => {
                self.add(field, format!("unknown enum value {raw}"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_names_each_bad_element() {
        let mut v = Violations::new();
        let good = CustomerId::new().to_string();
        let ids = v.selection("customer_ids", &[good.clone(), "nope".into(), good]);
        assert_eq!(ids.len(), 1);
        let Err(DomainError::InvalidArgument(violations)) = v.finish() else {
            panic!()
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["customer_ids[1]", "customer_ids[2]"]);
    }

    #[test]
    fn email_is_lower_cased_and_checked() {
        let mut v = Violations::new();
        assert_eq!(v.email("email", " Ann@Example.COM "), "ann@example.com");
        assert!(v.finish().is_ok());
        let mut v = Violations::new();
        v.email("email", "not-an-address");
        assert!(v.finish().is_err());
    }
}
