//! Client-certificate headers: the values modgate sends upstream about the TLS peer (in the
//! formats nginx uses, so upstreams written for nginx keep working) and the parsing of the same
//! headers when a trusted front proxy forwards them to modgate.
//!
//! - [`escaped_pem`] is nginx's `$ssl_client_escaped_cert`: the PEM, percent-encoded.
//! - [`base64_der`] is the single-line base64 DER form (Envoy/Traefik style).
//! - [`Verify`] is nginx's `$ssl_client_verify`: `SUCCESS`, `NONE` or `FAILED:reason`.
//! - [`sans_header`] lists the subject alternative names as `DNS:x, email:y, URI:z, IP:w`.
//! - [`parse_forwarded_cert`] reads either encoding back into DER.

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

use crate::cert::{CertError, CertIdentity};

/// Forwarded header values longer than this are refused before decoding.
pub const MAX_FORWARDED_CERT_LEN: usize = 64 * 1024;

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// Standard alphabet, padding optional when decoding.
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// URL-safe alphabet, padding optional when decoding.
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The certificate as PEM (64-column base64 lines, `\n` line ends, final newline), then
/// percent-encoded like nginx's `$ssl_client_escaped_cert` (`ngx_escape_uri` with
/// `NGX_ESCAPE_URI_COMPONENT`): every byte except `A-Z a-z 0-9 - . _ ~` becomes `%XX` with
/// uppercase hex.
pub fn escaped_pem(der: &[u8]) -> String {
    percent_encode(&pem(der))
}

/// The certificate as PEM text (not escaped).
pub fn pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.push_str(PEM_BEGIN);
    out.push('\n');
    for line in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(PEM_END);
    out.push('\n');
    out
}

/// The certificate's DER as one line of standard base64 (with padding).
pub fn base64_der(der: &[u8]) -> String {
    STANDARD.encode(der)
}

fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        }
    }
    out
}

fn percent_decode(s: &str) -> Result<Vec<u8>, CertError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Exactly two hex digits: from_str_radix alone would also take "+A".
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| CertError::Forwarded(format!("bad percent-escape at byte {i}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Decodes a client certificate forwarded by a front proxy: percent-encoded PEM (nginx's
/// `$ssl_client_escaped_cert`, Envoy, AWS ALB), plain PEM (newlines possibly replaced by spaces
/// or tabs), or base64 DER (standard or URL-safe alphabet, padding optional). When the PEM holds
/// a chain, the first certificate (the leaf) is returned. The result is checked to parse as
/// X.509.
///
/// Only call this for requests from a trusted front proxy: the header is just a claim.
pub fn parse_forwarded_cert(value: &str) -> Result<Vec<u8>, CertError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(CertError::Forwarded("empty value".into()));
    }
    if value.len() > MAX_FORWARDED_CERT_LEN {
        return Err(CertError::Forwarded(format!(
            "value is {} bytes, more than the {MAX_FORWARDED_CERT_LEN} allowed",
            value.len()
        )));
    }
    // Envoy's XFCC-style `Cert="..."` values are quoted.
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    let decoded;
    let text: &str = if value.contains('%') {
        decoded = percent_decode(value)?;
        std::str::from_utf8(&decoded)
            .map_err(|_| CertError::Forwarded("percent-decoded value is not text".into()))?
    } else {
        value
    };
    let der = if text.contains("-----BEGIN") {
        pem_first_cert(text)?
    } else {
        decode_base64_der(text)?
    };
    let (rest, _) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| CertError::Forwarded(format!("not an X.509 certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(CertError::Forwarded(format!(
            "{} bytes of trailing data after the certificate",
            rest.len()
        )));
    }
    Ok(der)
}

fn decode_base64_der(text: &str) -> Result<Vec<u8>, CertError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD_LENIENT
        .decode(&compact)
        .or_else(|_| URL_SAFE_LENIENT.decode(&compact))
        .or_else(|_| URL_SAFE.decode(&compact))
        .map_err(|_| {
            CertError::Forwarded("neither PEM nor base64 DER (base64 does not decode)".into())
        })
}

