//! Why a profile could not be used: one error, naming the file, the line, the column and the key.

use thiserror::Error;

/// Where in which file a problem is: 1-based line and column (0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file (a path as given, or `builtin:NAME` for a profile inside the binary).
    pub file: String,
    /// 1-based line; 0 when the problem has no place in the file.
    pub line: usize,
    /// 1-based column; 0 when the problem has no place in the file.
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        }
    }
}

/// A profile that cannot be read, resolved or accepted.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ProfileError {
    /// A file could not be read (a missing profile, or the file an `extends` names).
    #[error("{file}: {reason}")]
    Read {
        /// The file.
        file: String,
        /// The operating system's reason.
        reason: String,
    },
    /// A name that is neither a built-in profile nor a file.
    #[error("no profile named '{name}': not a built-in ({known}) and no such file{hint}")]
    UnknownName {
        /// The name given.
        name: String,
        /// The built-in names, comma-separated.
        known: String,
        /// `; did you mean 'X'?` or empty.
        hint: String,
    },
    /// Something wrong at a place in a file: YAML syntax, an unknown key, a wrong type, an
    /// impossible value or combination, a bad `extends`.
    #[error("{at}: {}{message}", key_prefix(.key))]
    Invalid {
        /// Where.
        at: Location,
        /// The key, as a dotted path (`quantization.activations.dtype`); empty for syntax errors.
        key: String,
        /// What is wrong, and what would be right.
        message: String,
    },
}

/// `s` with control characters escaped (`\n` for a newline), so a message stays one line.
pub fn one_line(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

impl ProfileError {
    /// An error at `at` about `key` (control characters a file put in a key or value are
    /// escaped, so the error stays one line).
    pub fn invalid(at: Location, key: impl Into<String>, message: impl Into<String>) -> Self {
        ProfileError::Invalid {
            at: Location {
                file: one_line(&at.file),
                ..at
            },
            key: one_line(&key.into()),
            message: one_line(&message.into()),
        }
    }

    /// The key the error is about, when it has one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ProfileError::Invalid { key, .. } if !key.is_empty() => Some(key),
            _ => None,
        }
    }

    /// Where the error is, when it has a place.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ProfileError::Invalid { at, .. } => Some(at),
            _ => None,
        }
    }
}

/// Something allowed but probably not meant (a target that will run it slowly, a setting that
/// has no effect); reported, never fatal.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileWarning {
    /// Where.
    pub at: Location,
    /// The key.
    pub key: String,
    /// What is odd, and why.
    pub message: String,
}

impl std::fmt::Display for ProfileWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}{}", self.at, key_prefix(&self.key), self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_file_line_column_and_key() {
        let at = Location {
            file: "p.yaml".into(),
            line: 3,
            column: 5,
        };
        let e = ProfileError::invalid(at, "quantization.activations.dtype", "int4 is not 8-bit");
        assert_eq!(
            e.to_string(),
            "p.yaml:3:5: quantization.activations.dtype: int4 is not 8-bit"
        );
        assert_eq!(e.key(), Some("quantization.activations.dtype"));
        let no_place = Location {
            file: "p.yaml".into(),
            line: 0,
            column: 0,
        };
        let e = ProfileError::invalid(no_place, "", "did not parse");
        assert_eq!(e.to_string(), "p.yaml: did not parse");
        assert_eq!(e.key(), None);
        let at = Location {
            file: "p.yaml".into(),
            line: 1,
            column: 1,
        };
        let e = ProfileError::invalid(at, "ops.supported.a\nb", "unknown operator 'a\nb'");
        assert_eq!(
            e.to_string(),
            "p.yaml:1:1: ops.supported.a\\nb: unknown operator 'a\\nb'"
        );
    }
}
