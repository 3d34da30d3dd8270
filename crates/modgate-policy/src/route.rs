//! The ordered route table: maps a decoded module path to the first route
//! whose pattern matches it, and finds routes that can never match.
//!
//! Lookups go through a [`PathIndex`] compiled when the table is built (a trie
//! of element prefixes, globs filed under their literal leading elements), so
//! their cost does not grow with the number of routes; the answer is the one a
//! scan of the routes in order gives (the property tests below compare them).

use std::collections::HashMap;

use thiserror::Error;

use crate::index::{PathIndex, Slot};
use crate::pattern::{prefix_matches, Pattern};

/// One named route: module paths matching `pattern` are served by `target`.
///
/// `T` is whatever the caller attaches (the gateway binary uses its upstream
/// chain).
#[derive(Debug, Clone)]
pub struct Route<T> {
    /// Unique, non-empty route name (used in logs and config diagnostics).
    pub name: String,
    /// Which module paths this route serves.
    pub pattern: Pattern,
    /// Whether modules on this route are private (not checked against, nor
    /// leaked to, public services).
    pub private: bool,
    /// What serves the route.
    pub target: T,
}

/// Why a route table could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouteTableError {
    /// A route has an empty name.
    #[error("route at index {index} has an empty name")]
    EmptyName {
        /// Position of the route in the table.
        index: usize,
    },
    /// Two routes share a name.
    #[error("duplicate route name {name:?} (routes at index {first} and {second})")]
    DuplicateName {
        /// The repeated name.
        name: String,
        /// Index of the first route with that name.
        first: usize,
        /// Index of the later route with that name.
        second: usize,
    },
}

/// The result of a successful [`RouteTable::lookup`].
#[derive(Debug)]
pub struct RouteMatch<'a, T> {
    /// Position of the matching route in the table.
    pub index: usize,
    /// The matching route.
    pub route: &'a Route<T>,
}

// Manual impls: a match is a position and a reference, copyable whatever `T`.
impl<T> Clone for RouteMatch<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for RouteMatch<'_, T> {}

/// Ordered routes; the first route whose pattern matches wins. There is no
/// implicit catch-all: add a `prefix ""` route last for one.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    routes: Vec<Route<T>>,
    /// Every route's pattern, filed under the route's index.
    index: PathIndex,
}

impl<T> RouteTable<T> {
    /// Builds a table, rejecting empty or duplicate route names.
    pub fn new(routes: Vec<Route<T>>) -> Result<RouteTable<T>, RouteTableError> {
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(routes.len());
        for (index, route) in routes.iter().enumerate() {
            if route.name.is_empty() {
                return Err(RouteTableError::EmptyName { index });
            }
            if let Some(&first) = seen.get(route.name.as_str()) {
                return Err(RouteTableError::DuplicateName {
                    name: route.name.clone(),
                    first,
                    second: index,
                });
            }
            seen.insert(&route.name, index);
        }
        let index = PathIndex::new(
            routes
                .iter()
                .enumerate()
                .map(|(i, route)| (Slot::try_from(i).unwrap_or(Slot::MAX), &route.pattern)),
        );
        Ok(RouteTable { routes, index })
    }

    /// The first route whose pattern matches the decoded module path, or
    /// `None` when no route matches.
    pub fn lookup(&self, module: &str) -> Option<RouteMatch<'_, T>> {
        let [slot] = self.index.query::<1>(module, |_| Some(0));
        let index = usize::try_from(slot?).ok()?;
        self.routes
            .get(index)
            .map(|route| RouteMatch { index, route })
    }

    /// [`RouteTable::lookup`] by trying every route in order: the reference
    /// the compiled lookup is tested against.
    #[cfg(test)]
    fn lookup_linear(&self, module: &str) -> Option<RouteMatch<'_, T>> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, route)| route.pattern.matches(module))
            .map(|(index, route)| RouteMatch { index, route })
    }

    /// The route with the given name, if any.
    pub fn get(&self, name: &str) -> Option<&Route<T>> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// All routes, in match order.
    pub fn routes(&self) -> &[Route<T>] {
        &self.routes
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table has no routes (then every lookup is `None`).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Routes that can never match, as `(shadowed, by)` index pairs, in
    /// table order, naming the earliest covering route.
    ///
    /// Only certain, easy cases are detected: an earlier `prefix ""` shadows
    /// every later route, and an earlier prefix shadows a later prefix it is
    /// an element-prefix of (including an equal one). Globs and regexes are
    /// never reported as covering anything, so an empty result does not
    /// prove that every route is reachable.
    pub fn shadowed_routes(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (j, later) in self.routes.iter().enumerate() {
            let by = self.routes[..j]
                .iter()
                .position(|earlier| covers(&earlier.pattern, &later.pattern));
            if let Some(i) = by {
                out.push((j, i));
            }
        }
        out
    }
}

