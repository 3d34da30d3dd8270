//! The identity fields of a client certificate (the TLS peer's, or one a trusted proxy
//! forwarded), as plain data: what rules match on, what logs and upstream headers show. Reading
//! them out of a certificate's DER is `modgate-identity`'s job (`cert_from_der`); this crate
//! only holds and compares them.

/// Who a certificate names. Strings are as found in the certificate, except the DN strings,
/// which are RFC 4514 escaped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CertIdentity {
    /// Subject as an RFC 4514 string, most specific RDN first: `CN=alice,OU=dev,O=Corp`.
    pub subject_dn: String,
    /// Issuer as an RFC 4514 string.
    pub issuer_dn: String,
    /// The subject's common name (the last CN in encoding order if there are several).
    pub cn: Option<String>,
    /// Organization names, in encoding order.
    pub o: Vec<String>,
    /// Organizational unit names, in encoding order.
    pub ou: Vec<String>,
    /// DNS subject alternative names.
    pub san_dns: Vec<String>,
    /// E-mail (rfc822Name) subject alternative names.
    pub san_email: Vec<String>,
    /// URI subject alternative names (including the SPIFFE ID).
    pub san_uri: Vec<String>,
    /// IP address subject alternative names, in Rust's canonical text form (RFC 5952 for IPv6).
    pub san_ip: Vec<String>,
    /// The certificate's SPIFFE ID: set only when exactly one URI SAN has the `spiffe://`
    /// scheme (an X.509-SVID carries exactly one; with several the identity is ambiguous and
    /// none is taken).
    pub spiffe: Option<String>,
    /// Serial number as uppercase hex without colons or sign byte (`0A1B`), as nginx prints it.
    pub serial_hex: String,
    /// Lowercase hex SHA-256 of the certificate's DER.
    pub fingerprint_sha256: String,
    /// notAfter as Unix seconds.
    pub not_after_unix: i64,
    /// notBefore as Unix seconds.
    pub not_before_unix: i64,
}

impl CertIdentity {
    /// A short name for logs: the SPIFFE ID, else the CN, else the subject DN, else
    /// `sha256:` and the first 16 hex digits of the fingerprint.
    pub fn display_name(&self) -> String {
        if let Some(id) = &self.spiffe {
            return id.clone();
        }
        if let Some(cn) = self.cn.as_ref().filter(|c| !c.is_empty()) {
            return cn.clone();
        }
        if !self.subject_dn.is_empty() {
            return self.subject_dn.clone();
        }
        let prefix: String = self.fingerprint_sha256.chars().take(16).collect();
        format!("sha256:{prefix}")
    }
}