fn pem_first_cert(text: &str) -> Result<Vec<u8>, CertError> {
    let begin = text
        .find("-----BEGIN")
        .ok_or_else(|| CertError::Forwarded("no PEM BEGIN line".into()))?;
    let after_begin = &text[begin + "-----BEGIN".len()..];
    let label_end = after_begin
        .find("-----")
        .ok_or_else(|| CertError::Forwarded("unterminated PEM BEGIN line".into()))?;
    // Some proxies form-encode spaces as '+': "-----BEGIN+CERTIFICATE-----".
    let label = after_begin[..label_end].trim().replace('+', " ");
    if label.trim() != "CERTIFICATE" {
        return Err(CertError::Forwarded(format!(
            "PEM block is {:?}, not CERTIFICATE",
            label.chars().take(40).collect::<String>()
        )));
    }
    let body_and_rest = &after_begin[label_end + "-----".len()..];
    let end = body_and_rest
        .find("-----END")
        .ok_or_else(|| CertError::Forwarded("no PEM END line".into()))?;
    let body: String = body_and_rest[..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD_LENIENT
        .decode(&body)
        .map_err(|_| CertError::Forwarded("PEM body is not valid base64".into()))
}

/// Outcome of client-certificate verification as reported upstream (nginx's
/// `$ssl_client_verify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// A certificate was presented and verified.
    Success,
    /// No certificate was presented.
    None,
    /// A certificate was presented and rejected, with the reason.
    Failed(String),
}

impl Verify {
    /// `SUCCESS`, `NONE` or `FAILED:<reason>`; the reason is reduced to printable ASCII so the
    /// value is always a valid header value.
    pub fn header_value(&self) -> String {
        match self {
            Verify::Success => "SUCCESS".into(),
            Verify::None => "NONE".into(),
            Verify::Failed(reason) => {
                let clean: String = reason
                    .chars()
                    .take(200)
                    .map(|c| {
                        if c.is_ascii_graphic() || c == ' ' {
                            c
                        } else {
                            '?'
                        }
                    })
                    .collect();
                format!("FAILED:{clean}")
            }
        }
    }
}

/// The subject alternative names as one header value: `DNS:a, DNS:b, email:x, URI:y, IP:z`
/// (grouped by type in that order). Characters outside printable ASCII are written `\xHH`
/// per UTF-8 byte, so the value is always a valid header value.
pub fn sans_header(id: &CertIdentity) -> String {
    let groups: [(&str, &Vec<String>); 4] = [
        ("DNS", &id.san_dns),
        ("email", &id.san_email),
        ("URI", &id.san_uri),
        ("IP", &id.san_ip),
    ];
    let mut parts = Vec::new();
    for (label, values) in groups {
        for v in values {
            parts.push(format!("{label}:{}", header_safe(v)));
        }
    }
    parts.join(", ")
}

