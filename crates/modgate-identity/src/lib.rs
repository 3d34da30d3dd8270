//! Who is asking: the identity of a request to modgate.
//!
//! A request can say who it comes from in three ways, and this crate handles each:
//!
//! 1. **The verified TLS peer.** [`tls`] loads the listener's certificate, key, client CA
//!    bundles and CRLs ([`load_material`]), builds a rustls client-certificate verifier (ring
//!    provider), and keeps all of it hot-swappable ([`ReloadableTls`]): Pingora gets a
//!    certificate resolver and a verifier once, and every reload changes what new handshakes
//!    see. The peer's leaf certificate becomes a [`CertIdentity`] ([`cert`]): RFC 4514 subject
//!    and issuer, CN/O/OU, SANs, SPIFFE ID, serial, fingerprint.
//! 2. **Credentials in the `Authorization` header.** [`credentials`] parses Basic and Bearer
//!    ([`parse_authorization`]) and checks them against a users file (bcrypt/argon2) and a
//!    tokens file (SHA-256), with a verified-credentials cache so the `go` command's
//!    per-request Basic auth does not cost a bcrypt run each time ([`Authenticator`]).
//! 3. **A trusted front proxy's forwarded headers.** When TLS ends at a proxy in front of
//!    modgate, the proxy forwards the client certificate in a header; [`forward`] decodes it
//!    ([`parse_forwarded_cert`]) — to be believed only for peers inside a [`CidrSet`] ([`cidr`]).
//!    The same module formats the headers modgate itself sends upstream, as nginx does
//!    ([`escaped_pem`], [`Verify`], [`sans_header`]).
//!
//! The crate only reads files; it does no network I/O. Errors name the file and the problem,
//! and nothing here panics on file contents or client input.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cert;
pub mod cidr;
pub mod credentials;
pub mod forward;
pub mod throttle;
pub mod tls;

pub use cert::{cert_from_der, dn_from_der, CertError, CertIdentity};
pub use cidr::{Cidr, CidrError, CidrSet};
pub use credentials::{
    parse_authorization, token_sha256_hex, AuthFailure, Authenticated, Authenticator, CacheStats,
    CredentialDb, CredentialError, CredentialKind, PasswordHash, Presented, TokenDb, TokenDigest,
    UserDb,
};
pub use forward::{base64_der, escaped_pem, parse_forwarded_cert, pem, sans_header, Verify};
pub use throttle::{CheckLimiter, CheckLimits, Refused, Scope, Ticket};
pub use tls::{
    load_material, validate, ClientAuth, CrlScope, PreparedTls, RefuseIn, ReloadSummary,
    ReloadableTls, TlsError, TlsFiles, TlsMaterial,
};
