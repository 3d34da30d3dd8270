//! The identity parts of `gateway.yaml`: a listener's TLS (server certificate, client-certificate
//! verification, CRLs), trusted front proxies, the credential files, which client-certificate
//! headers each upstream receives, and where audit records and spans go.
//!
//! Like the rest of the file format, each value is checked while it is read so an error names
//! its line; a listener's TLS files are additionally loaded as a whole (certificate, key, CA
//! bundles and CRLs together) with the same code that serves them, so `modgate check` refuses
//! exactly what start-up or a reload would.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use modgate_identity::{Cidr, ClientAuth, CrlScope, RefuseIn, TlsFiles};
use modgate_telemetry::OtlpProtocol;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{from_str_with, parsed, parsed_some, resolve_path, CertFile, DurationValue, KeyFile};
use crate::tls;

/// One value or a list of values (`client_ca: ca.pem` or `client_ca: [a.pem, b.pem]`).
#[derive(Debug, Clone)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A hand-written visitor rather than `#[serde(untagged)]`: untagged enums replace the
        // inner error (and its position) with "did not match any variant".
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one value or a list")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany<T>, E> {
                T::deserialize(de::value::StrDeserializer::<E>::new(v)).map(|x| OneOrMany(vec![x]))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OneOrMany<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|x| OneOrMany(vec![x]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany<T>, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element()? {
                    v.push(x);
                }
                Ok(OneOrMany(v))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A listener's TLS settings, loaded and known to work.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    pub files: TlsFiles,
    /// Also reload when the files change, checking at this interval (SIGHUP always reloads).
    pub watch: Option<Duration>,
}

impl ListenerTls {
    pub fn client_auth(&self) -> ClientAuth {
        self.files.client_auth
    }
}

/// A path to a file that must exist and be readable (its contents are checked by whoever
/// uses it).
#[derive(Debug, Clone, PartialEq)]
pub struct ExistingFile(pub PathBuf);

impl<'de> Deserialize<'de> for ExistingFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a file path", |p| {
            let path = resolve_path(p);
            std::fs::File::open(&path)
                .map(|_| ExistingFile(path.clone()))
                .map_err(|e| format!("{}: {e}", path.display()))
        })
    }
}

/// A PEM file of CA certificates.
#[derive(Debug, Clone)]
struct CaFile(PathBuf);

impl<'de> Deserialize<'de> for CaFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a PEM CA bundle file", |p| {
            let path = resolve_path(p);
            tls::read_certs(&path).map(|_| CaFile(path))
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListenerTls {
    cert: CertFile,
    key: KeyFile,
    #[serde(default, deserialize_with = "parsed")]
    client_auth: ClientAuth,
    #[serde(default)]
    client_ca: OneOrMany<CaFile>,
    #[serde(default)]
    crl: OneOrMany<ExistingFile>,
    #[serde(default, deserialize_with = "parsed")]
    crl_scope: CrlScope,
    #[serde(default)]
    allow_unknown_revocation: bool,
    /// `http` (default): a missing or unacceptable client certificate gets an HTTP 403 naming
    /// the problem; `handshake`: the TLS handshake fails with an alert instead.
    #[serde(default = "http_refusals", deserialize_with = "parsed")]
    refuse_in: RefuseIn,
    watch: Option<DurationValue>,
}

/// `tls.refuse_in` defaults to HTTP refusals in the gateway (the library's default is the
/// handshake).
fn http_refusals() -> RefuseIn {
    RefuseIn::Http
}

impl RawListenerTls {
    fn check(self) -> Result<ListenerTls, String> {
        let asks = self.client_auth != ClientAuth::None;
        if asks && self.client_ca.0.is_empty() {
            let mode = self.client_auth;
            return Err(format!(
                "client_auth: {mode} needs client_ca: the CA bundle(s) that issue client certificates"
            ));
        }
        if !asks && !self.client_ca.0.is_empty() {
            return Err(
                "client_ca is set but client_auth is none: set client_auth to optional or required"
                    .into(),
            );
        }
        if !asks && !self.crl.0.is_empty() {
            return Err(
                "crl is set but client_auth is none: CRLs only apply to client certificates".into(),
            );
        }
        let files = TlsFiles {
            cert: self.cert.0,
            key: self.key.0,
            client_auth: self.client_auth,
            client_ca: self.client_ca.0.into_iter().map(|c| c.0).collect(),
            crl: self.crl.0.into_iter().map(|c| c.0).collect(),
            crl_scope: self.crl_scope,
            allow_unknown_revocation: self.allow_unknown_revocation,
            refuse_in: self.refuse_in,
        };
        modgate_identity::tls::validate(&files).map_err(|e| e.to_string())?;
        Ok(ListenerTls {
            files,
            watch: self.watch.map(|w| w.0),
        })
    }
}

