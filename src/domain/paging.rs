//! Page sizes and keyset pages. Lists are keyset-paged on time-ordered ids: a page
//! token carries the last id seen, never an offset, so pages stay correct while rows
//! are inserted.

use super::error::FieldViolation;

/// Page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// Largest page size; larger requests are capped, not refused.
pub const MAX_PAGE_SIZE: u64 = 500;

/// Parses a request's `page_size`: 0 means the default, above the maximum is capped,
/// negative is invalid.
pub fn page_size(field: &str, raw: i32) -> Result<u64, FieldViolation> {
    match raw {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(FieldViolation::new(field, "must not be negative")),
        n => Ok((n as u64).min(MAX_PAGE_SIZE)),
    }
}

/// Where a page starts and how long it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest<C> {
    /// Rows to return at most.
    pub size: u64,
    /// The key of the last row of the previous page.
    pub after: Option<C>,
}

/// One page of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T, C> {
    /// The rows of this page.
    pub items: Vec<T>,
    /// The key to continue after; `None` on the last page.
    pub next: Option<C>,
}

impl<T, C> Page<T, C> {
    /// Builds a page from up to `size + 1` fetched rows: the extra row only proves that
    /// another page exists, so `next` is `None` exactly on the last page.
    pub fn from_rows(mut rows: Vec<T>, size: u64, key: impl Fn(&T) -> C) -> Self {
        let more = rows.len() as u64 > size;
        rows.truncate(size as usize);
        let next = if more { rows.last().map(key) } else { None };
        Page { items: rows, next }
    }

    /// Converts the rows, keeping the continuation.
    pub fn try_map<U, E>(self, f: impl FnMut(T) -> Result<U, E>) -> Result<Page<U, C>, E> {
        Ok(Page {
            items: self.items.into_iter().map(f).collect::<Result<_, _>>()?,
            next: self.next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_caps_and_refuses_negative() {
        assert_eq!(page_size("page_size", 0), Ok(50));
        assert_eq!(page_size("page_size", 7), Ok(7));
        assert_eq!(page_size("page_size", 501), Ok(500));
        assert!(page_size("page_size", -1).is_err());
    }

    #[test]
    fn next_only_when_another_row_exists() {
        let page = Page::from_rows(vec![1, 2, 3], 2, |n| *n);
        assert_eq!(
            page,
            Page {
                items: vec![1, 2],
                next: Some(2)
            }
        );
        let last = Page::from_rows(vec![1, 2], 2, |n| *n);
        assert_eq!(last.next, None);
    }
}
