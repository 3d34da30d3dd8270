//! Property tests of `forward.rs`: a real certificate (made with rcgen: several key types,
//! subjects, SANs and serials, so DER lengths and base64 padding vary) encoded in every format a
//! front proxy may use decodes back to the same DER; changed, cut or extended DER is refused
//! or returned exactly as sent, never turned into something else; arbitrary bytes and strings
//! never panic and are refused; percent-encoding round-trips and its decoder takes only
//! well-formed escapes; the header values modgate writes are always valid header text.

use std::sync::OnceLock;

use super::*;
use proptest::prelude::*;
use rcgen::{CertificateParams, DnType, KeyPair, SerialNumber};

/// A few key pairs of different types, made once: signing is cheap, key generation less so.
fn keys() -> &'static [KeyPair] {
    static KEYS: OnceLock<Vec<KeyPair>> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ]
        .into_iter()
        .map(|alg| KeyPair::generate_for(alg).expect("key pair"))
        .collect()
    })
}

/// The DER of a self-signed certificate with a random subject, DNS names and serial.
fn certificate() -> impl Strategy<Value = Vec<u8>> {
    (
        0..keys().len(),
        "\\PC{1,64}",
        prop::collection::vec("[a-z0-9-]{1,20}(\\.[a-z0-9-]{1,10}){0,2}", 0..4),
        (1u8..0x80, prop::collection::vec(any::<u8>(), 0..19)),
    )
        .prop_map(|(key, cn, dns, (first, serial))| {
            let mut p = CertificateParams::new(dns).expect("params");
            p.distinguished_name.push(DnType::CommonName, cn);
            let mut serial_bytes = vec![first];
            serial_bytes.extend(serial);
            p.serial_number = Some(SerialNumber::from_slice(&serial_bytes));
            p.self_signed(&keys()[key])
                .expect("self-signed certificate")
                .der()
                .to_vec()
        })
}

/// Every way a front proxy may write the certificate, with a name for failure messages.
fn encodings(der: &[u8], other: &[u8]) -> Vec<(&'static str, String)> {
    let pem_text = pem(der);
    let escaped = escaped_pem(der);
    let b64 = base64_der(der);
    vec![
        ("escaped PEM (nginx)", escaped.clone()),
        ("PEM", pem_text.clone()),
        ("base64 DER", b64.clone()),
        ("PEM, newlines as spaces", pem_text.replace('\n', " ")),
        ("PEM, newlines as tabs", pem_text.replace('\n', "\t")),
        ("PEM, CRLF", pem_text.replace('\n', "\r\n")),
        ("quoted escaped PEM (Envoy)", format!("\"{escaped}\"")),
        ("escaped PEM, '+' for spaces", escaped.replace("%20", "+")),
        ("URL-safe base64", URL_SAFE.encode(der)),
        (
            "URL-safe base64, no padding",
            URL_SAFE.encode(der).trim_end_matches('=').to_string(),
        ),
        ("base64, no padding", b64.trim_end_matches('=').to_string()),
        (
            "base64 in 76-column lines",
            b64.as_bytes()
                .chunks(76)
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        ("surrounded by whitespace", format!(" \t{b64}\t ")),
        ("PEM chain, leaf first", format!("{pem_text}{}", pem(other))),
        (
            "escaped PEM chain, leaf first",
            format!("{escaped}{}", escaped_pem(other)),
        ),
    ]
}

/// One of the writers: DER in, header value out.
type Encoder = fn(&[u8]) -> String;

/// Whether every `%` starts a two-hex-digit escape.
fn well_formed_escapes(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            match b.get(i + 1..i + 3) {
                Some(h) if h.iter().all(u8::is_ascii_hexdigit) => i += 3,
                _ => return false,
            }
        } else {
            i += 1;
        }
    }
    true
}

/// Text made of the pieces the decoder looks for, so that random cases reach deep into it.
fn header_like_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("-----BEGIN".to_string()),
            Just("-----END".to_string()),
            Just("-----".to_string()),
            Just(" CERTIFICATE".to_string()),
            Just("+CERTIFICATE".to_string()),
            Just("%20".to_string()),
            Just("%0A".to_string()),
            "%[0-9A-Fa-fg+ -]{0,2}",
            "[A-Za-z0-9+/=_-]{1,16}",
            Just("MII".to_string()),
            Just("\"".to_string()),
            "[ \t\r\n]",
            "\\PC",
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

