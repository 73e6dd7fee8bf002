//! The request path as routes see it and as backends receive it: one
//! normal form, so a path cannot match one route here and resolve to a
//! place another route guards at the backend (nginx matches locations
//! against its normalised `$uri` for the same reason).
//!
//! The normal form, in one pass over the path (the query is not touched):
//! - percent-encoded unreserved characters decoded (`%41` is `A`, `%2e`
//!   is `.`), every other escape kept with upper-case hex (RFC 3986 §6.2.2);
//! - runs of slashes merged (nginx's `merge_slashes on`);
//! - `.` and `..` segments removed (RFC 3986 §5.2.4).
//!
//! What a backend could read two ways is refused (400), never guessed: a
//! `..` that climbs above the root, an encoded slash or backslash (`%2F`,
//! `%5C`) or a raw backslash, an encoded NUL, a malformed escape, a dot
//! segment with parameters (`..;x`, which Tomcat reads as `..`), and a
//! target that is not a path (`*`, an authority).

use std::borrow::Cow;
use std::fmt;

/// Why a path is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PathError {
    /// Not an origin-form path: it does not start with `/`.
    NotAPath,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%2F`, `%5C` or `\`: a separator one server splits on and another
    /// does not.
    AmbiguousSlash,
    /// `%00`.
    Nul,
    /// More `..` segments than there are segments above them.
    AboveRoot,
    /// A `.` or `..` segment with `;` parameters.
    DotWithParameters,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAPath => "the target is not a path",
            Self::BadEscape => "a malformed percent-escape",
            Self::AmbiguousSlash => "an encoded slash or a backslash",
            Self::Nul => "an encoded NUL",
            Self::AboveRoot => "the path climbs above the root",
            Self::DotWithParameters => "a dot segment with parameters",
        })
    }
}

/// `path` (without its query) in normal form; borrowed when it already is.
pub(crate) fn normalise(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAPath);
    }
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path)?;
    remove_dot_segments(&decoded).map(Cow::Owned)
}

/// Whether `path` has nothing to change: no escape, no backslash, no
/// empty, `.` or `..` segment. Most paths are, and are not copied.
fn is_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.iter().any(|&b| b == b'%' || b == b'\\') {
        return false;
    }
    // Every segment after the leading slash; a trailing empty one (a
    // trailing slash) is normal.
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        let dot = segment
            .split(';')
            .next()
            .is_some_and(|s| s == "." || s == "..");
        if dot || (segment.is_empty() && !last) {
            return false;
        }
    }
    true
}

/// Unreserved escapes decoded, others upper-cased; refuses what
/// [`normalise`] refuses of escapes.
fn decode(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    // Each step consumes one byte or one three-byte escape.
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' {
            return Err(PathError::AmbiguousSlash);
        }
        if b != b'%' {
            // hyper's URI holds ASCII only; a multi-byte character is
            // copied whole through its bytes in order.
            let width = utf8_width(b);
            out.push_str(path.get(i..i + width).ok_or(PathError::BadEscape)?);
            i += width;
            continue;
        }
        let hex = |at: usize| bytes.get(at).and_then(|&h| (h as char).to_digit(16));
        let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2)) else {
            return Err(PathError::BadEscape);
        };
        let byte = (high * 16 + low) as u8;
        match byte {
            b'/' | b'\\' => return Err(PathError::AmbiguousSlash),
            0 => return Err(PathError::Nul),
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
                out.push(b as char);
            }
            b => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
        i += 3;
    }
    Ok(out)
}

const HEX: [u8; 16] = *b"0123456789ABCDEF";

/// The length of the UTF-8 sequence `first` starts.
fn utf8_width(first: u8) -> usize {
    match first {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

/// RFC 3986 §5.2.4 on a decoded absolute path, with empty segments
/// merged and a climb above the root refused.
fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    // `path` starts with `/`: its segments follow the first slash.
    let segments: Vec<&str> = path[1..].split('/').collect();
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    // A path that ends in a directory (a slash, `.` or `..`) keeps its
    // trailing slash.
    let mut directory = false;
    for segment in &segments {
        directory = true;
        // The segment's name, before any `;` parameters.
        let name = segment.split(';').next().unwrap_or(segment);
        if (name == "." || name == "..") && name.len() != segment.len() {
            return Err(PathError::DotWithParameters);
        }
        match *segment {
            "" | "." => {}
            ".." => {
                kept.pop().ok_or(PathError::AboveRoot)?;
            }
            _ => {
                kept.push(segment);
                directory = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if directory || kept.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// `path` with every segment's `;` parameters removed: the path Java
/// servlet containers (Tomcat, Jetty, Spring) resolve, which routes match
/// so that a parameter cannot carry a path past a prefix route.
pub(crate) fn without_parameters(path: &str) -> Cow<'_, str> {
    if !path.contains(';') {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for (index, segment) in path.split('/').enumerate() {
        if index > 0 {
            out.push('/');
        }
        out.push_str(segment.split(';').next().unwrap_or(segment));
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> String {
        normalise(path)
            .unwrap_or_else(|e| panic!("{path:?}: {e}"))
            .into_owned()
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for path in [
            "/",
            "/a",
            "/a/",
            "/a/b.c/d;p=1",
            "/.well-known/x",
            "/a..b/..c",
        ] {
            assert!(matches!(normalise(path), Ok(Cow::Borrowed(_))), "{path}");
        }
    }

    #[test]
    fn dot_segments_and_slashes() {
        assert_eq!(ok("/public/../internal/x"), "/internal/x");
        assert_eq!(ok("/a/./b/../c"), "/a/c");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/b/."), "/a/b/");
        assert_eq!(ok("//a///b//"), "/a/b/");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/a/..."), "/a/...");
        // A segment of parameters only is not empty.
        assert_eq!(ok("//;p"), "/;p");
        assert_eq!(ok("/a/;p/../b"), "/a/b");
    }

    #[test]
    fn escapes() {
        assert_eq!(ok("/public/%2e%2E/internal"), "/internal");
        assert_eq!(ok("/%41%7e%5f"), "/A~_");
        assert_eq!(ok("/a%20b%3f%c3%a9"), "/a%20b%3F%C3%A9");
        assert_eq!(ok("/%25"), "/%25");
    }

    #[test]
    fn refusals() {
        for (path, error) in [
            ("*", PathError::NotAPath),
            ("", PathError::NotAPath),
            ("/..", PathError::AboveRoot),
            ("/a/../..", PathError::AboveRoot),
            ("/%2e%2e/etc", PathError::AboveRoot),
            ("/public%2F..%2Finternal", PathError::AmbiguousSlash),
            ("/public%2finternal", PathError::AmbiguousSlash),
            ("/a%5c..%5cb", PathError::AmbiguousSlash),
            ("/a\\b", PathError::AmbiguousSlash),
            ("/a%00", PathError::Nul),
            ("/a%", PathError::BadEscape),
            ("/a%4", PathError::BadEscape),
            ("/a%zz", PathError::BadEscape),
            ("/public/..;/internal", PathError::DotWithParameters),
            ("/public/.;x/y", PathError::DotWithParameters),
        ] {
            assert_eq!(normalise(path), Err(error), "{path:?}");
        }
    }

    #[test]
    fn parameters_are_removed_for_routing() {
        assert_eq!(without_parameters("/admin;x/secret"), "/admin/secret");
        assert_eq!(without_parameters("/a;b=c;d/e/f;g"), "/a/e/f");
        assert_eq!(without_parameters("/;p"), "/");
        assert!(matches!(
            without_parameters("/plain/path"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for path in ["/a/./b/../c/", "/%41//x/%2e/", "/a%20b/..;p/../c", "/x/%7E"] {
            if let Ok(once) = normalise(path) {
                assert_eq!(normalise(&once).expect("normal"), once, "{path}");
            }
        }
    }
}
