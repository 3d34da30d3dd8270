//! Tests of `tls.rs`: a throwaway PKI made with rcgen in a temporary directory (root CA →
//! intermediate CA → client leaves, an unrelated CA, expired and revoked leaves, CRLs), the
//! verifier called directly, reloads, and full in-memory rustls handshakes.

use super::*;

use std::io::{Read as _, Write as _};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};
use rustls::pki_types::PrivatePkcs8KeyDer;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    pem: String,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn root(name: &str) -> Ca {
    let params = ca_params(name);
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("root");
    Ca {
        der: cert.der().clone(),
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

fn intermediate(parent: &Ca, name: &str) -> Ca {
    let params = ca_params(name);
    let key = KeyPair::generate().expect("key");
    let cert = params
        .signed_by(&key, &parent.issuer)
        .expect("intermediate");
    Ca {
        der: cert.der().clone(),
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

struct Leaf {
    der: CertificateDer<'static>,
    pem: String,
    key: KeyPair,
}

fn leaf_with(ca: &Ca, cn: &str, serial: u8, expired: bool, server: bool) -> Leaf {
    let sans = if server {
        vec!["localhost".to_string()]
    } else {
        Vec::new()
    };
    let mut p = CertificateParams::new(sans).expect("params");
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.serial_number = Some(SerialNumber::from_slice(&[0x10, serial]));
    p.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    if expired {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, &ca.issuer).expect("leaf");
    Leaf {
        der: cert.der().clone(),
        pem: cert.pem(),
        key,
    }
}

fn client(ca: &Ca, cn: &str, serial: u8) -> Leaf {
    leaf_with(ca, cn, serial, false, false)
}

fn crl_pem(ca: &Ca, revoked: &[u8]) -> String {
    crl(ca, revoked).pem().expect("crl pem")
}

fn crl(ca: &Ca, revoked: &[u8]) -> rcgen::CertificateRevocationList {
    let params = CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2020, 1, 1),
        next_update: rcgen::date_time_ymd(2999, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&[0x10, *s]),
                revocation_time: rcgen::date_time_ymd(2021, 1, 1),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    params.signed_by(&ca.issuer).expect("crl")
}

struct Pki {
    dir: tempfile::TempDir,
    root: Ca,
    inter: Ca,
    other: Ca,
    server_ca: Ca,
}

impl Pki {
    fn new() -> Pki {
        let root = root("Client Root");
        let inter = intermediate(&root, "Client Intermediate");
        let pki = Pki {
            dir: tempfile::tempdir().expect("tempdir"),
            other: self::root("Other Root"),
            server_ca: self::root("Server CA"),
            root,
            inter,
        };
        let server = leaf_with(&pki.server_ca, "localhost", 1, false, true);
        pki.write("server.pem", &server.pem);
        pki.write("server.key", &server.key.serialize_pem());
        pki.write("root.pem", &pki.root.pem);
        pki.write("other.pem", &pki.other.pem);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        self.write_bytes(name, text.as_bytes())
    }

    fn write_bytes(&self, name: &str, data: &[u8]) -> PathBuf {
        // Replace atomically, as an operator's deploy tool would.
        let path = self.path(name);
        let tmp = self.path(&format!("{name}.tmp"));
        let mut f = std::fs::File::create(&tmp).expect("create");
        f.write_all(data).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        path
    }

    fn files(&self, mode: ClientAuth, cas: &[&str], crls: &[&str]) -> TlsFiles {
        TlsFiles {
            client_auth: mode,
            client_ca: cas.iter().map(|c| self.path(c)).collect(),
            crl: crls.iter().map(|c| self.path(c)).collect(),
            ..TlsFiles::new(self.path("server.pem"), self.path("server.key"))
        }
    }
}

fn verify(
    v: &dyn ClientCertVerifier,
    leaf: &Leaf,
    chain: &[&Ca],
) -> Result<ClientCertVerified, rustls::Error> {
    let intermediates: Vec<CertificateDer<'static>> = chain.iter().map(|c| c.der.clone()).collect();
    v.verify_client_cert(&leaf.der, &intermediates, UnixTime::now())
}

fn cert_error(r: Result<ClientCertVerified, rustls::Error>) -> rustls::CertificateError {
    match r {
        Err(rustls::Error::InvalidCertificate(e)) => e,
        Err(e) => panic!("expected a certificate error, got {e:?}"),
        Ok(_) => panic!("expected a certificate error, got success"),
    }
}

fn verifier_of(files: &TlsFiles) -> Arc<dyn ClientCertVerifier> {
    load_material(files)
        .expect("material")
        .client_verifier()
        .expect("verifier")
        .clone()
}

#[test]
fn verifies_direct_intermediate_wrong_ca_and_expired() {
    let pki = Pki::new();
    let v = verifier_of(&pki.files(ClientAuth::Required, &["root.pem"], &[]));
    assert!(v.offer_client_auth());
    assert!(v.client_auth_mandatory());

    let direct = client(&pki.root, "alice", 1);
    assert!(verify(v.as_ref(), &direct, &[]).is_ok());

    let via = client(&pki.inter, "bob", 2);
    assert!(verify(v.as_ref(), &via, &[&pki.inter]).is_ok());
    assert_eq!(
        cert_error(verify(v.as_ref(), &via, &[])),
        rustls::CertificateError::UnknownIssuer
    );

    let stranger = client(&pki.other, "mallory", 3);
    assert_eq!(
        cert_error(verify(v.as_ref(), &stranger, &[])),
        rustls::CertificateError::UnknownIssuer
    );

    let expired = leaf_with(&pki.root, "old", 4, true, false);
    assert!(matches!(
        cert_error(verify(v.as_ref(), &expired, &[])),
        rustls::CertificateError::ExpiredContext { .. } | rustls::CertificateError::Expired
    ));
}

#[test]
fn bundle_with_intermediate_and_several_files() {
    let pki = Pki::new();
    // One bundle holding root and intermediate: a leaf of the intermediate verifies even when
    // the client does not send the intermediate.
    pki.write("bundle.pem", &format!("{}{}", pki.root.pem, pki.inter.pem));
    let files = pki.files(ClientAuth::Required, &["bundle.pem", "other.pem"], &[]);
    let material = load_material(&files).expect("material");
    assert_eq!(
        material.client_ca_subjects(),
        ["CN=Client Root", "CN=Client Intermediate", "CN=Other Root"]
    );
    let v = material.client_verifier().expect("verifier");
    assert!(verify(v.as_ref(), &client(&pki.inter, "bob", 2), &[]).is_ok());
    assert!(verify(v.as_ref(), &client(&pki.other, "carol", 3), &[]).is_ok());
    assert_eq!(v.root_hint_subjects().len(), 3);
}

#[test]
fn optional_and_none_modes() {
    let pki = Pki::new();
    let v = verifier_of(&pki.files(ClientAuth::Optional, &["root.pem"], &[]));
    assert!(v.offer_client_auth());
    assert!(!v.client_auth_mandatory());
    // A certificate that does not verify still fails in optional mode.
    assert!(verify(v.as_ref(), &client(&pki.other, "m", 1), &[]).is_err());

    let files = pki.files(ClientAuth::None, &["missing-but-unused.pem"], &[]);
    let material = load_material(&files).expect("no client auth");
    assert!(material.client_verifier().is_none());
    let tls = ReloadableTls::new(files).expect("reloadable");
    assert!(!tls.client_verifier().offer_client_auth());
}

#[test]
fn a_prepared_reload_changes_the_client_auth_mode_only_when_committed() {
    let pki = Pki::new();
    let tls = ReloadableTls::new(pki.files(ClientAuth::Optional, &["root.pem"], &[]))
        .expect("reloadable");
    let v = tls.client_verifier();
    assert!(v.offer_client_auth() && !v.client_auth_mandatory());
    let prepared = tls
        .prepare(&pki.files(ClientAuth::Required, &["root.pem"], &[]))
        .expect("required");
    assert!(
        !v.client_auth_mandatory(),
        "prepared material is not in force"
    );
    assert!(tls
        .prepare(&pki.files(ClientAuth::Required, &["missing.pem"], &[]))
        .is_err());
    tls.commit(prepared);
    assert!(
        v.client_auth_mandatory(),
        "the same verifier now requires a certificate"
    );
    assert_eq!(tls.files().client_auth, ClientAuth::Required);
    tls.reload().expect("reload keeps the new files");
    assert!(v.client_auth_mandatory());
}

#[test]
fn revoked_and_unknown_revocation_status() {
    let pki = Pki::new();
    pki.write("root.crl.pem", &crl_pem(&pki.root, &[0x66]));
    let files = pki.files(ClientAuth::Required, &["root.pem"], &["root.crl.pem"]);
    let material = load_material(&files).expect("material");
    assert_eq!(material.crl_count(), 1);
    let v = material.client_verifier().expect("verifier");

    let good = client(&pki.root, "alice", 1);
    assert!(verify(v.as_ref(), &good, &[]).is_ok());
    let revoked = client(&pki.root, "eve", 0x66);
    assert_eq!(
        cert_error(verify(v.as_ref(), &revoked, &[])),
        rustls::CertificateError::Revoked
    );
    // The intermediate has no CRL: the status of its leaves is unknown, which is refused...
    let via = client(&pki.inter, "bob", 2);
    assert_eq!(
        cert_error(verify(v.as_ref(), &via, &[&pki.inter])),
        rustls::CertificateError::UnknownRevocationStatus
    );
    // ...unless allowed.
    let lenient = TlsFiles {
        allow_unknown_revocation: true,
        ..files.clone()
    };
    let v2 = verifier_of(&lenient);
    assert!(verify(v2.as_ref(), &via, &[&pki.inter]).is_ok());
    assert_eq!(
        cert_error(verify(v2.as_ref(), &revoked, &[])),
        rustls::CertificateError::Revoked
    );
}

#[test]
fn chain_scope_and_der_crls() {
    let pki = Pki::new();
    pki.write("root.crl.pem", &crl_pem(&pki.root, &[]));
    pki.write_bytes("inter.crl.der", crl(&pki.inter, &[0x07]).der().as_ref());
    let via = client(&pki.inter, "bob", 2);
    let revoked = client(&pki.inter, "eve", 0x07);

    let files = TlsFiles {
        crl_scope: CrlScope::Chain,
        ..pki.files(
            ClientAuth::Required,
            &["root.pem"],
            &["root.crl.pem", "inter.crl.der"],
        )
    };
    let v = verifier_of(&files);
    assert!(verify(v.as_ref(), &via, &[&pki.inter]).is_ok());
    assert_eq!(
        cert_error(verify(v.as_ref(), &revoked, &[&pki.inter])),
        rustls::CertificateError::Revoked
    );

    // Without the root's CRL the intermediate's own status is unknown in chain scope...
    let chain_only_inter = TlsFiles {
        crl: vec![pki.path("inter.crl.der")],
        ..files.clone()
    };
    let v = verifier_of(&chain_only_inter);
    assert_eq!(
        cert_error(verify(v.as_ref(), &via, &[&pki.inter])),
        rustls::CertificateError::UnknownRevocationStatus
    );
    // ...but fine when only end entities are checked.
    let end_entity = TlsFiles {
        crl_scope: CrlScope::EndEntity,
        ..chain_only_inter
    };
    let v = verifier_of(&end_entity);
    assert!(verify(v.as_ref(), &via, &[&pki.inter]).is_ok());

    // The intermediate itself revoked by the root.
    pki.write("root.crl.pem", &crl_pem(&pki.root, &[]));
    let inter_serial_revoking = {
        // Serial numbers of rcgen CAs are random; read the intermediate's from its DER.
        let (_, parsed) =
            x509_parser::parse_x509_certificate(pki.inter.der.as_ref()).expect("x509");
        parsed.raw_serial().to_vec()
    };
    let params = CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2020, 1, 1),
        next_update: rcgen::date_time_ymd(2999, 1, 1),
        crl_number: SerialNumber::from(2u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from_slice(&inter_serial_revoking),
            revocation_time: rcgen::date_time_ymd(2021, 1, 1),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    pki.write(
        "root.crl.pem",
        &params
            .signed_by(&pki.root.issuer)
            .expect("crl")
            .pem()
            .expect("pem"),
    );
    let v = verifier_of(&files);
    assert_eq!(
        cert_error(verify(v.as_ref(), &via, &[&pki.inter])),
        rustls::CertificateError::Revoked
    );
}

fn load_err(files: &TlsFiles) -> String {
    load_material(files).expect_err("should fail").to_string()
}

#[test]
fn errors_name_the_file() {
    let pki = Pki::new();
    let base = pki.files(ClientAuth::Required, &["root.pem"], &[]);
    let p = |n: &str| pki.path(n).display().to_string();

    let e = load_err(&TlsFiles {
        cert: pki.path("nope.pem"),
        ..base.clone()
    });
    assert!(
        e.starts_with(&format!("{}: cannot read", p("nope.pem"))),
        "{e}"
    );

    pki.write("empty.pem", "# nothing here\n");
    let e = load_err(&TlsFiles {
        cert: pki.path("empty.pem"),
        ..base.clone()
    });
    assert_eq!(
        e,
        format!(
            "{}: no PEM certificate (\"-----BEGIN CERTIFICATE-----\") found",
            p("empty.pem")
        )
    );

    pki.write(
        "garbage-cert.pem",
        "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
    );
    let e = load_err(&TlsFiles {
        cert: pki.path("garbage-cert.pem"),
        ..base.clone()
    });
    assert!(
        e.starts_with(&format!("{}: certificate #1", p("garbage-cert.pem"))),
        "{e}"
    );

    let e = load_err(&TlsFiles {
        key: pki.path("server.pem"),
        ..base.clone()
    });
    assert_eq!(
        e,
        format!(
            "{}: no PEM private key (PKCS#8, PKCS#1 or SEC1) found",
            p("server.pem")
        )
    );

    let other_key = KeyPair::generate().expect("key");
    pki.write("other.key", &other_key.serialize_pem());
    let e = load_err(&TlsFiles {
        key: pki.path("other.key"),
        ..base.clone()
    });
    assert_eq!(
        e,
        format!(
            "{}: private key does not match the certificate in {}",
            p("other.key"),
            p("server.pem")
        )
    );

    let e = load_err(&pki.files(ClientAuth::Required, &[], &[]));
    assert!(
        e.contains("client certificate authentication is required but no client CA"),
        "{e}"
    );
    assert!(e.contains(&p("server.pem")), "{e}");
    let e = load_err(&pki.files(ClientAuth::Optional, &[], &[]));
    assert!(e.contains("is optional but"), "{e}");

    let e = load_err(&pki.files(ClientAuth::Required, &["root.pem", "empty.pem"], &[]));
    assert!(
        e.starts_with(&format!("{}: client CA bundle holds no", p("empty.pem"))),
        "{e}"
    );

    let e = load_err(&pki.files(ClientAuth::Required, &["missing-ca.pem"], &[]));
    assert!(
        e.starts_with(&format!("{}: cannot read", p("missing-ca.pem"))),
        "{e}"
    );

    pki.write(
        "bad.crl",
        "-----BEGIN X509 CRL-----\naGVsbG8=\n-----END X509 CRL-----\n",
    );
    let e = load_err(&pki.files(ClientAuth::Required, &["root.pem"], &["bad.crl"]));
    assert!(
        e.starts_with(&format!("{}: CRL is not usable", p("bad.crl"))),
        "{e}"
    );

    pki.write_bytes("bad-der.crl", &[0x30, 0x03, 0x02, 0x01, 0x00]);
    let e = load_err(&pki.files(ClientAuth::Required, &["root.pem"], &["bad-der.crl"]));
    assert!(
        e.starts_with(&format!("{}: CRL is not usable", p("bad-der.crl"))),
        "{e}"
    );

    let e = load_err(&pki.files(ClientAuth::Required, &["root.pem"], &["root.pem"]));
    assert!(
        e.starts_with(&format!("{}: no CRL found", p("root.pem"))),
        "{e}"
    );
    pki.write("text.crl", "not a crl");
    let e = load_err(&pki.files(ClientAuth::Required, &["root.pem"], &["text.crl"]));
    assert!(
        e.starts_with(&format!("{}: no CRL found", p("text.crl"))),
        "{e}"
    );

    // validate() is load-and-discard.
    assert!(validate(&base).is_ok());
    assert!(validate(&TlsFiles {
        key: pki.path("other.key"),
        ..base
    })
    .is_err());
}

#[test]
fn server_material_info() {
    let pki = Pki::new();
    let material = load_material(&pki.files(ClientAuth::None, &[], &[])).expect("material");
    assert_eq!(material.server_subject(), "CN=localhost");
    // rcgen's default notAfter is 4096-01-01.
    assert_eq!(material.server_not_after_unix(), 67_090_118_400);
    assert_eq!(material.certified_key().cert.len(), 1);
    let debug = format!("{material:?}");
    assert!(
        debug.contains("CN=localhost") && !debug.contains("PRIVATE"),
        "{debug}"
    );
}

#[test]
fn reload_swaps_cas_for_new_checks_only_when_everything_loads() {
    let pki = Pki::new();
    pki.write("clients.pem", &pki.root.pem);
    let files = pki.files(ClientAuth::Required, &["clients.pem"], &[]);
    // By reference, as the binary calls it.
    let tls = ReloadableTls::new(&files).expect("tls");
    assert_eq!(tls.generation(), 1);
    let v = tls.client_verifier();
    let alice = client(&pki.root, "alice", 1);
    let oscar = client(&pki.other, "oscar", 2);
    assert!(verify(v.as_ref(), &alice, &[]).is_ok());
    assert!(verify(v.as_ref(), &oscar, &[]).is_err());
    let hint = |v: &Arc<dyn ClientCertVerifier>| -> Vec<String> {
        v.root_hint_subjects()
            .iter()
            .map(|d| dn_from_der(d.as_ref()).expect("dn"))
            .collect()
    };
    assert_eq!(hint(&v), ["CN=Client Root"]);

    // Nothing changed: same generation content, flags false.
    let same = tls.reload().expect("reload");
    assert_eq!(same.generation, 2);
    assert!(!same.server_cert_changed && !same.client_trust_changed);

    // Rotate the CA: the verifier handed out before now follows the new file.
    pki.write("clients.pem", &pki.other.pem);
    let summary = tls.reload().expect("reload");
    assert_eq!(summary.generation, 3);
    assert_eq!(tls.generation(), 3);
    assert!(summary.client_trust_changed && !summary.server_cert_changed);
    assert_eq!(summary.client_ca_subjects, ["CN=Other Root"]);
    assert!(verify(v.as_ref(), &alice, &[]).is_err());
    assert!(verify(v.as_ref(), &oscar, &[]).is_ok());
    assert_eq!(hint(&v), ["CN=Other Root"]);

    // Add a CRL file to the same listener? Its list of files is fixed; a broken CA file keeps
    // the old material.
    pki.write("clients.pem", "garbage\n");
    let e = tls.reload().expect_err("broken CA").to_string();
    assert!(e.contains("clients.pem"), "{e}");
    assert_eq!(tls.generation(), 3);
    assert!(verify(v.as_ref(), &oscar, &[]).is_ok());
    assert_eq!(hint(&v), ["CN=Other Root"]);

    // Back to the first CA: the earlier hint list is served again.
    pki.write("clients.pem", &pki.root.pem);
    tls.reload().expect("reload");
    assert!(verify(v.as_ref(), &alice, &[]).is_ok());
    assert_eq!(hint(&v), ["CN=Client Root"]);
}

#[test]
fn hint_log_stops_growing() {
    let log = HintLog::new(vec![DistinguishedName::from(vec![0x30, 0x00])]);
    assert_eq!(log.latest().len(), 1);
    for i in 0..MAX_HINT_CHANGES {
        let dn = DistinguishedName::from(vec![0x30, 0x01, i as u8]);
        log.push(std::slice::from_ref(&dn));
        log.push(&[dn]); // unchanged: not a new entry
        assert_eq!(log.latest()[0].as_ref(), &[0x30, 0x01, i as u8]);
    }
    assert_eq!(log.changes.load(Ordering::Acquire), MAX_HINT_CHANGES);
    log.push(&[DistinguishedName::from(vec![0x30, 0x02])]);
    assert!(log.latest().is_empty());
}

fn handshake(
    server: &Arc<ReloadableTls>,
    client_cert: Option<&Leaf>,
    chain: &[&Ca],
    server_ca: &Ca,
) -> Result<
    (
        Vec<CertificateDer<'static>>,
        Option<Vec<CertificateDer<'static>>>,
    ),
    rustls::Error,
> {
    let server_config = Arc::new(server.server_config().expect("server config"));
    let mut roots = RootCertStore::empty();
    roots.add(server_ca.der.clone()).expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let client_config = match client_cert {
        Some(leaf) => {
            let mut certs = vec![leaf.der.clone()];
            certs.extend(chain.iter().map(|c| c.der.clone()));
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key.serialize_der()));
            builder.with_client_auth_cert(certs, key)?
        }
        None => builder.with_no_client_auth(),
    };
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut c = rustls::ClientConnection::new(Arc::new(client_config), name)?;
    let mut s = rustls::ServerConnection::new(server_config)?;
    for _ in 0..20 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf)
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            s.read_tls(&mut rd)
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            s.process_new_packets()?;
        }
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf)
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            c.read_tls(&mut rd)
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            c.process_new_packets()?;
        }
        if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() && !s.wants_write() {
            break;
        }
    }
    if s.is_handshaking() || c.is_handshaking() {
        return Err(rustls::Error::General("handshake did not finish".into()));
    }
    // Application data both ways, to be sure the connection works.
    c.writer()
        .write_all(b"ping")
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut buf = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut buf)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
    }
    let mut rd = buf.as_slice();
    while !rd.is_empty() {
        s.read_tls(&mut rd)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        s.process_new_packets()?;
    }
    let mut got = [0u8; 4];
    s.reader()
        .read_exact(&mut got)
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    assert_eq!(&got, b"ping");
    let server_chain = c
        .peer_certificates()
        .map(|p| p.to_vec())
        .unwrap_or_default();
    let client_chain = s.peer_certificates().map(|p| p.to_vec());
    Ok((server_chain, client_chain))
}

