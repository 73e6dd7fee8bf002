//! The router: nginx's precedence on hosts and paths, every bad pattern a
//! typed error naming its rule, and matching without allocation.
#![cfg(feature = "route")]

use loadbalance::route::{RouteError, Router};

use crate::counting_alloc;

fn router() -> Router<&'static str> {
    Router::builder()
        .rule("root-exact", "example.com", "= /", "exact-root")
        .rule("api", "example.com", "/api/", "api")
        .rule("api-v2", "example.com", "/api/v2/", "api-v2")
        .rule("static", "example.com", "^~ /static/", "static")
        .rule("php", "example.com", "~ \\.php$", "php")
        .rule("images", "example.com", "~* \\.(png|jpg)$", "images")
        .rule("everything", "example.com", "/", "catch-all")
        .rule("deep-tenant", "*.eu.example.com", "/", "eu")
        .rule("tenant", "*.example.com", "/", "tenants")
        .rule("default", "*", "/", "default")
        .build()
        .expect("valid rules")
}

#[test]
fn hosts_and_paths_follow_nginx_precedence() {
    let router = router();
    let route = |host, path| router.route(host, path).map(|m| (m.rule(), *m.target()));
    // Exact path beats every prefix.
    assert_eq!(
        route("example.com", "/"),
        Some(("root-exact", "exact-root"))
    );
    // Longest prefix.
    assert_eq!(route("example.com", "/api/x"), Some(("api", "api")));
    assert_eq!(
        route("example.com", "/api/v2/x"),
        Some(("api-v2", "api-v2"))
    );
    assert_eq!(
        route("example.com", "/other"),
        Some(("everything", "catch-all"))
    );
    // A regular expression beats a plain prefix, first in order wins...
    assert_eq!(
        route("example.com", "/api/v2/index.php"),
        Some(("php", "php"))
    );
    assert_eq!(route("example.com", "/a/b.JPG"), Some(("images", "images")));
    assert_eq!(
        route("example.com", "/a/b.PHP"),
        Some(("everything", "catch-all"))
    );
    // ...but not a ^~ prefix.
    assert_eq!(
        route("example.com", "/static/x.php"),
        Some(("static", "static"))
    );
    // Hosts: case, port and trailing dot ignored; exact beats suffix; the
    // longest suffix wins; the suffix does not match the bare domain.
    assert_eq!(route("EXAMPLE.com.:443", "/api/"), Some(("api", "api")));
    assert_eq!(route("a.eu.example.com", "/"), Some(("deep-tenant", "eu")));
    assert_eq!(route("shop.example.com", "/"), Some(("tenant", "tenants")));
    assert_eq!(route("example.org", "/x"), Some(("default", "default")));
    assert_eq!(route("[::1]:8080", "/x"), Some(("default", "default")));
    // A host too long to be one matches only the any-host rules.
    let long = "a".repeat(300);
    assert_eq!(route(&long, "/x"), Some(("default", "default")));
    assert_eq!(router.len(), 10);
}

#[test]
fn no_rule_no_route() {
    let router = Router::builder()
        .rule("api", "api.example.com", "/v1/", 1)
        .build()
        .expect("valid");
    assert!(router.route("api.example.com", "/v2/").is_none());
    assert!(router.route("www.example.com", "/v1/").is_none());
    assert_eq!(
        router
            .route("api.example.com", "/v1/x")
            .map(|m| *m.target()),
        Some(1)
    );
}

#[test]
fn every_bad_rule_is_named() {
    let build = |host: &str, path: &str| {
        Router::builder()
            .rule("good", "example.com", "/", ())
            .rule("bad", host, path, ())
            .build()
            .map(|_| ())
    };
    assert!(
        matches!(build("exa mple.com", "/"), Err(RouteError::BadHost { rule, .. }) if rule == "bad")
    );
    assert!(matches!(build("*.", "/"), Err(RouteError::BadHost { .. })));
    assert!(matches!(
        build("a..b", "/"),
        Err(RouteError::BadHost { .. })
    ));
    assert!(
        matches!(build("x.com", "api"), Err(RouteError::BadPath { rule, .. }) if rule == "bad")
    );
    assert!(matches!(
        build("x.com", "= api"),
        Err(RouteError::BadPath { .. })
    ));
    assert!(matches!(
        build("x.com", "~"),
        Err(RouteError::BadPath { .. })
    ));
    assert!(matches!(
        build("x.com", ""),
        Err(RouteError::BadPath { .. })
    ));
    let regex = build("x.com", "~ (unclosed");
    assert!(
        matches!(&regex, Err(RouteError::BadRegex { rule, .. }) if rule == "bad"),
        "{regex:?}"
    );
    assert_eq!(
        build("example.com", "/"),
        Err(RouteError::Shadowed {
            rule: "bad".into(),
            by: "good".into()
        })
    );
    let twice = Router::builder()
        .rule("a", "*", "/", ())
        .rule("a", "*", "/x", ())
        .build()
        .map(|_| ());
    assert_eq!(twice, Err(RouteError::DuplicateName { rule: "a".into() }));
    let message = build("x.com", "api").expect_err("bad").to_string();
    assert!(
        message.contains("\"bad\"") && message.contains("\"api\""),
        "{message}"
    );
}

#[test]
fn matching_allocates_nothing() {
    let router = router();
    let requests = [
        ("example.com", "/"),
        ("Example.com:80", "/api/v2/x.php"),
        ("shop.example.com", "/cart"),
        ("a.eu.example.com", "/"),
        ("example.com", "/a/b.JPG"),
        ("nowhere.net", "/"),
    ];
    // Regular expressions take their per-thread scratch space on first use.
    for (host, path) in requests {
        router.route(host, path);
    }
    let mut found = 0;
    let allocated = counting_alloc::allocations(|| {
        for _ in 0..1_000 {
            for (host, path) in requests {
                found += usize::from(router.route(host, path).is_some());
            }
        }
    });
    assert_eq!(found, 6_000);
    assert_eq!(allocated, 0);
}
