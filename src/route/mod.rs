//! Routing requests to pools by host and path (feature `route`), with
//! nginx's precedence, so that a configuration moved from nginx routes the
//! same way.
//!
//! A rule names a host pattern, a path pattern and a target (a pool, its
//! name, anything). A request's host picks the rules to look at:
//! 1. the rules for exactly that host (case-insensitive, port and trailing
//!    dot ignored); else
//! 2. the rules of the longest `*.suffix` it ends with; else
//! 3. the rules for any host (`*`).
//!
//! Among those, the path picks one as nginx's `location` does:
//! 1. an exact path (`= /login`) equal to it wins;
//! 2. else the longest prefix (`/api/`, `^~ /static/`) that it starts with
//!    is remembered; if it was written `^~`, it wins;
//! 3. else the first regular expression (`~ \.php$`, `~* \.(png|jpg)$`,
//!    case-insensitive), in the order the rules were given, that matches
//!    anywhere in the path wins;
//! 4. else the remembered prefix wins; else nothing does.
//!
//! Building validates every pattern and fails with a [`RouteError`]
//! naming the rule. Matching allocates nothing (the host is lowercased on
//! the stack; regular expressions keep their scratch space per thread
//! after the first use) and costs O(rules of the host).

mod pattern;

use std::collections::HashMap;

pub use pattern::RouteError;
use pattern::{HostPattern, MAX_HOST, PathPattern, host_pattern, path_pattern};

/// A routing table from (host, path) to targets.
///
/// # Examples
///
/// ```
/// use loadbalance::route::Router;
///
/// let router = Router::builder()
///     .rule("login", "example.com", "= /login", "auth")
///     .rule("api", "example.com", "/api/", "api")
///     .rule("images", "example.com", "~* \\.(png|jpe?g)$", "images")
///     .rule("static", "example.com", "^~ /static/", "cdn")
///     .rule("tenants", "*.example.com", "/", "tenants")
///     .rule("default", "*", "/", "web")
///     .build()?;
/// let target = |host, path| router.route(host, path).map(|m| *m.target());
/// assert_eq!(target("example.com", "/login"), Some("auth"));
/// assert_eq!(target("Example.COM:8080", "/api/users"), Some("api"));
/// // A regular expression beats a plain prefix, not a ^~ one.
/// assert_eq!(target("example.com", "/api/logo.PNG"), Some("images"));
/// assert_eq!(target("example.com", "/static/logo.png"), Some("cdn"));
/// assert_eq!(target("shop.example.com", "/cart"), Some("tenants"));
/// assert_eq!(target("other.org", "/"), Some("web"));
/// assert_eq!(target("example.com", "/nothing"), None);
/// # Ok::<(), loadbalance::route::RouteError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Router<T> {
    rules: Vec<Rule<T>>,
    exact_hosts: HashMap<Box<str>, Group>,
    /// Longest suffix first.
    suffix_hosts: Vec<(Box<str>, Group)>,
    any_host: Option<Group>,
}

/// One rule: its name and its target.
#[derive(Clone, Debug)]
struct Rule<T> {
    name: String,
    target: T,
}

/// The rules of one host pattern, arranged for matching.
#[derive(Clone, Debug, Default)]
struct Group {
    exact: HashMap<Box<str>, usize>,
    /// Longest first: `(prefix, final, rule)`.
    prefixes: Vec<(Box<str>, bool, usize)>,
    /// In the order given.
    regexes: Vec<(regex::Regex, usize)>,
}

/// The rule a request matched.
#[derive(Clone, Copy, Debug)]
pub struct Match<'a, T> {
    name: &'a str,
    target: &'a T,
}

impl<'a, T> Match<'a, T> {
    /// The rule's name.
    pub fn rule(&self) -> &'a str {
        self.name
    }

    /// The rule's target.
    pub fn target(&self) -> &'a T {
        self.target
    }
}

/// Builds a [`Router`].
#[derive(Debug)]
pub struct RouterBuilder<T> {
    rules: Vec<(String, String, String, T)>,
}

impl<T> Router<T> {
    /// A builder with no rules.
    #[must_use]
    pub fn builder() -> RouterBuilder<T> {
        RouterBuilder { rules: Vec::new() }
    }

