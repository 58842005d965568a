//! Message flags: the five storable IMAP system flags and keywords.
//!
//! `\Recent` is not a flag here: it is per-session state that the IMAP layer
//! derives, never stored nor replicated.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest keyword accepted, in bytes.
pub const MAX_KEYWORD_LEN: usize = 128;

/// Why a flag or keyword was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    /// The keyword is empty.
    #[error("empty keyword")]
    Empty,
    /// The keyword is longer than [`MAX_KEYWORD_LEN`] bytes.
    #[error("keyword longer than {MAX_KEYWORD_LEN} bytes")]
    TooLong,
    /// The keyword holds a character that an IMAP atom may not hold.
    #[error("character {0:?} not allowed in a keyword")]
    InvalidChar(char),
    /// `\Recent` is session state, not a storable flag.
    #[error("\\Recent is not a storable flag")]
    Recent,
    /// A `\`-flag that is not one of the five storable system flags.
    #[error("unknown system flag {0:?}")]
    UnknownSystemFlag(String),
}

/// A keyword: an IMAP atom (RFC 9051 `flag-keyword`), case preserved and
/// compared exactly. Printable ASCII only, without space, `\` and the atom
/// specials `(){%*"]`; 1 to [`MAX_KEYWORD_LEN`] bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Keyword(String);

impl Keyword {
    /// Validates `s` as a keyword.
    pub fn new(s: impl Into<String>) -> Result<Self, FlagError> {
        let s = s.into();
        if s.is_empty() {
            return Err(FlagError::Empty);
        }
        if s.len() > MAX_KEYWORD_LEN {
            return Err(FlagError::TooLong);
        }
        if let Some(c) = s.chars().find(|&c| !is_atom_char(c)) {
            return Err(FlagError::InvalidChar(c));
        }
        Ok(Keyword(s))
    }

    /// The keyword as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// RFC 9051 ATOM-CHAR: any 7-bit CHAR but atom-specials.
fn is_atom_char(c: char) -> bool {
    c.is_ascii()
        && !c.is_ascii_control()
        && !matches!(c, ' ' | '(' | ')' | '{' | '%' | '*' | '"' | '\\' | ']')
}

impl TryFrom<String> for Keyword {
    type Error = FlagError;
    fn try_from(s: String) -> Result<Self, FlagError> {
        Keyword::new(s)
    }
}

impl From<Keyword> for String {
    fn from(k: Keyword) -> String {
        k.0
    }
}

impl fmt::Debug for Keyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Keyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A storable message flag. Orders system flags first (in declaration
/// order), then keywords by their bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Flag {
    /// `\Seen`
    Seen,
    /// `\Answered`
    Answered,
    /// `\Flagged`
    Flagged,
    /// `\Deleted`
    Deleted,
    /// `\Draft`
    Draft,
    /// A keyword such as `$Forwarded`.
    Keyword(Keyword),
}

impl Flag {
    /// The system flags, in their order.
    pub const SYSTEM: [Flag; 5] = [
        Flag::Seen,
        Flag::Answered,
        Flag::Flagged,
        Flag::Deleted,
        Flag::Draft,
    ];

    /// Parses IMAP syntax: `\Seen` (system flags are case-insensitive) or a
    /// keyword. `\Recent` and unknown `\`-flags are refused.
    pub fn parse(s: &str) -> Result<Flag, FlagError> {
        let Some(name) = s.strip_prefix('\\') else {
            return Keyword::new(s).map(Flag::Keyword);
        };
        let system = Flag::SYSTEM.iter().find(|f| {
            f.system_name()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        });
        match system {
            Some(f) => Ok(f.clone()),
            None if name.eq_ignore_ascii_case("Recent") => Err(FlagError::Recent),
            None => Err(FlagError::UnknownSystemFlag(s.to_owned())),
        }
    }

    /// A keyword flag, validated.
    pub fn keyword(s: impl Into<String>) -> Result<Flag, FlagError> {
        Keyword::new(s).map(Flag::Keyword)
    }

    /// The name of a system flag without its `\`; `None` for a keyword.
    fn system_name(&self) -> Option<&'static str> {
        Some(match self {
            Flag::Seen => "Seen",
            Flag::Answered => "Answered",
            Flag::Flagged => "Flagged",
            Flag::Deleted => "Deleted",
            Flag::Draft => "Draft",
            Flag::Keyword(_) => return None,
        })
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Flag::Keyword(k) => f.write_str(k.as_str()),
            sys => write!(f, "\\{}", sys.system_name().unwrap_or_default()),
        }
    }
}

impl std::str::FromStr for Flag {
    type Err = FlagError;
    fn from_str(s: &str) -> Result<Flag, FlagError> {
        Flag::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_validation() {
        assert!(Keyword::new("$Forwarded").is_ok());
        assert!(Keyword::new("NonJunk").is_ok());
        assert!(Keyword::new("a".repeat(MAX_KEYWORD_LEN)).is_ok());
        assert_eq!(Keyword::new(""), Err(FlagError::Empty));
        assert_eq!(
            Keyword::new("a".repeat(MAX_KEYWORD_LEN + 1)),
            Err(FlagError::TooLong)
        );
        for bad in [
            "a b", "a\\b", "a\tb", "a\x7fb", "a(", "a)", "a{", "a%", "a*", "a\"", "a]", "é",
        ] {
            assert!(Keyword::new(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(Keyword::new("x]"), Err(FlagError::InvalidChar(']')));
        // Serde refuses an invalid keyword.
        let bytes = postcard::to_allocvec(&"a b".to_string()).unwrap();
        assert!(postcard::from_bytes::<Keyword>(&bytes).is_err());
        let bytes = postcard::to_allocvec(&"ok".to_string()).unwrap();
        assert_eq!(
            postcard::from_bytes::<Keyword>(&bytes).unwrap().as_str(),
            "ok"
        );
    }

    #[test]
    fn flag_parse_display_round_trip() {
        for s in [
            "\\Seen",
            "\\Answered",
            "\\Flagged",
            "\\Deleted",
            "\\Draft",
            "$Forwarded",
            "Junk",
        ] {
            let f = Flag::parse(s).unwrap();
            assert_eq!(f.to_string(), s);
            assert_eq!(s.parse::<Flag>().unwrap(), f);
        }
        assert_eq!(Flag::parse("\\SEEN").unwrap(), Flag::Seen);
        assert_eq!(Flag::parse("\\seen").unwrap().to_string(), "\\Seen");
        assert_eq!(Flag::parse("\\Recent"), Err(FlagError::Recent));
        assert!(matches!(
            Flag::parse("\\Foo"),
            Err(FlagError::UnknownSystemFlag(_))
        ));
        assert!(Flag::parse("").is_err());
        assert!(Flag::Seen < Flag::Draft && Flag::Draft < Flag::keyword("$A").unwrap());
        let f = Flag::keyword("$Label1").unwrap();
        let back: Flag = postcard::from_bytes(&postcard::to_allocvec(&f).unwrap()).unwrap();
        assert_eq!(back, f);
    }
}

/// How STORE changes flags.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FlagMode {
    /// +FLAGS
    Add,
    /// -FLAGS
    Remove,
    /// FLAGS
    Replace,
}