/// What an accepted value must be: one whole X.509 certificate, which reads back as itself.
fn check_accepted(der: &[u8]) -> Result<(), TestCaseError> {
    let (rest, _) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TestCaseError::fail(format!("accepted DER does not parse: {e}")))?;
    prop_assert!(rest.is_empty(), "accepted DER has trailing bytes");
    let again = parse_forwarded_cert(&base64_der(der)).ok();
    prop_assert_eq!(again.as_deref(), Some(der));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every supported encoding of a real certificate decodes to the same DER.
    #[test]
    fn every_format_round_trips(der in certificate(), other in certificate()) {
        for (format, value) in encodings(&der, &other) {
            match parse_forwarded_cert(&value) {
                Ok(got) => prop_assert!(got == der, "{}: decoded to other DER", format),
                Err(e) => prop_assert!(false, "{}: refused: {}", format, e),
            }
        }
    }

    /// A changed byte is refused or comes back exactly as sent (x509-parser does not check
    /// signatures); cut DER is refused; bytes after the certificate are refused as trailing
    /// data. In every format.
    #[test]
    fn damaged_certificates_are_refused_or_unchanged(
        der in certificate(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
        tail in prop::collection::vec(any::<u8>(), 1..8),
    ) {
        let encoders: [(&str, Encoder); 3] =
            [("escaped PEM", escaped_pem), ("PEM", pem), ("base64 DER", base64_der)];
        let mut changed = der.clone();
        changed[at.index(der.len())] ^= xor;
        let cut = &der[..at.index(der.len())];
        let mut longer = der.clone();
        longer.extend(&tail);
        for (format, encode) in encoders {
            if let Ok(got) = parse_forwarded_cert(&encode(&changed)) {
                prop_assert!(got == changed, "{}: changed DER decoded to other DER", format);
            }
            let cut_result = parse_forwarded_cert(&encode(cut));
            prop_assert!(cut_result.is_err(), "{}: cut DER accepted", format);
            let e = parse_forwarded_cert(&encode(&longer))
                .expect_err("DER with trailing bytes accepted");
            prop_assert!(e.to_string().contains("trailing"), "{}: {}", format, e);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random bytes are not a certificate: in every format, they are refused.
    #[test]
    fn random_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        for value in [escaped_pem(&bytes), pem(&bytes), base64_der(&bytes)] {
            let e = parse_forwarded_cert(&value).expect_err("random bytes accepted");
            prop_assert!(
                e.to_string().starts_with("forwarded client certificate header: "),
                "{}",
                e
            );
        }
    }

    /// No string makes the decoder panic; anything accepted is one whole certificate.
    #[test]
    fn arbitrary_text_never_panics(s in prop_oneof![header_like_text(), any::<String>()]) {
        if let Ok(der) = parse_forwarded_cert(&s) {
            check_accepted(&der)?;
        }
    }

    /// The PEM layout holds for any bytes, and escaping is nginx's: only unreserved bytes stay,
    /// and decoding the escapes gives the PEM back.
    #[test]
    fn pem_and_escaping_layout(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let text = pem(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        prop_assert_eq!(lines.first().copied(), Some(PEM_BEGIN));
        prop_assert_eq!(lines.last().copied(), Some(PEM_END));
        prop_assert!(text.ends_with("-----\n"));
        let body = &lines[1..lines.len() - 1];
        prop_assert!(body.iter().all(|l| !l.is_empty() && l.len() <= 64));
        if let Some((last, full)) = body.split_last() {
            prop_assert!(full.iter().all(|l| l.len() == 64));
            prop_assert!(last.len() <= 64);
        }
        prop_assert_eq!(STANDARD.decode(body.concat()).ok(), Some(bytes.clone()));
        prop_assert_eq!(STANDARD.decode(base64_der(&bytes)).ok(), Some(bytes.clone()));
        let escaped = escaped_pem(&bytes);
        prop_assert!(escaped
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
        prop_assert_eq!(percent_decode(&escaped).ok(), Some(text.into_bytes()));
    }

    /// Percent-encoding any string decodes back to it; the decoder accepts exactly the strings
    /// whose every `%` starts a two-hex-digit escape.
    #[test]
    fn percent_escapes(s in prop_oneof![header_like_text(), any::<String>()]) {
        prop_assert_eq!(
            percent_decode(&percent_encode(&s)).ok(),
            Some(s.as_bytes().to_vec())
        );
        prop_assert_eq!(percent_decode(&s).is_ok(), well_formed_escapes(&s), "{:?}", s);
    }

    /// What modgate writes into upstream headers is printable ASCII whatever the certificate or
    /// the failure reason holds.
    #[test]
    fn header_values_are_header_safe(
        reason in any::<String>(),
        sans in prop::collection::vec(any::<String>(), 0..4),
    ) {
        let safe = |v: &str| v.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
        let verify = Verify::Failed(reason).header_value();
        prop_assert!(safe(&verify) && verify.starts_with("FAILED:"), "{:?}", verify);
        let id = CertIdentity {
            subject_dn: String::new(),
            issuer_dn: String::new(),
            cn: None,
            o: Vec::new(),
            ou: Vec::new(),
            san_dns: sans.clone(),
            san_email: sans.clone(),
            san_uri: sans.clone(),
            san_ip: sans,
            spiffe: None,
            serial_hex: String::new(),
            fingerprint_sha256: String::new(),
            not_after_unix: 0,
            not_before_unix: 0,
        };
        let header = sans_header(&id);
        prop_assert!(safe(&header), "{:?}", header);
    }
}
