//! A test PKI written as PEM files into a directory: a root CA, an intermediate CA signed by
//! the root, a server certificate for `localhost` / `127.0.0.1` / `::1`, an unrelated "other"
//! CA, CRLs, and client certificates with chosen subjects, SANs and serial numbers. The
//! issuers stay in memory so a test can issue more client certificates, revoke serials and
//! rotate the server certificate while a gateway is running.
//!
//! Files written by [`Pki::generate`]:
//!
//! | file | content |
//! |------|---------|
//! | `root.pem`, `root.key` | root CA "modgate test root" |
//! | `intermediate.pem`, `intermediate.key` | intermediate CA "modgate test intermediate" (signed by root) |
//! | `server.pem`, `server.key` | server leaf (signed by root; the leaf only, no chain) |
//! | `other-ca.pem`, `other-ca.key` | unrelated CA "modgate test other CA" |
//! | `ca-bundle.pem` | the root only |
//! | `crl.pem` | empty CRL signed by root, CRL number 1 |
//! | `intermediate-crl.pem` | empty CRL signed by the intermediate, CRL number 1 |

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, SigningKey,
};
use sha2::{Digest, Sha256};

const DAY: u64 = 86_400;

/// Serial numbers of server certificates start here, far from the small serials tests give
/// client certificates, so revoking a client serial never names a server certificate.
const SERVER_SERIAL_BASE: u64 = 0x5e00_0000_0000;

/// Which CA issues (or revokes) a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuer {
    /// "modgate test root" (`root.pem`; CRL `crl.pem`).
    Root,
    /// "modgate test intermediate", signed by the root (`intermediate.pem`; CRL
    /// `intermediate-crl.pem`).
    Intermediate,
    /// "modgate test other CA", unrelated to the root (`other-ca.pem`; CRL `other-ca-crl.pem`,
    /// written only by [`Pki::revoke`]).
    Other,
}

impl Issuer {
    fn index(self) -> usize {
        match self {
            Issuer::Root => 0,
            Issuer::Intermediate => 1,
            Issuer::Other => 2,
        }
    }

    /// File name of this issuer's CRL.
    pub fn crl_file(self) -> &'static str {
        match self {
            Issuer::Root => "crl.pem",
            Issuer::Intermediate => "intermediate-crl.pem",
            Issuer::Other => "other-ca-crl.pem",
        }
    }
}

/// What to put in a client certificate.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub issuer: Issuer,
    /// Subject common name (omitted when empty).
    pub cn: String,
    /// Subject organisation names, one RDN each, in order.
    pub o: Vec<String>,
    /// Subject organisational unit names, one RDN each, in order.
    pub ou: Vec<String>,
    /// DNS name SANs.
    pub dns: Vec<String>,
    /// E-mail (rfc822Name) SANs.
    pub email: Vec<String>,
    /// URI SANs, e.g. `spiffe://corp.example/ci/runner`.
    pub uri: Vec<String>,
    /// The certificate's serial number, exactly as given (so a CRL can revoke it).
    pub serial: u64,
    /// Issue a certificate whose validity ended yesterday (and began 30 days ago).
    pub expired: bool,
    /// Issue a certificate that is valid now and expires this many seconds from now.
    pub expires_in_secs: Option<u64>,
}

impl ClientSpec {
    /// A client certificate from the root with this CN and serial and nothing else.
    pub fn new(cn: &str, serial: u64) -> ClientSpec {
        ClientSpec {
            issuer: Issuer::Root,
            cn: cn.to_string(),
            o: Vec::new(),
            ou: Vec::new(),
            dns: Vec::new(),
            email: Vec::new(),
            uri: Vec::new(),
            serial,
            expired: false,
            expires_in_secs: None,
        }
    }

    pub fn issuer(mut self, issuer: Issuer) -> ClientSpec {
        self.issuer = issuer;
        self
    }

    /// Adds an organisation (O) to the subject.
    pub fn o(mut self, o: &str) -> ClientSpec {
        self.o.push(o.to_string());
        self
    }

    /// Adds an organisational unit (OU) to the subject.
    pub fn ou(mut self, ou: &str) -> ClientSpec {
        self.ou.push(ou.to_string());
        self
    }

