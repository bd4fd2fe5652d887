//! Request paths of the API, parsed (pure): discovery documents, or a resource path
//! `/api/v1/...` / `/apis/<group>/<version>/...` with an optional namespace, name and
//! subresource.

/// What a path under `/api` or `/apis` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/api`.
    Api,
    /// `/apis`.
    Apis,
    /// `/apis/<group>`.
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`.
    GroupVersion(String, String),
    /// A resource path.
    Resource(ResourcePath),
}

/// `/<prefix>/[namespaces/<ns>/]<plural>[/<name>[/<subresource>]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    /// Group (`""` for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Namespace of a namespaced request.
    pub namespace: Option<String>,
    /// Plural resource name.
    pub plural: String,
    /// Object name.
    pub name: Option<String>,
    /// Subresource (`status`, `eviction`).
    pub subresource: Option<String>,
}

/// Parses `path`; `None` when it is not an API path (or has too many segments).
#[must_use]
pub fn parse(path: &str) -> Option<Route> {
    let seg: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match seg.as_slice() {
        ["api"] => return Some(Route::Api),
        ["apis"] => return Some(Route::Apis),
        ["apis", g] => return Some(Route::Group((*g).to_owned())),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    if rest.is_empty() {
        return Some(Route::GroupVersion(group.to_owned(), version.to_owned()));
    }
    let (namespace, rest) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some((*ns).to_owned()), tail),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(*n), None),
        [p, n, s] => (*p, Some(*n), Some(*s)),
        _ => return None,
    };
    Some(Route::Resource(ResourcePath {
        group: group.to_owned(),
        version: version.to_owned(),
        namespace,
        plural: plural.to_owned(),
        name: name.map(str::to_owned),
        subresource: subresource.map(str::to_owned),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(route: Option<Route>) -> ResourcePath {
        match route {
            Some(Route::Resource(r)) => r,
            other => panic!("not a resource path: {other:?}"),
        }
    }

    #[test]
    fn parses_discovery_and_resource_paths() {
        assert_eq!(parse("/api"), Some(Route::Api));
        assert_eq!(parse("/apis/"), Some(Route::Apis));
        assert_eq!(
            parse("/api/v1"),
            Some(Route::GroupVersion(String::new(), "v1".into()))
        );
        assert_eq!(
            parse("/apis/policy/v1"),
            Some(Route::GroupVersion("policy".into(), "v1".into()))
        );
        let r = res(parse("/api/v1/namespaces/kube-system/pods/p1/eviction"));
        assert_eq!(
            (
                r.namespace.as_deref(),
                r.plural.as_str(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            (Some("kube-system"), "pods", Some("p1"), Some("eviction"))
        );
        let r = res(parse("/api/v1/namespaces/system-upgrade"));
        assert_eq!(
            (r.plural.as_str(), r.name.as_deref(), r.namespace),
            ("namespaces", Some("system-upgrade"), None)
        );
        let r = res(parse("/api/v1/namespaces"));
        assert_eq!((r.plural.as_str(), r.name), ("namespaces", None));
        let r = res(parse(
            "/apis/upgrade.cattle.io/v1/namespaces/system-upgrade/plans",
        ));
        assert_eq!(
            (r.group.as_str(), r.plural.as_str()),
            ("upgrade.cattle.io", "plans")
        );
        let r = res(parse("/api/v1/nodes/n1/status"));
        assert_eq!(
            (r.name.as_deref(), r.subresource.as_deref()),
            (Some("n1"), Some("status"))
        );
        assert_eq!(parse("/healthz"), None);
        assert_eq!(parse("/api/v1/a/b/c/d"), None);
    }
}