#[test]
fn full_handshakes_follow_reloads() {
    let pki = Pki::new();
    pki.write("clients.pem", &pki.root.pem);
    let tls =
        ReloadableTls::new(pki.files(ClientAuth::Required, &["clients.pem"], &[])).expect("tls");
    let alice = client(&pki.root, "alice", 1);
    let bob = client(&pki.inter, "bob", 2);
    let oscar = client(&pki.other, "oscar", 3);

    let (server_chain, client_chain) =
        handshake(&tls, Some(&alice), &[], &pki.server_ca).expect("alice");
    let first_server_cert = server_chain[0].clone();
    assert_eq!(client_chain.expect("client chain")[0], alice.der);
    let (_, client_chain) =
        handshake(&tls, Some(&bob), &[&pki.inter], &pki.server_ca).expect("bob");
    assert_eq!(client_chain.expect("client chain").len(), 2);
    assert!(handshake(&tls, Some(&oscar), &[], &pki.server_ca).is_err());
    assert!(handshake(&tls, None, &[], &pki.server_ca).is_err());

    // New server certificate and new client CA in one reload.
    let server2 = leaf_with(&pki.server_ca, "localhost", 9, false, true);
    pki.write("server.pem", &server2.pem);
    pki.write("server.key", &server2.key.serialize_pem());
    pki.write("clients.pem", &pki.other.pem);
    let summary = tls.reload().expect("reload");
    assert!(summary.server_cert_changed && summary.client_trust_changed);
    let (server_chain, _) = handshake(&tls, Some(&oscar), &[], &pki.server_ca).expect("oscar");
    assert_eq!(server_chain[0], server2.der);
    assert_ne!(server_chain[0], first_server_cert);
    assert!(handshake(&tls, Some(&alice), &[], &pki.server_ca).is_err());

    // A broken key (or a key of another certificate) is refused; the old pair stays in use.
    let stray = KeyPair::generate().expect("key");
    pki.write("server.key", &stray.serialize_pem());
    let e = tls.reload().expect_err("mismatch").to_string();
    assert!(e.contains("does not match"), "{e}");
    pki.write("server.pem", "-----BEGIN CERTIFICATE-----\n");
    assert!(tls.reload().is_err());
    let (server_chain, _) = handshake(&tls, Some(&oscar), &[], &pki.server_ca).expect("still");
    assert_eq!(server_chain[0], server2.der);
    assert_eq!(tls.current().certified_key().cert[0], server2.der);
}

