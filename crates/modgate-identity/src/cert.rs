//! A client certificate turned into the identity fields that policy, logs and upstream headers
//! use: subject and issuer as RFC 4514 strings, CN / O / OU, the subject alternative names, a
//! SPIFFE ID, serial number, SHA-256 fingerprint and validity ([`cert_from_der`]). The fields
//! are a [`CertIdentity`], plain data defined once in `modgate-policy` (which matches rules on
//! them and does no I/O) and re-exported here.
//!
//! The certificate has normally been verified by rustls already; this module only reads it. It
//! never panics on malformed input: every problem is a [`CertError`].

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use modgate_policy::CertIdentity;
use sha2::{Digest, Sha256};
use x509_parser::der_parser::asn1_rs::{Any, Class, Tag};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// Why a certificate (or a forwarded certificate header) could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The DER does not parse as an X.509 certificate.
    #[error("certificate does not parse as X.509: {0}")]
    Parse(String),
    /// Bytes follow the certificate's DER.
    #[error("certificate is followed by {0} bytes of trailing data")]
    TrailingData(usize),
    /// An extension that identity depends on is malformed.
    #[error("certificate extension {what} is malformed: {reason}")]
    Extension {
        /// Which extension.
        what: &'static str,
        /// Parser message.
        reason: String,
    },
    /// A distinguished name does not parse.
    #[error("distinguished name does not parse: {0}")]
    Name(String),
    /// A forwarded certificate header could not be decoded.
    #[error("forwarded client certificate header: {0}")]
    Forwarded(String),
}

/// Reads the identity fields from one DER certificate.
pub fn cert_from_der(der: &[u8]) -> Result<CertIdentity, CertError> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CertError::Parse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertError::TrailingData(rest.len()));
    }
    let subject = cert.subject();
    let subject_dn = format_name(subject);
    let issuer_dn = format_name(cert.issuer());

    let mut cn = None;
    let mut o = Vec::new();
    let mut ou = Vec::new();
    for attr in subject.iter_attributes() {
        let oid = attr.attr_type().to_id_string();
        if !matches!(oid.as_str(), OID_CN | OID_O | OID_OU) {
            continue;
        }
        let Some(value) = attr_text(attr) else {
            continue;
        };
        match oid.as_str() {
            OID_CN => cn = Some(value),
            OID_O => o.push(value),
            _ => ou.push(value),
        }
    }

    let mut san_dns = Vec::new();
    let mut san_email = Vec::new();
    let mut san_uri = Vec::new();
    let mut san_ip = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertError::Extension {
            what: "subjectAltName",
            reason: e.to_string(),
        })?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(s) => san_dns.push((*s).to_string()),
                GeneralName::RFC822Name(s) => san_email.push((*s).to_string()),
                GeneralName::URI(s) => san_uri.push((*s).to_string()),
                GeneralName::IPAddress(b) => san_ip.push(ip_text(b)),
                _ => {}
            }
        }
    }
    let mut spiffe_ids = san_uri.iter().filter(|u| is_spiffe(u));
    let spiffe = match (spiffe_ids.next(), spiffe_ids.next()) {
        (Some(one), None) => Some(one.clone()),
        _ => None,
    };

    let serial_hex = serial_hex(cert.raw_serial());
    let fingerprint_sha256 = hex_lower(&Sha256::digest(der));
    let validity = cert.validity();
    Ok(CertIdentity {
        subject_dn,
        issuer_dn,
        cn,
        o,
        ou,
        san_dns,
        san_email,
        san_uri,
        san_ip,
        spiffe,
        serial_hex,
        fingerprint_sha256,
        not_after_unix: validity.not_after.timestamp(),
        not_before_unix: validity.not_before.timestamp(),
    })
}

/// Formats a DER-encoded X.501 `Name` (a SEQUENCE of RDNs, as in a certificate's subject or a
/// TLS `certificate_authorities` hint) as an RFC 4514 string.
pub fn dn_from_der(name_der: &[u8]) -> Result<String, CertError> {
    let (rest, name) = X509Name::from_der(name_der).map_err(|e| CertError::Name(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertError::Name(format!(
            "{} bytes of trailing data",
            rest.len()
        )));
    }
    Ok(format_name(&name))
}

const OID_CN: &str = "2.5.4.3";
const OID_O: &str = "2.5.4.10";
const OID_OU: &str = "2.5.4.11";

