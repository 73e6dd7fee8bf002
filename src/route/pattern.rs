//! The patterns a route rule matches: a host (exact, `*.suffix`, or any)
//! and a path in nginx's `location` syntax.

use std::fmt;

/// What part of the request a path pattern matches, as nginx's `location`
/// modifiers say it: `= /exact`, `^~ /prefix` (no regular expression
/// after it), `~ regex`, `~* regex` (case-insensitive), or a plain
/// `/prefix`.
#[derive(Clone, Debug)]
pub(super) enum PathPattern {
    Exact(Box<str>),
    Prefix { prefix: Box<str>, final_: bool },
    Regex(regex::Regex),
}

/// Which hosts a rule is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum HostPattern {
    /// Every host (`*` or empty).
    Any,
    /// One host, lowercase.
    Exact(Box<str>),
    /// `*.example.com`: the dot and suffix, lowercase (`.example.com`).
    Suffix(Box<str>),
}

/// Why a rule could not be built: which rule, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteError {
    /// The host pattern is not a host name, `*.suffix` or `*`.
    BadHost {
        /// The rule's name.
        rule: String,
        /// The pattern.
        host: String,
    },
    /// The path pattern is empty, or a prefix or exact path that does not
    /// start with `/`.
    BadPath {
        /// The rule's name.
        rule: String,
        /// The pattern.
        path: String,
    },
    /// A regular expression that does not compile.
    BadRegex {
        /// The rule's name.
        rule: String,
        /// The regex crate's message.
        message: String,
    },
    /// Two rules with the same name.
    DuplicateName {
        /// The name.
        rule: String,
    },
    /// Two rules for the same host with the same exact path or prefix: the
    /// second could never match.
    Shadowed {
        /// The rule that could never match.
        rule: String,
        /// The rule that takes its requests.
        by: String,
    },
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadHost { rule, host } => {
                write!(f, "rule {rule:?}: {host:?} is not a host, *.suffix or *")
            }
            Self::BadPath { rule, path } => write!(
                f,
                "rule {rule:?}: {path:?} is not a path pattern (/prefix, = /exact, ^~ /prefix, ~ regex, ~* regex)"
            ),
            Self::BadRegex { rule, message } => {
                write!(f, "rule {rule:?}: bad regular expression: {message}")
            }
            Self::DuplicateName { rule } => write!(f, "two rules are named {rule:?}"),
            Self::Shadowed { rule, by } => write!(
                f,
                "rule {rule:?} could never match: rule {by:?} has the same host and path"
            ),
        }
    }
}

impl std::error::Error for RouteError {}

/// The most bytes of a host name (RFC 1035), so that matching lowercases
/// into a buffer on the stack.
pub(super) const MAX_HOST: usize = 253;

pub(super) fn host_pattern(rule: &str, host: &str) -> Result<HostPattern, RouteError> {
    let bad = || RouteError::BadHost {
        rule: rule.to_string(),
        host: host.to_string(),
    };
    let host_trimmed = host.trim();
    if host_trimmed.is_empty() || host_trimmed == "*" {
        return Ok(HostPattern::Any);
    }
    let (suffix, name) = match host_trimmed.strip_prefix("*.") {
        Some(name) => (true, name),
        None => (false, host_trimmed),
    };
    let valid = !name.is_empty()
        && name.len() <= MAX_HOST
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(bad());
    }
    let name = name.to_ascii_lowercase();
    Ok(if suffix {
        HostPattern::Suffix(format!(".{name}").into())
    } else {
        HostPattern::Exact(name.into())
    })
}

pub(super) fn path_pattern(rule: &str, path: &str) -> Result<PathPattern, RouteError> {
    let bad = || RouteError::BadPath {
        rule: rule.to_string(),
        path: path.to_string(),
    };
    let path = path.trim();
    let regex = |source: &str, case_insensitive: bool| {
        regex::RegexBuilder::new(source.trim())
            .case_insensitive(case_insensitive)
            .build()
            .map(PathPattern::Regex)
            .map_err(|error| RouteError::BadRegex {
                rule: rule.to_string(),
                message: error.to_string(),
            })
    };
    let slash = |rest: &str| {
        let rest = rest.trim();
        if rest.starts_with('/') {
            Ok(rest.into())
        } else {
            Err(bad())
        }
    };
    if let Some(rest) = path.strip_prefix("~*") {
        if rest.trim().is_empty() {
            return Err(bad());
        }
        return regex(rest, true);
    }
    if let Some(rest) = path.strip_prefix('~') {
        if rest.trim().is_empty() {
            return Err(bad());
        }
        return regex(rest, false);
    }
    if let Some(rest) = path.strip_prefix("^~") {
        return Ok(PathPattern::Prefix {
            prefix: slash(rest)?,
            final_: true,
        });
    }
    if let Some(rest) = path.strip_prefix('=') {
        return Ok(PathPattern::Exact(slash(rest)?));
    }
    Ok(PathPattern::Prefix {
        prefix: slash(path)?,
        final_: false,
    })
}