/// Whether every module path matched by `later` is certainly matched by
/// `earlier` (conservative: `false` when unsure).
fn covers(earlier: &Pattern, later: &Pattern) -> bool {
    let Pattern::Prefix(e) = earlier else {
        return false;
    };
    let e = e.strip_suffix('/').unwrap_or(e);
    if e.is_empty() {
        return true;
    }
    match later {
        // Every path matched by `later` is `l` or `l/...`; both start with
        // `e` at an element boundary when `l` does.
        Pattern::Prefix(l) => prefix_matches(e, l.strip_suffix('/').unwrap_or(l)),
        Pattern::Glob(_) | Pattern::Regex(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_strategies::{module, pattern};
    use proptest::prelude::*;

    fn route(name: &str, pattern: Pattern) -> Route<u32> {
        Route {
            name: name.to_owned(),
            pattern,
            private: false,
            target: 0,
        }
    }

    fn prefix(p: &str) -> Pattern {
        Pattern::prefix(p).unwrap()
    }

    fn sample() -> RouteTable<u32> {
        let mut private = route(
            "private",
            Pattern::glob("*.corp.example.com,rsc.io/private").unwrap(),
        );
        private.private = true;
        private.target = 1;
        let mut regex = route("gh", Pattern::regex("github\\.com/acme/.*").unwrap());
        regex.target = 2;
        let mut team = route("team", prefix("corp.example.com/team"));
        team.target = 3;
        let mut corp = route("corp", prefix("corp.example.com"));
        corp.target = 4;
        RouteTable::new(vec![private, regex, team, corp]).unwrap()
    }

    #[test]
    fn first_match_wins() {
        let t = sample();
        let m = t.lookup("git.corp.example.com/x").unwrap();
        assert_eq!((m.index, m.route.name.as_str()), (0, "private"));
        assert!(m.route.private);
        assert_eq!(t.lookup("github.com/acme/tool").unwrap().route.target, 2);
        assert_eq!(t.lookup("corp.example.com/team/lib").unwrap().index, 2);
        assert_eq!(t.lookup("corp.example.com/other").unwrap().index, 3);
        assert_eq!(t.lookup("corp.example.com").unwrap().index, 3);
    }

    #[test]
    fn no_match_is_none() {
        let t = sample();
        assert!(t.lookup("golang.org/x/mod").is_none());
        assert!(t.lookup("github.com/acme").is_none());
        assert!(t.lookup("corp.example.comx").is_none());
        let empty: RouteTable<u32> = RouteTable::new(Vec::new()).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert!(empty.lookup("anything").is_none());
        assert!(empty.shadowed_routes().is_empty());
    }

    #[test]
    fn catch_all() {
        let mut routes = sample().routes().to_vec();
        routes.push(route("default", prefix("")));
        let t = RouteTable::new(routes).unwrap();
        assert_eq!(t.len(), 5);
        assert_eq!(t.lookup("golang.org/x/mod").unwrap().route.name, "default");
        assert_eq!(t.lookup("corp.example.com").unwrap().index, 3);
        assert_eq!(t.get("default").unwrap().name, "default");
        assert!(t.get("nope").is_none());
        assert!(t.shadowed_routes().is_empty());
    }

    #[test]
    fn names_validated() {
        let err = RouteTable::new(vec![
            route("a", prefix("x")),
            route("b", prefix("y")),
            route("a", prefix("z")),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            RouteTableError::DuplicateName {
                name: "a".into(),
                first: 0,
                second: 2
            }
        );
        assert_eq!(
            err.to_string(),
            "duplicate route name \"a\" (routes at index 0 and 2)"
        );
        let err =
            RouteTable::new(vec![route("a", prefix("x")), route("", prefix("y"))]).unwrap_err();
        assert_eq!(err, RouteTableError::EmptyName { index: 1 });
    }

    #[test]
    fn shadowed() {
        let t = RouteTable::new(vec![
            route("corp", prefix("corp.example.com")),
            route("team", prefix("corp.example.com/team")),
            route("corpx", prefix("corp.example.comx")),
            route("same", prefix("corp.example.com/")),
            route("g", Pattern::glob("corp.example.com").unwrap()),
            route("all", prefix("")),
            route("r", Pattern::regex(".*").unwrap()),
            route("all2", prefix("")),
            route("deep", prefix("corp.example.comx/a")),
        ])
        .unwrap();
        assert_eq!(
            t.shadowed_routes(),
            vec![(1, 0), (3, 0), (6, 5), (7, 5), (8, 2)]
        );
        // The shadowing is real: lookups never reach the shadowed routes.
        assert_eq!(t.lookup("corp.example.com/team/x").unwrap().index, 0);
        assert_eq!(t.lookup("corp.example.comx/a").unwrap().index, 2);
    }

    #[test]
    fn later_broader_prefix_not_shadowed() {
        let t = RouteTable::new(vec![
            route("team", prefix("corp.example.com/team")),
            route("corp", prefix("corp.example.com")),
            route("glob", Pattern::glob("*").unwrap()),
            route("after-glob", prefix("x")),
        ])
        .unwrap();
        assert!(t.shadowed_routes().is_empty());
    }

    #[test]
    fn compiled_lookup_corner_cases() {
        let t = RouteTable::new(vec![
            route("star-host", Pattern::glob("*.corp.example.com").unwrap()),
            route("class-slash", Pattern::Glob("a[/]b".into())),
            route("escaped-slash", Pattern::glob("x/a\\/b").unwrap()),
            route("alt", Pattern::regex("corp\\.example\\.com/a|b").unwrap()),
            route("opt", Pattern::regex("corp\\.example\\.com/ab?").unwrap()),
            route("raw-prefix", Pattern::Prefix("q//".into())),
            route("comment", Pattern::regex("z/y(?x)#(\n|zz#)\n").unwrap()),
            route("corp", prefix("corp.example.com")),
        ])
        .unwrap();
        for (module, want) in [
            ("git.corp.example.com/x", Some(0)),
            ("corp.example.com", Some(7)),
            ("a/b", Some(1)),
            ("x/a/b/c", Some(2)),
            ("b", Some(3)),
            ("corp.example.com/a", Some(3)),
            ("corp.example.com/ab", Some(4)),
            ("q/", Some(5)),
            ("q//x", Some(5)),
            ("q/x", None),
            ("zz", Some(6)),
            ("z/y", Some(6)),
            ("", None),
        ] {
            assert_eq!(t.lookup(module).map(|m| m.index), want, "{module:?}");
            assert_eq!(t.lookup_linear(module).map(|m| m.index), want, "{module:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The compiled lookup answers exactly like trying every route in order.
        #[test]
        fn compiled_lookup_equals_linear(
            patterns in prop::collection::vec(pattern(), 0..40),
            modules in prop::collection::vec(module(), 1..16),
        ) {
            let routes = patterns
                .into_iter()
                .enumerate()
                .map(|(i, p)| route(&format!("r{i}"), p))
                .collect();
            let t = RouteTable::new(routes).unwrap();
            for m in &modules {
                prop_assert_eq!(
                    t.lookup(m).map(|r| r.index),
                    t.lookup_linear(m).map(|r| r.index),
                    "module {:?} in {:?}",
                    m,
                    t.routes().iter().map(|r| r.pattern.to_string()).collect::<Vec<_>>()
                );
            }
        }
    }
}