    /// Adds a DNS name SAN.
    pub fn dns(mut self, dns: &str) -> ClientSpec {
        self.dns.push(dns.to_string());
        self
    }

    /// Adds an e-mail SAN.
    pub fn email(mut self, email: &str) -> ClientSpec {
        self.email.push(email.to_string());
        self
    }

    /// Adds a URI SAN.
    pub fn uri(mut self, uri: &str) -> ClientSpec {
        self.uri.push(uri.to_string());
        self
    }

    /// Makes the certificate valid now and expired `secs` seconds from now.
    pub fn expires_in(mut self, secs: u64) -> ClientSpec {
        self.expires_in_secs = Some(secs);
        self
    }

    /// Makes the certificate expired.
    pub fn expired(mut self) -> ClientSpec {
        self.expired = true;
        self
    }
}

/// A generated test PKI; see the module documentation for the files it writes.
pub struct Pki {
    pub dir: PathBuf,
    /// Root, intermediate and other CA, indexed by [`Issuer::index`].
    cas: [CertifiedIssuer<'static, KeyPair>; 3],
    /// Last CRL number written per issuer.
    crl_numbers: [u64; 3],
    /// Serial of the next server certificate.
    next_server_serial: AtomicU64,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .field("crl_numbers", &self.crl_numbers)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Generates the CAs, the server certificate and empty CRLs and writes them into `dir`
    /// (created if missing).
    pub fn generate(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("pki: cannot create {}: {e}", dir.display()));
        let root = self_signed_ca("modgate test root");
        let intermediate = {
            let params = ca_params("modgate test intermediate");
            CertifiedIssuer::signed_by(params, new_key(), &root)
                .unwrap_or_else(|e| panic!("pki: signing the intermediate CA: {e}"))
        };
        let other = self_signed_ca("modgate test other CA");

        let pki = Pki {
            dir: dir.to_path_buf(),
            cas: [root, intermediate, other],
            crl_numbers: [1, 1, 0],
            next_server_serial: AtomicU64::new(SERVER_SERIAL_BASE),
        };
        for (issuer, name) in [
            (Issuer::Root, "root"),
            (Issuer::Intermediate, "intermediate"),
            (Issuer::Other, "other-ca"),
        ] {
            let ca = pki.ca(issuer);
            pki.write(&format!("{name}.pem"), ca.pem().as_bytes());
            pki.write(&format!("{name}.key"), ca.key().serialize_pem().as_bytes());
        }
        pki.write("ca-bundle.pem", pki.ca(Issuer::Root).pem().as_bytes());
        pki.write_crl(Issuer::Root, 1, &[]);
        pki.write_crl(Issuer::Intermediate, 1, &[]);
        pki.rotate_server();
        pki
    }

    /// `dir.join(name)`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// PEM of a CA certificate.
    pub fn ca_pem(&self, issuer: Issuer) -> String {
        self.ca(issuer).pem()
    }

    /// Writes a client certificate and key as `<name>.pem` / `<name>.key` and returns the
    /// leaf's DER. When issued by the intermediate, `<name>.pem` also holds the intermediate
    /// after the leaf, so clients that present the file present the whole chain.
    pub fn client(&self, name: &str, spec: &ClientSpec) -> Vec<u8> {
        let mut params = CertificateParams::default();
        // The subject is written below (encode_name), after rcgen has built the rest.
        params.distinguished_name = DistinguishedName::new();
        params.serial_number = Some(SerialNumber::from(spec.serial));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let san = |kind: &str, v: &str| {
            v.try_into()
                .unwrap_or_else(|e| panic!("pki: bad {kind} SAN {v:?}: {e}"))
        };
        params.subject_alt_names = spec
            .dns
            .iter()
            .map(|d| SanType::DnsName(san("DNS", d)))
            .chain(
                spec.email
                    .iter()
                    .map(|m| SanType::Rfc822Name(san("email", m))),
            )
            .chain(spec.uri.iter().map(|u| SanType::URI(san("URI", u))))
            .collect();
        if spec.expired {
            set_validity(&mut params, -30 * DAY as i64, -(DAY as i64));
        } else if let Some(secs) = spec.expires_in_secs {
            set_validity(&mut params, -(DAY as i64), secs as i64);
        } else {
            set_validity(&mut params, -(DAY as i64), 365 * DAY as i64);
        }

        let key = new_key();
        let ca = self.ca(spec.issuer);
        let cert = params
            .signed_by(&key, ca)
            .unwrap_or_else(|e| panic!("pki: signing client certificate {name}: {e}"));
        // rcgen keeps one value per attribute type; write the subject ourselves so repeated
        // O / OU attributes survive, and re-sign.
        let subject = encode_name(&spec.cn, &spec.o, &spec.ou);
        let der = replace_subject(cert.der(), &subject, ca.key());

        let mut pem = pem_encode("CERTIFICATE", &der);
        if spec.issuer == Issuer::Intermediate {
            pem.push_str(&ca.pem());
        }
        self.write(&format!("{name}.key"), key.serialize_pem().as_bytes());
        self.write(&format!("{name}.pem"), pem.as_bytes());
        der
    }