/// Attribute type names printed in DN strings: RFC 4514's list plus the names OpenSSL (and so
/// nginx's `$ssl_client_s_dn`) uses for common others. Anything else prints as a dotted OID.
const SHORT_NAMES: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.6", "C"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("2.5.4.5", "serialNumber"),
    ("2.5.4.4", "SN"),
    ("2.5.4.42", "GN"),
    ("2.5.4.12", "title"),
    ("2.5.4.43", "initials"),
    ("2.5.4.44", "generationQualifier"),
    ("2.5.4.46", "dnQualifier"),
    ("2.5.4.65", "pseudonym"),
    ("2.5.4.17", "postalCode"),
    ("2.5.4.15", "businessCategory"),
    ("1.2.840.113549.1.9.1", "emailAddress"),
];

fn format_name(name: &X509Name<'_>) -> String {
    let rdns: Vec<_> = name.iter_rdn().collect();
    let mut out = String::new();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attr.attr_type().to_id_string();
            match SHORT_NAMES.iter().find(|(o, _)| *o == oid) {
                Some((_, short)) => out.push_str(short),
                None => out.push_str(&oid),
            }
            out.push('=');
            match attr_text(attr) {
                Some(text) => escape_value(&text, &mut out),
                None => {
                    out.push('#');
                    out.push_str(&hex_upper(&der_of(attr.attr_value())));
                }
            }
        }
    }
    out
}

/// The attribute value as text when it is a character string type that decodes cleanly.
fn attr_text(attr: &AttributeTypeAndValue<'_>) -> Option<String> {
    let value = attr.attr_value();
    if value.class() != Class::Universal || value.header.is_constructed() {
        return None;
    }
    let data = value.data;
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_string),
        // T.61 in practice carries Latin-1.
        Tag::T61String => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            if data.len() % 2 != 0 {
                return None;
            }
            let units = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        Tag::UniversalString => {
            if data.len() % 4 != 0 {
                return None;
            }
            data.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect::<Option<String>>()
        }
        _ => None,
    }
}

/// Re-encodes an attribute value (tag, length, contents) for the `#hex` form of RFC 4514.
fn der_of(value: &Any<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.data.len() + 6);
    let class_bits: u8 = match value.class() {
        Class::Universal => 0x00,
        Class::Application => 0x40,
        Class::ContextSpecific => 0x80,
        Class::Private => 0xC0,
    };
    let constructed: u8 = if value.header.is_constructed() {
        0x20
    } else {
        0
    };
    let tag = value.tag().0;
    if tag < 31 {
        // `tag < 31` so the cast keeps every bit.
        out.push(class_bits | constructed | (tag as u8));
    } else {
        out.push(class_bits | constructed | 0x1F);
        let mut groups = Vec::new();
        let mut t = tag;
        loop {
            groups.push((t & 0x7F) as u8);
            t >>= 7;
            if t == 0 {
                break;
            }
        }
        for (i, g) in groups.iter().rev().enumerate() {
            out.push(if i + 1 < groups.len() { g | 0x80 } else { *g });
        }
    }
    let len = value.data.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let significant = &bytes[skip..];
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(value.data);
    out
}

/// RFC 4514 section 2.4 escaping, plus `\HH` for control characters so the string is safe to log
/// and to put in a header.
fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02X}");
                }
            }
            c => out.push(c),
        }
    }
}

fn is_spiffe(uri: &str) -> bool {
    uri.len() > "spiffe://".len()
        && uri
            .get(.."spiffe://".len())
            .is_some_and(|p| p.eq_ignore_ascii_case("spiffe://"))
}

fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => {
            let mut a = [0u8; 4];
            a.copy_from_slice(bytes);
            IpAddr::V4(Ipv4Addr::from(a)).to_string()
        }
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(bytes);
            IpAddr::V6(Ipv6Addr::from(a)).to_string()
        }
        // Not a valid SAN address; keep it visible rather than dropping it.
        _ => format!("#{}", hex_upper(bytes)),
    }
}

