//! Who is asking, for one request: the verified TLS peer certificate (kept from the handshake),
//! a trusted front proxy's forwarded certificate, `.netrc` basic credentials or a bearer token —
//! turned into the policy's [`modgate_policy::Principal`].
//!
//! Spoofing is impossible by construction: every header that could carry a client identity is
//! removed from the request before anything reads it, except that a peer listed in
//! `trusted_proxies` has its forwarded certificate read first (and removed too).
//!
//! One concern per file:
//! - `handshake`: the client certificate kept from the TLS handshake and judged again per
//!   connection ([`PeerCert`], [`connection_refusal`]);
//! - `resolve`: one request's identity, and the removal of identity-bearing headers;
//! - `throttle`: the process-wide bounds on password-hash checks;
//! - `request`, `error`, `principal`: what a resolution yields (the request's identity, why
//!   there is none, principals and their cache keys);
//! - `forward`: the identity headers an upstream receives;
//! - `explain`: the identity `modgate explain` decides for.

mod error;
mod explain;
mod forward;
mod handshake;
mod metrics;
mod principal;
mod request;
mod resolve;
mod throttle;

pub use error::IdentityError;
pub use explain::ExplainIdentity;
pub use forward::forward_headers;
pub use handshake::{connection_refusal, peer_cert, HandshakeCapture, PeerCert};
pub use metrics::IdentityMetrics;
pub use principal::{add_credentials, attribute, cache_identity, cert_principal};
pub use request::{Attempt, RequestIdentity, Unresolved, VerifyState};
pub use resolve::{resolve, IdentitySettings};