    /// Re-issues the issuer's CRL (see [`Issuer::crl_file`]) listing exactly `serials` as
    /// revoked, with the next CRL number; written atomically.
    pub fn revoke(&mut self, issuer: Issuer, serials: &[u64]) {
        let number = self.crl_numbers[issuer.index()] + 1;
        self.crl_numbers[issuer.index()] = number;
        self.write_crl(issuer, number, serials);
    }

    /// Writes a fresh server certificate and key (new key, same names, signed by the root) to
    /// `server.pem` / `server.key`, each atomically (the key first, then the certificate), and
    /// returns the new leaf's SHA-256 fingerprint.
    pub fn rotate_server(&self) -> String {
        let mut params =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()])
                .unwrap_or_else(|e| panic!("pki: server params: {e}"));
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let serial = self.next_server_serial.fetch_add(1, Ordering::SeqCst);
        params.serial_number = Some(SerialNumber::from(serial));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, -(DAY as i64), 365 * DAY as i64);
        let key = new_key();
        let cert = params
            .signed_by(&key, self.ca(Issuer::Root))
            .unwrap_or_else(|e| panic!("pki: signing server certificate: {e}"));
        self.write("server.key", key.serialize_pem().as_bytes());
        self.write("server.pem", cert.pem().as_bytes());
        fingerprint_sha256(cert.der())
    }

    fn ca(&self, issuer: Issuer) -> &CertifiedIssuer<'static, KeyPair> {
        &self.cas[issuer.index()]
    }

    fn write_crl(&self, issuer: Issuer, number: u64, serials: &[u64]) {
        let since_epoch = unix_now();
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let now = epoch + since_epoch;
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + Duration::from_secs(DAY),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now,
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(self.ca(issuer))
            .unwrap_or_else(|e| panic!("pki: signing {}: {e}", issuer.crl_file()));
        let pem = crl
            .pem()
            .unwrap_or_else(|e| panic!("pki: encoding {}: {e}", issuer.crl_file()));
        self.write(issuer.crl_file(), pem.as_bytes());
    }

    /// Writes `dir/name` atomically: a temporary file in the same directory, then rename.
    fn write(&self, name: &str, data: &[u8]) {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let path = self.path(name);
        let tmp = self.path(&format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&tmp, data)
            .unwrap_or_else(|e| panic!("pki: cannot write {}: {e}", tmp.display()));
        std::fs::rename(&tmp, &path)
            .unwrap_or_else(|e| panic!("pki: cannot rename to {}: {e}", path.display()));
    }
}

/// Lower-case hex SHA-256 of a DER certificate.
pub fn fingerprint_sha256(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn new_key() -> KeyPair {
    KeyPair::generate().unwrap_or_else(|e| panic!("pki: key generation: {e}"))
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, -(DAY as i64), 3650 * DAY as i64);
    params
}

fn self_signed_ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    CertifiedIssuer::self_signed(ca_params(cn), new_key())
        .unwrap_or_else(|e| panic!("pki: self-signing CA {cn:?}: {e}"))
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("system clock before 1970")
}

