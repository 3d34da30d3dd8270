//! Go modules served straight from a Git repository, byte-identical to
//! what the go command computes with `GOPROXY=direct` (Go 1.23's
//! `cmd/go/internal/modfetch`: `coderepo.go` over `codehost/git.go`, and
//! `golang.org/x/mod/zip`).
//!
//! * [`rules`] — pure: where a module lives in its repository, which tags
//!   are its versions, pseudo-versions, `t1:`/`r1:` origin sums, go.mod
//!   module lines, the synthesized go.mod, the `@v/list` text.
//! * [`info`] — pure: `.info` JSON exactly as `encoding/json` writes it.
//! * [`modzip`] — pure: the module zip file rules and a deterministic
//!   writer.
//! * [`transport`] — the git CLI: scrubbed environment, credentials only in
//!   the environment, deadlines, bounded output, one bare mirror per
//!   repository ([`Mirrors`], [`Mirror`]) refreshed incrementally with
//!   coalescing.
//! * [`source`] — [`ModuleSource`]: `list`, `@latest`, `.info` for versions
//!   and queries (branch, tag, commit hash), `.mod`, `.zip`.
//!
//! ```no_run
//! # use modgate_git::*;
//! # fn main() -> Result<(), GitError> {
//! let mirrors = Mirrors::new("/var/cache/modgate/git", GitOptions::default());
//! let token = Credential::Authorization(Secret::new("Bearer ..."));
//! let repo = mirrors.repo("https://git.corp.example/group/repo.git", Some(token))?;
//! let m = ModuleSource::new(repo, "git.corp.example/group/repo", "git.corp.example/group/repo/sub/v2")?;
//! let list = m.list()?;                          // @v/list
//! let info = m.info("main")?.to_json();          // @v/main.info (pseudo-version)
//! let go_mod = m.go_mod("v2.1.0")?;              // @v/v2.1.0.mod
//! let zip = m.zip("v2.1.0")?;                    // @v/v2.1.0.zip
//! # let _ = (list, info, go_mod, zip); Ok(()) }
//! ```
//!
//! The API is synchronous: every operation is a few short git
//! subprocesses, so the gateway calls it on tokio's blocking pool
//! (`spawn_blocking`); coalescing is a per-mirror single flight (one
//! refresh talks to the host, with the mirror's state unlocked; callers
//! needing a refresh meanwhile wait on a condition variable for it, readers
//! do not wait; see [`Mirror::refresh`]), which needs no runtime.
//! Zips are built natively: git only transports and archives (`git
//! archive` exactly as Go runs it, so `.gitattributes` conversions match),
//! and the zip rules are applied in Rust.
//!
//! Not implemented yet: `retract` directives (Go skips retracted tags when
//! choosing a pseudo-version base or a commit's canonical version),
//! gopkg.in-style `.vN` paths beyond what the rules already carry, serving
//! stale refs when the host is down (the gateway's cache does that), and a
//! concurrency bound (the gateway bounds git operations per git upstream,
//! not per host).

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod info;
pub mod modzip;
pub mod observe;
pub mod rules;
pub mod source;
pub mod transport;

pub use error::GitError;
pub use info::{Origin, RevInfo};
pub use observe::observe_refreshes;
pub use source::ModuleSource;
pub use transport::{Credential, GitOptions, Mirror, Mirrors, Refs, Secret};
