//! Route rules: which scopes a request needs, by method and path prefix.

use crate::config::RouteRule;

/// Whether `path` (query string ignored) is under `prefix` on a segment boundary.
pub fn path_matches(prefix: &str, path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or("");
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The first rule matching the request, if any.
pub fn find<'a>(rules: &'a [RouteRule], method: &str, path: &str) -> Option<&'a RouteRule> {
    rules.iter().find(|r| {
        (r.methods.is_empty() || r.methods.iter().any(|m| m == method))
            && path_matches(&r.path_prefix, path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let cases: &[(&str, &str, bool)] = &[
            ("/admin", "/admin", true),
            ("/admin", "/admin/", true),
            ("/admin", "/admin/users", true),
            ("/admin", "/admin?x=1", true),
            ("/admin", "/administrator", false),
            ("/admin", "/Admin", false),
            ("/admin", "/", false),
            ("/", "/anything", true),
            ("/a/b", "/a/b/c", true),
            ("/a/b", "/a/bc", false),
            ("/admin", "/x?next=/admin", false),
        ];
        for (prefix, path, want) in cases {
            assert_eq!(path_matches(prefix, path), *want, "{prefix} vs {path}");
        }
    }

    #[test]
    fn first_match_wins_and_methods_filter() {
        let rules = vec![
            RouteRule {
                path_prefix: "/admin".into(),
                methods: vec!["POST".into()],
                scopes: vec!["admin:write".into()],
            },
            RouteRule {
                path_prefix: "/admin".into(),
                methods: vec![],
                scopes: vec!["admin:read".into()],
            },
        ];
        assert_eq!(
            find(&rules, "POST", "/admin/x").map(|r| &r.scopes[0][..]),
            Some("admin:write")
        );
        assert_eq!(
            find(&rules, "GET", "/admin/x").map(|r| &r.scopes[0][..]),
            Some("admin:read")
        );
        assert!(find(&rules, "GET", "/public").is_none());
    }
}