impl<'de> Deserialize<'de> for ListenerTls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Checked inside the visitor, so an error is reported at `tls:` itself.
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ListenerTls;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("{ cert, key, client_auth, client_ca, crl, ... }")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ListenerTls, A::Error> {
                let raw = RawListenerTls::deserialize(de::value::MapAccessDeserializer::new(map))?;
                raw.check().map_err(de::Error::custom)
            }
        }
        d.deserialize_map(V)
    }
}

/// A CIDR block such as `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, PartialEq)]
pub struct CidrValue(pub Cidr);

impl<'de> Deserialize<'de> for CidrValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a CIDR block such as 10.0.0.0/8", |s| {
            Cidr::parse_canonical(s)
                .map(CidrValue)
                .map_err(|e| e.to_string())
        })
    }
}

/// The credential files for basic auth (`.netrc`) and bearer tokens.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `name:bcrypt-or-argon2-hash[:group,...]` per line.
    pub users_file: Option<ExistingFile>,
    /// `name:sha256:<hex>[:group,...]` per line.
    pub tokens_file: Option<ExistingFile>,
}

impl AuthConfig {
    /// Loads the files (also done at start-up and on SIGHUP).
    pub fn load(&self) -> Result<modgate_identity::Authenticator, String> {
        modgate_identity::Authenticator::load(
            self.users_file.as_ref().map(|f| f.0.as_path()),
            self.tokens_file.as_ref().map(|f| f.0.as_path()),
        )
        .map_err(|e| e.to_string())
    }
}

/// Where audit records go.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum AuditOutput {
    #[default]
    Stdout,
    File(PathBuf),
    Off,
}

impl<'de> Deserialize<'de> for AuditOutput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "stdout, off or a file path", |s| {
            Ok(match s {
                "stdout" | "-" => AuditOutput::Stdout,
                "off" => AuditOutput::Off,
                "" => return Err("audit output must not be empty".into()),
                path => AuditOutput::File(resolve_path(path)),
            })
        })
    }
}

/// `audit:` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `stdout` (default), `off`, or a file (reopened on SIGHUP, for logrotate).
    pub output: AuditOutput,
    /// What happens to requests while records cannot be written (a full disk).
    pub fail_mode: AuditFailMode,
}

/// `audit.fail_mode`: serve and lose the records (`open`, the default: an audit disk that
/// fills must not stop `go` builds), or refuse with 503 what cannot be audited (`closed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditFailMode {
    #[default]
    Open,
    Closed,
}

impl AuditConfig {
    /// The audit sink these settings name.
    pub fn sink(&self) -> modgate_telemetry::AuditSinkConfig {
        use modgate_telemetry::AuditSinkConfig;
        match &self.output {
            AuditOutput::Stdout => AuditSinkConfig::Stdout,
            AuditOutput::File(p) => AuditSinkConfig::File(p.clone()),
            AuditOutput::Off => AuditSinkConfig::Off,
        }
    }
}

/// `telemetry:` section; the standard `OTEL_EXPORTER_OTLP_*` variables fill what is not set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub otlp_endpoint: Option<String>,
    #[serde(deserialize_with = "parsed_some")]
    pub otlp_protocol: Option<OtlpProtocol>,
    pub service_name: String,
    /// Fraction of requests that get a server span (deny spans are always sent).
    pub sample_ratio: f64,
    pub timeout: DurationValue,
}

impl TelemetryConfig {
    /// The span exporter's settings (unset fields fall back to `OTEL_EXPORTER_OTLP_*`).
    pub fn otel(&self) -> modgate_telemetry::OtelConfig {
        modgate_telemetry::OtelConfig {
            endpoint: self.otlp_endpoint.clone(),
            protocol: self.otlp_protocol,
            service_name: self.service_name.clone(),
            sample_ratio: self.sample_ratio,
            timeout: self.timeout.0,
            headers: Vec::new(),
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            otlp_protocol: None,
            service_name: "modgate".into(),
            sample_ratio: 0.0,
            timeout: DurationValue(Duration::from_secs(5)),
        }
    }
}
