//! `modgate certs`: a development PKI — a CA, a server certificate for the given host names and
//! addresses, and a client certificate — written as PEM files. For trying modgate out and for
//! tests; production certificates come from your own CA.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The files `modgate certs` writes, relative to its output directory.
pub const FILES: [&str; 6] = [
    "ca.pem",
    "ca.key",
    "server.pem",
    "server.key",
    "client.pem",
    "client.key",
];

/// What to generate.
pub struct CertRequest<'a> {
    pub out: &'a Path,
    /// Server certificate subject alternative names (DNS names or IP addresses).
    pub hosts: &'a [String],
    /// Common name of the CA (lets tests make several distinct CAs).
    pub ca_name: &'a str,
    /// Common name of the client certificate.
    pub client_name: &'a str,
    /// Overwrite existing files.
    pub force: bool,
}

/// Writes the development PKI; returns the files written (none when all exist already and
/// `force` is off).
pub fn generate(req: &CertRequest<'_>) -> anyhow::Result<Vec<PathBuf>> {
    let paths: Vec<PathBuf> = FILES.iter().map(|f| req.out.join(f)).collect();
    if !req.force && paths.iter().all(|p| p.exists()) {
        return Ok(Vec::new());
    }
    fs::create_dir_all(req.out).with_context(|| format!("creating {}", req.out.display()))?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, req.ca_name);
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "modgate development");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut hosts: Vec<String> = req.hosts.to_vec();
    if hosts.is_empty() {
        hosts = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    }
    let mut server_params =
        CertificateParams::new(hosts.clone()).with_context(|| format!("server names {hosts:?}"))?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, hosts[0].as_str());
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let server_key = KeyPair::generate()?;
    let server_cert = server_params.signed_by(&server_key, &issuer)?;

    let mut client_params = CertificateParams::new(Vec::<String>::new())?;
    client_params
        .distinguished_name
        .push(DnType::CommonName, req.client_name);
    client_params
        .distinguished_name
        .push(DnType::OrganizationName, "modgate development");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let client_key = KeyPair::generate()?;
    let client_cert = client_params.signed_by(&client_key, &issuer)?;

    let contents = [
        (ca_pem, false),
        (ca_key_pem, true),
        (server_cert.pem(), false),
        (server_key.serialize_pem(), true),
        (client_cert.pem(), false),
        (client_key.serialize_pem(), true),
    ];
    for (path, (text, secret)) in paths.iter().zip(contents.iter()) {
        write_file(path, text.as_bytes(), *secret)?;
    }
    Ok(paths)
}

fn write_file(path: &Path, data: &[u8], secret: bool) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tls::{client_cert_key, read_certs, read_key};

    fn server(cert: &Path, key: &Path) -> Result<(), String> {
        modgate_identity::tls::validate(&modgate_identity::TlsFiles::new(cert, key))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn generated_files_load_as_tls_material() {
        let dir = tempfile::tempdir().expect("tempdir");
        let req = CertRequest {
            out: dir.path(),
            hosts: &[],
            ca_name: "test CA",
            client_name: "alice",
            force: false,
        };
        let written = generate(&req).expect("generate");
        assert_eq!(written.len(), FILES.len());
        let p = |f: &str| dir.path().join(f);
        server(&p("server.pem"), &p("server.key")).expect("server");
        let (cert, key) = (p("client.pem"), p("client.key"));
        client_cert_key(
            cert.clone(),
            read_certs(&cert).expect("certs"),
            key.clone(),
            read_key(&key).expect("key"),
        )
        .expect("client");
        crate::tls::load_ca_bundle(&p("ca.pem")).expect("ca");
        // Mismatched certificate and key are refused with a message naming both files.
        let e = server(&p("server.pem"), &p("client.key")).expect_err("mismatch");
        assert!(e.contains("client.key"), "{e}");
        // A second run keeps the files.
        assert!(generate(&req).expect("again").is_empty());
    }
}
