//! The normalised search key of a user (DESIGN.md "Lists"): computed here, in Rust, so that
//! both backends match alike (PostgreSQL's `unaccent()` is not immutable and cannot be
//! indexed), and matched inside the database from an index: a trigram GIN index on
//! `(customer_id, search_key)` on PostgreSQL, an FTS5 trigram table on SQLite.
//!
//! A key is `" <name words> | <e-mail words>"`: each part [`fold`]ed, so that every word
//! (of the name, of the e-mail's local part and of its domain) starts after a space. A
//! search text, folded the same way, then matches
//! - exactly: the whole name or the whole address (`" q |%"`, `"%| q"`);
//! - at a word start: `"% q%"`, for any length;
//! - anywhere: `"%q%"`, from three characters on.
//!
//! The folded text holds only letters, digits and single spaces, so it never holds a LIKE
//! wildcard or the `|` that divides the two parts.

use unicode_normalization::{UnicodeNormalization, char::is_combining_mark};

/// Shortest search text (in characters, once folded) matched anywhere in a word rather than
/// only at a word start.
pub const MIN_SUBSTRING_CHARS: usize = 3;

/// Folds text the way search compares it: compatibility-decomposed (NFKD), marks stripped,
/// case-folded; every run of characters that are not letters or digits becomes one space,
/// none at either end. `"José  O'Brien-Nguyễn"` folds to `"jose o brien nguyen"`.
pub fn fold(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    let mut gap = false;
    for c in text.nfkd().filter(|c| !is_combining_mark(*c)) {
        if !c.is_alphanumeric() {
            gap = true;
            continue;
        }
        if gap && !folded.is_empty() {
            folded.push(' ');
        }
        gap = false;
        for lower in c.to_lowercase() {
            // The full case folds that lower-casing leaves out, for the scripts users'
            // names are written in: ß is "ss", a final sigma is a sigma.
            match lower {
                'ß' => folded.push_str("ss"),
                'ς' => folded.push('σ'),
                other => folded.push(other),
            }
        }
    }
    folded
}

/// The search key of a user with this display name and e-mail address.
pub fn key(display_name: &str, email: &str) -> String {
    format!(" {} | {}", fold(display_name), fold(email))
}

/// How well a user matched a search: the first sort key of a search's results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(i32)]
pub enum Rank {
    /// The whole display name or the whole e-mail address.
    Exact = 0,
    /// The start of a word.
    WordPrefix = 1,
    /// Inside a word.
    Substring = 2,
}

impl Rank {
    /// The rank stored as this integer (the database computes it as one); anything past the
    /// last is the last.
    pub fn from_i32(value: i32) -> Rank {
        match value {
            ..=0 => Rank::Exact,
            1 => Rank::WordPrefix,
            _ => Rank::Substring,
        }
    }
}

/// Search text, folded; `None` when nothing is left to match (the text held only spaces and
/// punctuation), which lists as if no text was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Search {
    folded: String,
}

impl Search {
    /// The search for what a caller typed.
    pub fn new(text: &str) -> Option<Search> {
        let folded = fold(text);
        // What the patterns below rely on: no LIKE wildcard, escape or quote can come from
        // the caller (the store writes the patterns into its statements).
        debug_assert!(folded.chars().all(|c| c == ' ' || c.is_alphanumeric()));
        (!folded.is_empty()).then_some(Search { folded })
    }

    /// The folded text.
    pub fn folded(&self) -> &str {
        &self.folded
    }

    /// Whether the text is long enough to match inside words.
    pub fn matches_substrings(&self) -> bool {
        self.folded.chars().count() >= MIN_SUBSTRING_CHARS
    }

    /// The LIKE pattern every match satisfies: a word start, or anywhere when long enough.
    pub fn pattern(&self) -> String {
        if self.matches_substrings() {
            format!("%{}%", self.folded)
        } else {
            self.word_prefix_pattern()
        }
    }

    /// The LIKE pattern of a match at a word start.
    pub fn word_prefix_pattern(&self) -> String {
        format!("% {}%", self.folded)
    }

    /// The LIKE patterns of an exact match: the whole name, the whole address.
    pub fn exact_patterns(&self) -> [String; 2] {
        [
            format!(" {} |%", self.folded),
            format!("%| {}", self.folded),
        ]
    }

    /// How `key` ranks for this search, or `None` if it does not match: what the database
    /// computes, written out for the tests.
    pub fn rank(&self, key: &str) -> Option<Rank> {
        let (name, email) = key.split_once(" | ")?;
        let q = &self.folded;
        if name.trim_start() == q || email == q {
            Some(Rank::Exact)
        } else if key.contains(&format!(" {q}")) {
            Some(Rank::WordPrefix)
        } else if self.matches_substrings() && key.contains(q.as_str()) {
            Some(Rank::Substring)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_accents_compatibility_forms_and_punctuation() {
        assert_eq!(fold("José  O'Brien-Nguyễn"), "jose o brien nguyen");
        assert_eq!(fold("ÅSA Öberg"), "asa oberg");
        assert_eq!(fold("Straße"), "strasse");
        assert_eq!(fold("ΟΔΥΣΣΕΥΣ"), "οδυσσευσ");
        assert_eq!(fold("ﬁnn ＴＡＮＡＫＡ"), "finn tanaka");
        assert_eq!(fold("İlkay"), "ilkay");
        assert_eq!(fold("李 小龍"), "李 小龍");
        assert_eq!(fold("  --@@  "), "");
        assert_eq!(
            fold("v.nguyen+mfa@Contoso.Example"),
            "v nguyen mfa contoso example"
        );
    }

    #[test]
    fn a_key_puts_every_word_after_a_space_and_divides_name_from_address() {
        assert_eq!(
            key("Thi Nguyễn", "thi.nguyen@contoso.example"),
            " thi nguyen | thi nguyen contoso example"
        );
    }

    #[test]
    fn ranks_exact_then_word_prefix_then_substring() {
        let key = key("Thi Nguyễn", "t.nguyen@contoso.example");
        let rank = |text: &str| Search::new(text).and_then(|s| s.rank(&key));
        assert_eq!(rank("thi NGUYEN"), Some(Rank::Exact));
        assert_eq!(rank("T.Nguyen@Contoso.Example"), Some(Rank::Exact));
        assert_eq!(rank("nguy"), Some(Rank::WordPrefix));
        assert_eq!(rank("n"), Some(Rank::WordPrefix));
        assert_eq!(rank("contoso.example"), Some(Rank::WordPrefix));
        assert_eq!(rank("guyen"), Some(Rank::Substring));
        assert_eq!(rank("ntoso"), Some(Rank::Substring));
        // Too short to match inside a word.
        assert_eq!(rank("gu"), None);
        // Never across the name and the address.
        assert_eq!(rank("nguyen t"), None);
        assert_eq!(rank("fabrikam"), None);
        assert_eq!(Search::new(" @ "), None);
    }

    #[test]
    fn patterns_hold_no_wildcards_of_their_own() {
        let search = Search::new("50%_off\\").unwrap();
        assert_eq!(search.folded(), "50 off");
        assert_eq!(search.pattern(), "%50 off%");
        assert_eq!(Search::new("ng").unwrap().pattern(), "% ng%");
    }
}