    /// The rule for a request to `host` (a `Host` header or URI authority;
    /// a port and a trailing dot are ignored) and `path` (without the query
    /// string), or `None`. Allocates nothing.
    pub fn route(&self, host: &str, path: &str) -> Option<Match<'_, T>> {
        let mut buffer = [0u8; MAX_HOST];
        let host = lowercase_host(host, &mut buffer);
        let group = host
            .and_then(|host| self.exact_hosts.get(host))
            .or_else(|| {
                let host = host?;
                self.suffix_hosts
                    .iter()
                    .find(|(suffix, _)| host.ends_with(&**suffix))
                    .map(|(_, group)| group)
            })
            .or(self.any_host.as_ref())?;
        let index = group.find(path)?;
        let rule = &self.rules[index];
        Some(Match {
            name: &rule.name,
            target: &rule.target,
        })
    }

    /// The rules' count.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl Group {
    fn find(&self, path: &str) -> Option<usize> {
        if let Some(&index) = self.exact.get(path) {
            return Some(index);
        }
        let longest = self
            .prefixes
            .iter()
            .find(|(prefix, _, _)| path.starts_with(&**prefix));
        if let Some(&(_, true, index)) = longest {
            return Some(index);
        }
        self.regexes
            .iter()
            .find(|(regex, _)| regex.is_match(path))
            .map(|&(_, index)| index)
            .or(longest.map(|&(_, _, index)| index))
    }
}

/// `host` without its port and trailing dot, lowercased into `buffer`;
/// `None` when it is longer than a host name can be.
fn lowercase_host<'b>(host: &str, buffer: &'b mut [u8; MAX_HOST]) -> Option<&'b str> {
    let host = match host.rfind(':') {
        // An IPv6 literal's colons are inside brackets.
        Some(colon) if !host[colon..].contains(']') => &host[..colon],
        _ => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let bytes = host.as_bytes();
    let out = buffer.get_mut(..bytes.len())?;
    for (to, from) in out.iter_mut().zip(bytes) {
        *to = from.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

impl<T> RouterBuilder<T> {
    /// Adds a rule named `name` for `host` (`example.com`, `*.example.com`
    /// or `*`) and `path` (`/prefix`, `= /exact`, `^~ /prefix`, `~ regex`,
    /// `~* regex`), routing to `target`.
    #[must_use]
    pub fn rule(
        mut self,
        name: impl Into<String>,
        host: impl Into<String>,
        path: impl Into<String>,
        target: T,
    ) -> Self {
        self.rules
            .push((name.into(), host.into(), path.into(), target));
        self
    }

    /// The router.
    ///
    /// # Errors
    ///
    /// [`RouteError`] naming the first rule that is wrong: a bad host or
    /// path, a regular expression that does not compile, a name used
    /// twice, or an exact path or prefix already taken for its host.
    pub fn build(self) -> Result<Router<T>, RouteError> {
        let mut router = Router {
            rules: Vec::with_capacity(self.rules.len()),
            exact_hosts: HashMap::new(),
            suffix_hosts: Vec::new(),
            any_host: None,
        };
        let mut names: HashMap<String, ()> = HashMap::new();
        for (index, (name, host, path, target)) in self.rules.into_iter().enumerate() {
            if names.insert(name.clone(), ()).is_some() {
                return Err(RouteError::DuplicateName { rule: name });
            }
            let host = host_pattern(&name, &host)?;
            let path = path_pattern(&name, &path)?;
            let group = match host {
                HostPattern::Any => router.any_host.get_or_insert_with(Group::default),
                HostPattern::Exact(host) => router.exact_hosts.entry(host).or_default(),
                HostPattern::Suffix(suffix) => {
                    match router.suffix_hosts.iter().position(|(s, _)| *s == suffix) {
                        Some(at) => &mut router.suffix_hosts[at].1,
                        None => {
                            router.suffix_hosts.push((suffix, Group::default()));
                            &mut router.suffix_hosts.last_mut().expect("just pushed").1
                        }
                    }
                }
            };
            let shadowed_by = match path {
                PathPattern::Exact(path) => group.exact.insert(path, index),
                PathPattern::Prefix { prefix, final_ } => {
                    let taken = group
                        .prefixes
                        .iter()
                        .find(|(p, _, _)| *p == prefix)
                        .map(|&(_, _, i)| i);
                    if taken.is_none() {
                        group.prefixes.push((prefix, final_, index));
                    }
                    taken
                }
                PathPattern::Regex(regex) => {
                    group.regexes.push((regex, index));
                    None
                }
            };
            if let Some(by) = shadowed_by {
                return Err(RouteError::Shadowed {
                    rule: name,
                    by: router.rules[by].name.clone(),
                });
            }
            router.rules.push(Rule { name, target });
        }
        // Longest first; equal lengths are distinct strings, so the order
        // among them does not matter.
        let longest_first = |a: &str, b: &str| b.len().cmp(&a.len());
        router
            .suffix_hosts
            .sort_by(|(a, _), (b, _)| longest_first(a, b));
        let groups = router
            .exact_hosts
            .values_mut()
            .chain(router.suffix_hosts.iter_mut().map(|(_, group)| group))
            .chain(router.any_host.as_mut());
        for group in groups {
            group
                .prefixes
                .sort_by(|(a, _, _), (b, _, _)| longest_first(a, b));
        }
        Ok(router)
    }
}
