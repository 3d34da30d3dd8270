//! Routing policy for modgate: module-path patterns (element-boundary
//! prefixes, `GOPRIVATE`-style globs, anchored regexes) and the ordered route
//! table that maps a decoded Go module path to a route, plus role-based
//! access control ([`rbac`]) deciding which principals may read which
//! modules.
//!
//! Pure logic: no I/O, no clock, no global state. Malformed input is reported
//! through `thiserror` errors, never by panicking.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cert;
pub mod glob;
mod index;
pub mod pattern;
pub mod rbac;
pub mod route;
#[cfg(test)]
mod test_strategies;

pub use cert::CertIdentity;
pub use glob::{match_prefix_patterns, path_match, validate_glob_list, BadPattern};
pub use pattern::{Pattern, PatternError, REGEX_SIZE_LIMIT};
pub use rbac::{
    AccessPolicy, AccessRequest, Binding, CommitSet, Decision, Effect, Explanation, Matcher,
    Principal, PrincipalSource, RbacError, Role, RoleMatch, Rule, RuleMatch, ValueMatch,
    VersionRange, DEFAULT_RULE, PRIVATE_DEFAULT_RULE,
};
pub use route::{Route, RouteMatch, RouteTable, RouteTableError};
