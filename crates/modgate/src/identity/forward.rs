//! The client-certificate and identity headers an upstream is configured to receive.

use http::HeaderName;

use super::RequestIdentity;
use crate::config::forward::{CertFormat, ForwardIdentityConfig};

/// Makes any text safe as a header value: printable ASCII is kept, everything else (controls,
/// non-ASCII) is percent-encoded.
fn header_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The client-certificate and identity headers an upstream is configured to receive.
pub fn forward_headers(
    f: &ForwardIdentityConfig,
    id: &RequestIdentity,
    roles: &[String],
) -> Vec<(HeaderName, String)> {
    use modgate_identity::forward::{base64_der, escaped_pem, sans_header};
    let n = &f.names;
    let mut out = Vec::new();
    let encode = |der: &[u8]| match f.cert {
        CertFormat::Off => None,
        CertFormat::EscapedPem => Some(escaped_pem(der)),
        CertFormat::Base64Der => Some(base64_der(der)),
    };
    if f.verify {
        out.push((n.verify.0.clone(), id.verify.header_value()));
    }
    if let Some(pc) = &id.cert {
        let c = &pc.identity;
        if let Some(leaf) = pc.chain.first().and_then(|d| encode(d)) {
            out.push((n.cert.0.clone(), leaf));
        }
        if f.chain && pc.chain.len() > 1 {
            let chain: Vec<String> = pc.chain[1..].iter().filter_map(|d| encode(d)).collect();
            if !chain.is_empty() {
                out.push((n.chain.0.clone(), chain.join(",")));
            }
        }
        if f.dn {
            out.push((n.dn.0.clone(), header_safe(&c.subject_dn)));
        }
        if f.sans {
            let sans = sans_header(c);
            if !sans.is_empty() {
                out.push((n.sans.0.clone(), header_safe(&sans)));
            }
        }
        if f.fingerprint {
            out.push((n.fingerprint.0.clone(), c.fingerprint_sha256.clone()));
        }
        if f.serial {
            out.push((n.serial.0.clone(), c.serial_hex.clone()));
        }
    }
    if f.identity {
        out.push((n.identity.0.clone(), header_safe(&id.label())));
    }
    if f.roles && !roles.is_empty() {
        out.push((n.roles.0.clone(), header_safe(&roles.join(","))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::header_safe;

    #[test]
    fn header_values_are_made_safe() {
        assert_eq!(header_safe("CN=a,O=B"), "CN=a,O=B");
        assert_eq!(header_safe("CN=é\n"), "CN=%C3%A9%0A");
        assert_eq!(header_safe("100%"), "100%25");
    }
}