#[test]
fn optional_handshake_without_certificate() {
    let pki = Pki::new();
    let tls = ReloadableTls::new(pki.files(ClientAuth::Optional, &["root.pem"], &[])).expect("tls");
    let (_, client_chain) = handshake(&tls, None, &[], &pki.server_ca).expect("anonymous");
    assert!(client_chain.is_none());
    let alice = client(&pki.root, "alice", 1);
    let (_, client_chain) = handshake(&tls, Some(&alice), &[], &pki.server_ca).expect("alice");
    assert!(client_chain.is_some());
    assert!(handshake(&tls, Some(&client(&pki.other, "o", 2)), &[], &pki.server_ca).is_err());

    let plain = ReloadableTls::new(pki.files(ClientAuth::None, &[], &[])).expect("tls");
    let (_, client_chain) = handshake(&plain, Some(&alice), &[], &pki.server_ca).expect("plain");
    assert!(client_chain.is_none());
}

#[test]
fn http_refusal_completes_handshakes_and_leaves_the_verdict_to_the_chain_check() {
    let pki = Pki::new();
    pki.write("clients.pem", &pki.root.pem);
    let files = TlsFiles {
        refuse_in: RefuseIn::Http,
        ..pki.files(ClientAuth::Required, &["clients.pem"], &[])
    };
    let tls = ReloadableTls::new(files).expect("tls");
    assert_eq!(tls.current().refuse_in(), RefuseIn::Http);
    // The material still says a certificate is required (the request is refused without one).
    assert!(tls
        .current()
        .client_verifier()
        .is_some_and(|v| v.client_auth_mandatory()));
    let now = UnixTime::now();

    // No certificate: the handshake completes, with no client chain.
    let (_, chain) = handshake(&tls, None, &[], &pki.server_ca).expect("no certificate");
    assert!(chain.is_none());

    // A certificate of an unknown CA, and an expired one: the handshake completes and the
    // chain check refuses them with a reason a client can be told.
    let oscar = client(&pki.other, "oscar", 3);
    let (_, chain) = handshake(&tls, Some(&oscar), &[], &pki.server_ca).expect("oscar");
    let chain = chain.expect("oscar's chain");
    let e = tls
        .verify_client_chain(&chain, now)
        .expect_err("unknown issuer");
    assert_eq!(refusal_reason(&e), "unknown issuer");
    let old = leaf_with(&pki.root, "old", 4, true, false);
    let (_, chain) = handshake(&tls, Some(&old), &[], &pki.server_ca).expect("expired");
    let e = tls
        .verify_client_chain(&chain.expect("chain"), now)
        .expect_err("expired");
    assert_eq!(refusal_reason(&e), "expired");

    // A good certificate verifies as before.
    let alice = client(&pki.root, "alice", 1);
    let (_, chain) = handshake(&tls, Some(&alice), &[], &pki.server_ca).expect("alice");
    assert!(tls.verify_client_chain(&chain.expect("chain"), now).is_ok());

    // The same files with the default: refused in the handshake.
    let strict =
        ReloadableTls::new(pki.files(ClientAuth::Required, &["clients.pem"], &[])).expect("tls");
    assert!(handshake(&strict, Some(&oscar), &[], &pki.server_ca).is_err());
    assert!(handshake(&strict, None, &[], &pki.server_ca).is_err());
}
