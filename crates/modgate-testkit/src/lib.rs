//! Test support for modgate: Go module fixtures (zip / `.mod` / `.info`), a fixture GOPROXY
//! upstream that records what it receives, the real `modgate` binary started per test, the
//! real `go` command in a sealed environment, a real Git host (`git http-backend`) for
//! `GOPROXY=direct`, raw HTTP / curl clients, offline Go programs built against Go's own
//! vendored `golang.org/x/mod` (oracles and independent checkers), a throwaway PostgreSQL 15
//! server and a throwaway Garage S3-compatible server.

pub mod balancer;
pub mod canary;
pub mod client;
pub mod fixture;
pub mod garage;
pub mod githost;
pub mod gocmd;
pub mod gooracle;
pub mod module;
pub mod otlp;
pub mod pki;
pub mod postgres;
pub mod process;
pub mod rawup;
pub mod resume;
pub mod sumdb;
pub mod tlsclient;
pub mod tmpfs;
pub mod tools;
pub mod vulndb;

pub use balancer::round_robin;
pub use canary::{CanaryLog, Role};
pub use client::{curl, get, metric, raw_request, request, CurlResult, Response};
pub use fixture::{Behaviour, FixtureProxy, FixtureTls, RecordedRequest};
pub use garage::{garage_bin, require_garage, GarageError, GarageServer};
pub use githost::{GitHost, GitHostError, GitRequest, WorkTree};
pub use gocmd::{GoEnv, GoRun};
pub use gooracle::{build_against_vendored_xmod, GoBuildError};
pub use module::{ModuleError, ModuleVersion};
pub use otlp::{OtlpReceiver, ReceivedRequest, ReceivedSpan};
pub use pki::{fingerprint_sha256, ClientSpec, Issuer, Pki};
pub use postgres::{require_postgres, PgError, PgServer};
pub use process::{free_addr, free_port, make_certs, modgate, modgate_bin, modgate_with, Gateway};
pub use rawup::raw_upstream;
pub use resume::{Resumed, ResumingClient};
pub use sumdb::{SumDb, SumDbResponse, SumDbServer};
pub use tlsclient::{TlsClient, TlsClientError, TlsResponse, TlsSession};
pub use tmpfs::Tmpfs;
pub use tools::{go_bin, in_ci, require, require_go};