/// Sets `not_before` / `not_after` to now plus the given offsets in seconds.
fn set_validity(params: &mut CertificateParams, from: i64, to: i64) {
    let now = unix_now().as_secs() as i64;
    let at = |offset: i64| {
        let secs = u64::try_from(now + offset).expect("validity before 1970");
        rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(secs)
    };
    params.not_before = at(from);
    params.not_after = at(to);
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

// --- Minimal DER, just enough to swap a certificate's subject and re-sign it. ---

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Splits the first TLV off `input`: (whole TLV, content, rest).
fn der_next(input: &[u8]) -> (&[u8], &[u8], &[u8]) {
    const BAD: &str = "pki: malformed DER from rcgen";
    let first = *input.get(1).expect(BAD);
    let (header, len) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        let bytes = input.get(2..2 + n).expect(BAD);
        (
            2 + n,
            bytes.iter().fold(0usize, |l, b| (l << 8) | usize::from(*b)),
        )
    };
    let end = header + len;
    assert!(input.len() >= end, "{BAD}");
    (&input[..end], &input[header..end], &input[end..])
}

/// The TLVs inside a constructed value's content.
fn der_children(mut content: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (tlv, _, rest) = der_next(content);
        out.push(tlv);
        content = rest;
    }
    out
}

/// A Name of UTF8String attributes: each O, then each OU, then the CN (if not empty).
fn encode_name(cn: &str, o: &[String], ou: &[String]) -> Vec<u8> {
    // id-at-commonName 2.5.4.3, id-at-organizationName 2.5.4.10, id-at-organizationalUnitName 2.5.4.11
    let rdn = |attr: u8, value: &str| {
        let oid = der_tlv(0x06, &[0x55, 0x04, attr]);
        let value = der_tlv(0x0c, value.as_bytes());
        der_tlv(0x31, &der_tlv(0x30, &[oid, value].concat()))
    };
    let mut rdns = Vec::new();
    for v in o {
        rdns.extend(rdn(10, v));
    }
    for v in ou {
        rdns.extend(rdn(11, v));
    }
    if !cn.is_empty() {
        rdns.extend(rdn(3, cn));
    }
    der_tlv(0x30, &rdns)
}

