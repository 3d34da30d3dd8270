//! Routing policy for modgate: module-path patterns (element-boundary
//! prefixes, `GOPRIVATE`-style globs, anchored regexes) and the ordered route
//! table that maps a decoded Go module path to a route.
//!
//! Pure logic: no I/O, no clock, no global state. Malformed input is reported
//! through `thiserror` errors, never by panicking.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod glob;
pub mod pattern;
pub mod route;

pub use glob::{match_prefix_patterns, path_match, validate_glob_list, BadPattern};
pub use pattern::{Pattern, PatternError, REGEX_SIZE_LIMIT};
pub use route::{Route, RouteMatch, RouteTable, RouteTableError};