fn serial_hex(raw: &[u8]) -> String {
    let skip = raw
        .iter()
        .take_while(|&&b| b == 0)
        .count()
        .min(raw.len().saturating_sub(1));
    hex_upper(&raw[skip..])
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn hex_upper(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02X}");
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, DnValue, IsCa, Issuer, KeyPair, SanType, SerialNumber};

    fn self_signed(params: CertificateParams) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    fn base_params() -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name = rcgen::DistinguishedName::new();
        p
    }

    #[test]
    fn every_field() {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = base_params();
        ca.distinguished_name.push(DnType::CommonName, "Test Root");
        ca.distinguished_name.push(DnType::OrganizationName, "Corp");
        ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = Issuer::new(ca, ca_key);

        let mut p = base_params();
        p.distinguished_name.push(DnType::CountryName, "US");
        p.distinguished_name.push(DnType::OrganizationName, "Corp");
        p.distinguished_name
            .push(DnType::OrganizationalUnitName, "dev");
        // rcgen keeps one value per type; a custom type with the OU OID adds a second OU.
        p.distinguished_name
            .push(DnType::CustomDnType(vec![2, 5, 4, 11]), "ops");
        p.distinguished_name.push(DnType::CommonName, "alice");
        p.subject_alt_names = vec![
            SanType::DnsName("alice.example".try_into().expect("dns")),
            SanType::DnsName("*.alice.example".try_into().expect("dns")),
            SanType::Rfc822Name("alice@example.com".try_into().expect("email")),
            SanType::URI(
                "spiffe://example.org/ns/dev/sa/alice"
                    .try_into()
                    .expect("uri"),
            ),
            SanType::URI("https://alice.example/".try_into().expect("uri")),
            SanType::IpAddress("10.1.2.3".parse().expect("ip")),
            SanType::IpAddress("2001:db8::1".parse().expect("ip")),
        ];
        p.serial_number = Some(SerialNumber::from_slice(&[0x00, 0x8F, 0x01, 0xAB]));
        p.not_before = rcgen::date_time_ymd(2024, 1, 2);
        p.not_after = rcgen::date_time_ymd(2030, 6, 7);
        let key = KeyPair::generate().expect("key");
        let der = p.signed_by(&key, &issuer).expect("cert").der().to_vec();

        let id = cert_from_der(&der).expect("identity");
        assert_eq!(id.subject_dn, "CN=alice,OU=ops,OU=dev,O=Corp,C=US");
        assert_eq!(id.issuer_dn, "O=Corp,CN=Test Root");
        assert_eq!(id.cn.as_deref(), Some("alice"));
        assert_eq!(id.o, vec!["Corp"]);
        assert_eq!(id.ou, vec!["dev", "ops"]);
        assert_eq!(id.san_dns, vec!["alice.example", "*.alice.example"]);
        assert_eq!(id.san_email, vec!["alice@example.com"]);
        assert_eq!(
            id.san_uri,
            vec![
                "spiffe://example.org/ns/dev/sa/alice",
                "https://alice.example/"
            ]
        );
        assert_eq!(id.san_ip, vec!["10.1.2.3", "2001:db8::1"]);
        assert_eq!(
            id.spiffe.as_deref(),
            Some("spiffe://example.org/ns/dev/sa/alice")
        );
        assert_eq!(id.serial_hex, "8F01AB");
        assert_eq!(id.fingerprint_sha256, hex_lower(&Sha256::digest(&der)));
        assert_eq!(id.fingerprint_sha256.len(), 64);
        assert_eq!(id.not_before_unix, 1_704_153_600);
        assert_eq!(id.not_after_unix, 1_907_020_800);
        assert_eq!(id.display_name(), "spiffe://example.org/ns/dev/sa/alice");
    }

    #[test]
    fn rfc4514_escaping() {
        let mut p = base_params();
        p.distinguished_name
            .push(DnType::OrganizationName, "#hash lead");
        p.distinguished_name
            .push(DnType::OrganizationalUnitName, " space both ");
        p.distinguished_name
            .push(DnType::CommonName, r#"a,b+c"d\e<f>g;h=i"#);
        let id = cert_from_der(&self_signed(p)).expect("identity");
        assert_eq!(
            id.subject_dn,
            r#"CN=a\,b\+c\"d\\e\<f\>g\;h=i,OU=\ space both\ ,O=\#hash lead"#
        );
        // The raw fields are not escaped.
        assert_eq!(id.cn.as_deref(), Some(r#"a,b+c"d\e<f>g;h=i"#));
        assert_eq!(id.ou, vec![" space both "]);
        assert_eq!(id.display_name(), r#"a,b+c"d\e<f>g;h=i"#);
        assert_eq!(id.spiffe, None);
    }

    #[test]
    fn other_string_types_and_unknown_attributes() {
        let mut p = base_params();
        p.distinguished_name.push(
            DnType::CommonName,
            DnValue::BmpString("Zoë".try_into().expect("bmp")),
        );
        p.distinguished_name.push(
            DnType::OrganizationName,
            DnValue::PrintableString("Print Co".try_into().expect("printable")),
        );
        p.distinguished_name.push(
            DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
            "a@b.c",
        );
        p.distinguished_name
            .push(DnType::CustomDnType(vec![1, 3, 6, 1, 4, 1, 99999, 1]), "x");
        let id = cert_from_der(&self_signed(p)).expect("identity");
        assert_eq!(
            id.subject_dn,
            "1.3.6.1.4.1.99999.1=x,emailAddress=a@b.c,O=Print Co,CN=Zoë"
        );
        assert_eq!(id.cn.as_deref(), Some("Zoë"));
    }

    /// DER builder for hand-made names (rcgen cannot make multi-valued RDNs).
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        assert!(content.len() < 128);
        let mut v = vec![tag, content.len() as u8];
        v.extend_from_slice(content);
        v
    }

    fn ava(oid: &[u8], value: Vec<u8>) -> Vec<u8> {
        let mut c = tlv(0x06, oid);
        c.extend(value);
        tlv(0x30, &c)
    }

    #[test]
    fn multi_valued_rdn_non_string_values_and_controls() {
        const CN: &[u8] = &[0x55, 0x04, 0x03];
        const OU: &[u8] = &[0x55, 0x04, 0x0B];
        const UID: &[u8] = &[0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x01];
        let mut rdn1 = ava(OU, tlv(0x0C, b"dev"));
        rdn1.extend(ava(UID, tlv(0x0C, b"42")));
        let rdn2 = ava(CN, tlv(0x04, b"Hi")); // OCTET STRING: not text
        let rdn3 = ava(CN, tlv(0x0C, b"new\nline"));
        let mut seq = tlv(0x31, &rdn1);
        seq.extend(tlv(0x31, &rdn2));
        seq.extend(tlv(0x31, &rdn3));
        let name = tlv(0x30, &seq);
        assert_eq!(
            dn_from_der(&name).expect("dn"),
            "CN=new\\0Aline,CN=#04024869,OU=dev+UID=42"
        );
        assert_eq!(dn_from_der(&tlv(0x30, &[])).expect("empty"), "");
        assert!(dn_from_der(b"\x30\x05\x31").is_err());
        let mut trailing = name.clone();
        trailing.push(0);
        assert!(dn_from_der(&trailing).is_err());
    }

    #[test]
    fn display_name_fallbacks() {
        let mut p = base_params();
        p.distinguished_name
            .push(DnType::OrganizationName, "Only O");
        let id = cert_from_der(&self_signed(p)).expect("identity");
        assert_eq!(id.cn, None);
        assert_eq!(id.display_name(), "O=Only O");

        let p = base_params();
        let id = cert_from_der(&self_signed(p)).expect("identity");
        assert_eq!(id.subject_dn, "");
        assert_eq!(
            id.display_name(),
            format!("sha256:{}", &id.fingerprint_sha256[..16])
        );
    }

    #[test]
    fn two_spiffe_ids_are_ambiguous() {
        let mut p = base_params();
        p.distinguished_name.push(DnType::CommonName, "svc");
        p.subject_alt_names = vec![
            SanType::URI("spiffe://a/x".try_into().expect("uri")),
            SanType::URI("SPIFFE://a/y".try_into().expect("uri")),
        ];
        let id = cert_from_der(&self_signed(p)).expect("identity");
        assert_eq!(id.spiffe, None);
        assert_eq!(id.display_name(), "svc");
        assert_eq!(id.san_uri.len(), 2);
    }

    #[test]
    fn serial_formatting() {
        assert_eq!(serial_hex(&[0x00, 0x80]), "80");
        assert_eq!(serial_hex(&[0x0A, 0x00]), "0A00");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[]), "");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(
            cert_from_der(b"not a cert"),
            Err(CertError::Parse(_))
        ));
        assert!(cert_from_der(&[]).is_err());
        let mut p = base_params();
        p.distinguished_name.push(DnType::CommonName, "x");
        let mut der = self_signed(p);
        der.extend_from_slice(b"junk");
        assert_eq!(cert_from_der(&der), Err(CertError::TrailingData(4)));
        // Every truncation fails cleanly.
        der.truncate(der.len() - 4);
        for n in 0..der.len() {
            assert!(cert_from_der(&der[..n]).is_err());
        }
    }
}
