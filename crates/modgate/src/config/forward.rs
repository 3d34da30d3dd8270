//! The forwarded-identity settings of `gateway.yaml`: which headers a trusted front proxy tells
//! modgate the client certificate in (`forwarded_headers`), and what each upstream is told about
//! the client (`forward_identity`). Plain data read from the file and used as it is at request
//! time (nothing to convert), so it is its own leaf: the runtime types that hold it
//! (`upstream.rs`, `identity.rs`) import this file, never the rest of the format.

use serde::de::Deserializer;
use serde::Deserialize;

use super::text::from_str_with;

/// An HTTP header name, checked while read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNameValue(pub http::HeaderName);

impl<'de> Deserialize<'de> for HeaderNameValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "an HTTP header name", |s| {
            http::HeaderName::from_bytes(s.as_bytes())
                .map(HeaderNameValue)
                .map_err(|_| format!("{s:?} is not a valid HTTP header name"))
        })
    }
}

fn header(name: &'static str) -> HeaderNameValue {
    HeaderNameValue(http::HeaderName::from_static(name))
}

/// The headers a trusted front proxy uses to tell modgate about the client certificate it
/// verified.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardedInput {
    /// The client certificate, URL-escaped PEM (nginx `$ssl_client_escaped_cert`) or base64 DER.
    pub cert: HeaderNameValue,
    /// The proxy's verification result; only `SUCCESS` is believed.
    pub verify: HeaderNameValue,
}

impl Default for ForwardedInput {
    fn default() -> Self {
        ForwardedInput {
            cert: header("x-ssl-client-cert"),
            verify: header("x-ssl-client-verify"),
        }
    }
}

/// How the client certificate is written into a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertFormat {
    /// Not sent.
    #[default]
    Off,
    /// URL-escaped PEM, like nginx's `$ssl_client_escaped_cert`.
    EscapedPem,
    /// Base64 of the DER bytes, on one line.
    Base64Der,
}

/// Header names for what is forwarded upstream.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardNames {
    pub cert: HeaderNameValue,
    pub chain: HeaderNameValue,
    pub dn: HeaderNameValue,
    pub verify: HeaderNameValue,
    pub sans: HeaderNameValue,
    pub fingerprint: HeaderNameValue,
    pub serial: HeaderNameValue,
    pub identity: HeaderNameValue,
    pub roles: HeaderNameValue,
}

impl Default for ForwardNames {
    fn default() -> Self {
        ForwardNames {
            cert: header("x-ssl-client-cert"),
            chain: header("x-ssl-client-chain"),
            dn: header("x-ssl-client-dn"),
            verify: header("x-ssl-client-verify"),
            sans: header("x-ssl-client-san"),
            fingerprint: header("x-ssl-client-fingerprint"),
            serial: header("x-ssl-client-serial"),
            identity: header("x-modgate-identity"),
            roles: header("x-modgate-roles"),
        }
    }
}

impl ForwardNames {
    /// Every configured name.
    pub fn all(&self) -> [&http::HeaderName; 9] {
        [
            &self.cert.0,
            &self.chain.0,
            &self.dn.0,
            &self.verify.0,
            &self.sans.0,
            &self.fingerprint.0,
            &self.serial.0,
            &self.identity.0,
            &self.roles.0,
        ]
    }
}

/// What an upstream is told about the client (nothing unless configured).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardIdentityConfig {
    pub cert: CertFormat,
    /// The intermediate certificates the client sent, in the same format, comma-separated.
    pub chain: bool,
    pub dn: bool,
    pub verify: bool,
    pub sans: bool,
    pub fingerprint: bool,
    pub serial: bool,
    /// The resolved identity name (certificate, user or token name).
    pub identity: bool,
    /// The roles the identity holds, comma-separated.
    pub roles: bool,
    pub names: ForwardNames,
}
