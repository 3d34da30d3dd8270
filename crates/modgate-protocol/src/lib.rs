//! GOPROXY / checksum-database request parsing, Go module path
//! `!`-case-encoding and Go version syntax, matching the behaviour of Go's
//! `golang.org/x/mod/module`, `golang.org/x/mod/semver` and
//! `golang.org/x/mod/sumdb/tlog` byte for byte.
//!
//! Pure functions only: no I/O, no clock, no global state, no panics on
//! input.
//!
//! * [`escape`] — `CheckPath`, `CheckImportPath`, `SplitPathVersion`,
//!   `CheckPathMajor`, `EscapePath`/`UnescapePath`,
//!   `EscapeVersion`/`UnescapeVersion`.
//! * [`version`] — `semver.IsValid`/`Canonical`/`Major`/`Compare`,
//!   `module.CanonicalVersion`, `module.IsPseudoVersion`, and [`Version`].
//! * [`request`] — [`RequestParser`] turning raw request targets into
//!   [`GoProxyRequest`]s, and rebuilding canonical upstream paths.
//! * [`sumdb`] — tile paths, lookup syntax and [`SumdbRequest`].
//! * [`gosum`] — the module versions listed by `go.sum`, `go.mod` `require`
//!   directives and `module@version` lists ([`ModVersion`]).
//! * [`retract`] — the `retract` directives of a `go.mod` with their rationale
//!   ([`Retractions`]), as `go` reads a dependency's latest `go.mod`.
//! * [`error`] — [`PathError`] and [`VersionError`] with Go's wording.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod escape;
mod githttp;
pub mod gosum;
pub mod request;
pub mod retract;
pub mod sumdb;
pub mod version;

pub use error::{go_quote, go_quote_rune, PathError, PathKind, PathReason, VersionError};
pub use escape::{
    check_file_path, check_import_path, check_path, check_path_major, escape_path, escape_version,
    split_path_version, unescape_path, unescape_version,
};
pub use githttp::{parse_git_request, GitEndpoint, GitRequest, GitService};
pub use gosum::{
    dedupe, parse_go_mod_requires, parse_go_sum, parse_module_list, GoSumError, GoSumErrorKind,
    ModVersion,
};
pub use request::{
    percent_decode, GoProxyRequest, ModuleRequest, ParseRequestKindError, RequestError,
    RequestKind, RequestParser, MAX_REQUEST_PATH,
};
pub use retract::{parse_retractions, Retraction, Retractions};
pub use sumdb::{
    is_valid_sumdb_name, parse_tile_path, SumdbEndpoint, SumdbRequest, Tile, TileError,
};
pub use version::{
    canonical_semver, canonical_version, compare_semver, is_pseudo_version, is_valid_semver,
    semver_build, semver_major, semver_major_minor, semver_prerelease, Version, VersionClass,
};