fn header_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_graphic() || b == b' ' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[path = "forward_props.rs"]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert() -> Vec<u8> {
        let mut p = CertificateParams::new(vec!["a.example".to_string()]).expect("params");
        p.distinguished_name.push(DnType::CommonName, "alice");
        p.subject_alt_names.extend([
            SanType::Rfc822Name("a@example.com".try_into().expect("email")),
            SanType::URI("spiffe://td/a".try_into().expect("uri")),
            SanType::IpAddress("127.0.0.1".parse().expect("ip")),
            SanType::IpAddress("::1".parse().expect("ip")),
        ]);
        let key = KeyPair::generate().expect("key");
        p.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn pem_layout() {
        let der: Vec<u8> = (0..=255u8).collect();
        let pem = pem(&der);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], PEM_BEGIN);
        assert_eq!(*lines.last().expect("end"), PEM_END);
        assert!(pem.ends_with("-----\n"));
        for l in &lines[1..lines.len() - 2] {
            assert_eq!(l.len(), 64);
        }
        assert!(lines[lines.len() - 2].len() <= 64);
        let body: String = lines[1..lines.len() - 1].concat();
        assert_eq!(STANDARD.decode(body).expect("b64"), der);
    }

    #[test]
    fn escaping_matches_nginx() {
        // What nginx sends for a PEM: only unreserved characters stay.
        assert_eq!(
            percent_encode("-----BEGIN CERTIFICATE-----\nAb+/9=\n"),
            "-----BEGIN%20CERTIFICATE-----%0AAb%2B%2F9%3D%0A"
        );
        assert_eq!(percent_encode("a.b_c~d"), "a.b_c~d");
        assert_eq!(
            percent_encode("!\"#$&'()*,:;<>?@[\\]^`{|}"),
            "%21%22%23%24%26%27%28%29%2A%2C%3A%3B%3C%3E%3F%40%5B%5C%5D%5E%60%7B%7C%7D"
        );
        let der = cert();
        let escaped = escaped_pem(&der);
        assert!(escaped.starts_with("-----BEGIN%20CERTIFICATE-----%0A"));
        assert!(escaped.ends_with("-----END%20CERTIFICATE-----%0A"));
        assert!(escaped
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
    }

    #[test]
    fn round_trips() {
        let der = cert();
        assert_eq!(
            parse_forwarded_cert(&escaped_pem(&der)).expect("escaped"),
            der
        );
        assert_eq!(parse_forwarded_cert(&base64_der(&der)).expect("b64"), der);
        assert_eq!(parse_forwarded_cert(&pem(&der)).expect("pem"), der);
        // Newlines flattened to spaces (some proxies), quoted (Envoy), URL-safe base64, no padding.
        let flat = pem(&der).replace('\n', " ");
        assert_eq!(parse_forwarded_cert(&flat).expect("flat"), der);
        let quoted = format!("\"{}\"", escaped_pem(&der));
        assert_eq!(parse_forwarded_cert(&quoted).expect("quoted"), der);
        let url = URL_SAFE.encode(&der);
        assert_eq!(parse_forwarded_cert(&url).expect("url"), der);
        let unpadded = base64_der(&der).trim_end_matches('=').to_string();
        assert_eq!(parse_forwarded_cert(&unpadded).expect("unpadded"), der);
        // '+' for spaces in the markers (form encoding).
        let plus = escaped_pem(&der).replace("%20", "+");
        assert_eq!(parse_forwarded_cert(&plus).expect("plus"), der);
        // A chain: the first certificate is the leaf.
        let other = cert();
        let chain = format!("{}{}", pem(&der), pem(&other));
        assert_eq!(parse_forwarded_cert(&chain).expect("chain"), der);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "   ",
            "%zz",
            "%4",
            "not base64 !!",
            "aGVsbG8=",
            "-----BEGIN CERTIFICATE-----\nAAAA",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "%FF%FE",
        ] {
            let e = parse_forwarded_cert(bad).expect_err(bad);
            assert!(
                e.to_string()
                    .starts_with("forwarded client certificate header:"),
                "{e}"
            );
        }
        let huge = "A".repeat(MAX_FORWARDED_CERT_LEN + 1);
        assert!(parse_forwarded_cert(&huge).is_err());
        let mut der = cert();
        der.push(0);
        assert!(parse_forwarded_cert(&base64_der(&der))
            .expect_err("trailing")
            .to_string()
            .contains("trailing"));
    }

    #[test]
    fn percent_escapes_need_two_hex_digits() {
        // Regression (found by forward_props::percent_escapes): "%+A" was decoded as 0x0A.
        for bad in ["%+A", "%+0", "%-1", "% A", "%A", "%"] {
            let e = percent_decode(bad).expect_err(bad);
            assert!(
                e.to_string().contains("bad percent-escape at byte 0"),
                "{e}"
            );
        }
        assert_eq!(percent_decode("%0a%2B+").expect("valid"), b"\n++");
        let der = cert();
        let sneaky = escaped_pem(&der).replace("%0A", "%+A");
        assert!(parse_forwarded_cert(&sneaky).is_err());
    }

    #[test]
    fn verify_header_values() {
        assert_eq!(Verify::Success.header_value(), "SUCCESS");
        assert_eq!(Verify::None.header_value(), "NONE");
        assert_eq!(
            Verify::Failed("certificate expired".into()).header_value(),
            "FAILED:certificate expired"
        );
        assert_eq!(
            Verify::Failed("bad\r\nX-Injected: 1".into()).header_value(),
            "FAILED:bad??X-Injected: 1"
        );
    }

    #[test]
    fn sans_listing() {
        let id = crate::cert::cert_from_der(&cert()).expect("identity");
        assert_eq!(
            sans_header(&id),
            "DNS:a.example, email:a@example.com, URI:spiffe://td/a, IP:127.0.0.1, IP:::1"
        );
        let mut odd = id.clone();
        odd.san_dns = vec!["x\r\ny".into(), "é".into()];
        odd.san_email.clear();
        odd.san_uri.clear();
        odd.san_ip.clear();
        assert_eq!(sans_header(&odd), "DNS:x\\x0D\\x0Ay, DNS:\\xC3\\xA9");
        odd.san_dns.clear();
        assert_eq!(sans_header(&odd), "");
    }
}