/// Replaces the subject of a DER certificate and re-signs it with `issuer_key` (the key that
/// signed it, so the signature algorithm stays right).
fn replace_subject(cert: &[u8], subject: &[u8], issuer_key: &KeyPair) -> Vec<u8> {
    let (_, cert_content, _) = der_next(cert);
    let parts = der_children(cert_content);
    assert_eq!(
        parts.len(),
        3,
        "pki: certificate is not tbs, alg, signature"
    );
    let (_, tbs_content, _) = der_next(parts[0]);
    let mut fields = der_children(tbs_content);
    // [0] version?, serial, signature, issuer, validity, subject, ...
    let subject_index = if fields[0][0] == 0xa0 { 5 } else { 4 };
    fields[subject_index] = subject;
    let tbs = der_tlv(0x30, &fields.concat());
    let signature = issuer_key
        .sign(&tbs)
        .unwrap_or_else(|e| panic!("pki: re-signing: {e}"));
    let bits = der_tlv(0x03, &[&[0u8][..], &signature].concat());
    der_tlv(0x30, &[tbs.as_slice(), parts[1], &bits].concat())
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate};
    use x509_parser::revocation_list::CertificateRevocationList;

    fn pem_certs(path: &Path) -> Vec<Vec<u8>> {
        let data = std::fs::read(path).unwrap();
        rustls_pemfile::certs(&mut data.as_slice())
            .map(|c| c.unwrap().to_vec())
            .collect()
    }

    fn crl_der(path: &Path) -> Vec<u8> {
        let data = std::fs::read(path).unwrap();
        let crl = rustls_pemfile::crls(&mut data.as_slice())
            .next()
            .expect("a CRL")
            .unwrap();
        crl.to_vec()
    }

    fn now() -> i64 {
        unix_now().as_secs() as i64
    }

    #[test]
    fn generate_writes_all_files() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::generate(tmp.path());
        for f in [
            "root.pem",
            "root.key",
            "intermediate.pem",
            "intermediate.key",
            "server.pem",
            "server.key",
            "other-ca.pem",
            "other-ca.key",
            "ca-bundle.pem",
            "crl.pem",
            "intermediate-crl.pem",
        ] {
            assert!(pki.path(f).is_file(), "{f} missing");
        }
        assert_eq!(pem_certs(&pki.path("server.pem")).len(), 1);
        assert_eq!(
            pem_certs(&pki.path("ca-bundle.pem")),
            pem_certs(&pki.path("root.pem"))
        );

        let root_der = &pem_certs(&pki.path("root.pem"))[0];
        let (_, root) = X509Certificate::from_der(root_der).unwrap();
        assert!(root.is_ca());
        assert_eq!(root.subject().to_string(), "CN=modgate test root");
        let ku = root.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());

        let int_der = &pem_certs(&pki.path("intermediate.pem"))[0];
        let (_, int) = X509Certificate::from_der(int_der).unwrap();
        assert!(int.is_ca());
        assert_eq!(int.issuer().to_string(), "CN=modgate test root");
        int.verify_signature(Some(root.public_key())).unwrap();

        let server_der = &pem_certs(&pki.path("server.pem"))[0];
        let (_, server) = X509Certificate::from_der(server_der).unwrap();
        assert_eq!(server.issuer().to_string(), "CN=modgate test root");
        let sans = server.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = sans
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(ip) => format!("{ip:?}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[0], "localhost");

        let crl = crl_der(&pki.path("crl.pem"));
        let (_, crl) = CertificateRevocationList::from_der(&crl).unwrap();
        assert_eq!(crl.issuer().to_string(), "CN=modgate test root");
        assert_eq!(crl.crl_number().unwrap().to_string(), "1");
        assert_eq!(crl.iter_revoked_certificates().count(), 0);
        let next = crl.next_update().unwrap().timestamp();
        assert!(
            (next - now() - DAY as i64).abs() < 120,
            "next update +1 day"
        );
        crl.verify_signature(root.public_key()).unwrap();

        let int_crl = crl_der(&pki.path("intermediate-crl.pem"));
        let (_, int_crl) = CertificateRevocationList::from_der(&int_crl).unwrap();
        assert_eq!(int_crl.issuer().to_string(), "CN=modgate test intermediate");
        int_crl.verify_signature(int.public_key()).unwrap();
    }

    #[test]
    fn client_leaf_fields() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::generate(tmp.path());
        let spec = ClientSpec::new("ci-runner", 4242)
            .o("Corp")
            .ou("platform")
            .ou("ci")
            .dns("runner.corp.example")
            .email("ci@corp.example")
            .uri("spiffe://corp.example/ci/runner");
        let der = pki.client("runner", &spec);
        assert_eq!(pem_certs(&pki.path("runner.pem")), vec![der.clone()]);
        assert!(pki.path("runner.key").is_file());

        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(cert.issuer().to_string(), "CN=modgate test root");
        assert_eq!(
            cert.subject().to_string(),
            "O=Corp, OU=platform, OU=ci, CN=ci-runner"
        );
        let ous: Vec<&str> = cert
            .subject()
            .iter_organizational_unit()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(ous, ["platform", "ci"]);
        assert_eq!(cert.raw_serial(), &[0x10, 0x92][..]);
        assert_eq!(cert.serial.to_string(), "4242");
        assert!(!cert.is_ca());

        let sans = cert.subject_alternative_name().unwrap().unwrap();
        let names = &sans.value.general_names;
        assert!(names.contains(&GeneralName::DNSName("runner.corp.example")));
        assert!(names.contains(&GeneralName::RFC822Name("ci@corp.example")));
        assert!(names.contains(&GeneralName::URI("spiffe://corp.example/ci/runner")));

        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign());

        let root_der = &pem_certs(&pki.path("root.pem"))[0];
        let (_, root) = X509Certificate::from_der(root_der).unwrap();
        cert.verify_signature(Some(root.public_key())).unwrap();
        assert!(cert.validity().is_valid());
    }

    #[test]
    fn intermediate_client_pem_holds_chain() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::generate(tmp.path());
        let der = pki.client(
            "via-int",
            &ClientSpec::new("via-int", 7).issuer(Issuer::Intermediate),
        );
        let certs = pem_certs(&pki.path("via-int.pem"));
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0], der);
        assert_eq!(certs[1], pem_certs(&pki.path("intermediate.pem"))[0]);
        let (_, leaf) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(leaf.issuer().to_string(), "CN=modgate test intermediate");
        let (_, int) = X509Certificate::from_der(&certs[1]).unwrap();
        leaf.verify_signature(Some(int.public_key())).unwrap();

        let other = pki.client("other", &ClientSpec::new("o", 8).issuer(Issuer::Other));
        let (_, other) = X509Certificate::from_der(&other).unwrap();
        assert_eq!(other.issuer().to_string(), "CN=modgate test other CA");
        assert_eq!(pem_certs(&pki.path("other.pem")).len(), 1);
    }

    #[test]
    fn expired_client() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::generate(tmp.path());
        let der = pki.client("old", &ClientSpec::new("old", 9).expired());
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let v = cert.validity();
        assert!(v.not_after.timestamp() < now());
        assert!(v.not_before.timestamp() < v.not_after.timestamp());
        assert!(!v.is_valid());
    }

    #[test]
    fn revoke_writes_crls() {
        let tmp = tempfile::tempdir().unwrap();
        let mut pki = Pki::generate(tmp.path());
        let root_der = &pem_certs(&pki.path("root.pem"))[0];
        let (_, root) = X509Certificate::from_der(root_der).unwrap();
        let int_der = &pem_certs(&pki.path("intermediate.pem"))[0];
        let (_, int) = X509Certificate::from_der(int_der).unwrap();

        let serials = |path: &Path| -> (String, Vec<String>) {
            let der = crl_der(path);
            let (_, crl) = CertificateRevocationList::from_der(&der).unwrap();
            (
                crl.crl_number().unwrap().to_string(),
                crl.iter_revoked_certificates()
                    .map(|r| r.serial().to_string())
                    .collect(),
            )
        };

        pki.revoke(Issuer::Root, &[3, 300]);
        assert_eq!(
            serials(&pki.path("crl.pem")),
            ("2".to_string(), vec!["3".to_string(), "300".to_string()])
        );
        pki.revoke(Issuer::Root, &[3, 300, 70000]);
        let der = crl_der(&pki.path("crl.pem"));
        let (_, crl) = CertificateRevocationList::from_der(&der).unwrap();
        assert_eq!(crl.crl_number().unwrap().to_string(), "3");
        assert_eq!(crl.iter_revoked_certificates().count(), 3);
        crl.verify_signature(root.public_key()).unwrap();
        assert!(crl.verify_signature(int.public_key()).is_err());

        pki.revoke(Issuer::Intermediate, &[11]);
        let der = crl_der(&pki.path("intermediate-crl.pem"));
        let (_, crl) = CertificateRevocationList::from_der(&der).unwrap();
        assert_eq!(crl.issuer().to_string(), "CN=modgate test intermediate");
        assert_eq!(crl.crl_number().unwrap().to_string(), "2");
        let revoked: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| r.serial().to_string())
            .collect();
        assert_eq!(revoked, ["11"]);
        crl.verify_signature(int.public_key()).unwrap();
        // The root CRL is untouched.
        assert_eq!(serials(&pki.path("crl.pem")).0, "3");

        pki.revoke(Issuer::Other, &[5]);
        assert_eq!(
            serials(&pki.path("other-ca-crl.pem")),
            ("1".to_string(), vec!["5".to_string()])
        );
        // No temporary files left behind.
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn rotate_server_changes_fingerprint() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::generate(tmp.path());
        let before = fingerprint_sha256(&pem_certs(&pki.path("server.pem"))[0]);
        let key_before = std::fs::read(pki.path("server.key")).unwrap();
        let after = pki.rotate_server();
        assert_ne!(before, after);
        assert_eq!(after.len(), 64);
        assert!(after.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
        let certs = pem_certs(&pki.path("server.pem"));
        assert_eq!(certs.len(), 1);
        assert_eq!(fingerprint_sha256(&certs[0]), after);
        assert_ne!(std::fs::read(pki.path("server.key")).unwrap(), key_before);
    }

    #[test]
    fn fingerprint_is_sha256_hex() {
        assert_eq!(
            fingerprint_sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
