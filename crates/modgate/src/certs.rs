//! `modgate certs`: a development PKI — a CA, a server certificate for the given host names and
//! addresses, and client certificates — written as PEM files. For trying modgate out and for
//! tests; production certificates come from your own CA.
//!
//! The CA is valid for [`CA_DAYS`], the others for a number of days ([`DEFAULT_DAYS`] unless
//! asked otherwise, never past the CA's end), all from [`CLOCK_SKEW`] before now. A CA already
//! in the output directory is kept and signs whatever is missing, so more client certificates
//! (`client-<name>.pem`) can be issued later without replacing it; only `force` makes a new CA
//! (and every certificate anew).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};

/// The files `modgate certs` writes by default, relative to its output directory.
pub const FILES: [&str; 6] = [
    "ca.pem",
    "ca.key",
    "server.pem",
    "server.key",
    "client.pem",
    "client.key",
];

/// How long a new CA is valid: about ten years.
pub const CA_DAYS: u32 = 3650;

/// How long server and client certificates are valid unless asked otherwise: a year.
pub const DEFAULT_DAYS: u32 = 365;

/// Every certificate is valid from this long before it was made, so a machine whose clock is a
/// little behind accepts it at once.
pub const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// Longest name of an extra client certificate (it is also part of a file name).
const MAX_CLIENT_NAME: usize = 64;

/// What to generate.
pub struct CertRequest<'a> {
    pub out: &'a Path,
    /// Server certificate subject alternative names (DNS names or IP addresses).
    pub hosts: &'a [String],
    /// Common name of the CA (lets tests make several distinct CAs).
    pub ca_name: &'a str,
    /// Common name of the client certificate.
    pub client_name: &'a str,
    /// Make a new CA and every certificate anew, replacing existing files.
    pub force: bool,
}

/// Validity and extra client certificates.
pub struct Issue<'a> {
    /// Days the server and client certificates are valid (capped at the CA's end).
    pub days: u32,
    /// Extra client certificates, `client-<name>.pem` / `.key`, common name `<name>`.
    pub clients: &'a [String],
}

impl Default for Issue<'_> {
    fn default() -> Self {
        Issue {
            days: DEFAULT_DAYS,
            clients: &[],
        }
    }
}

/// What [`generate_with`] did.
#[derive(Debug, Default)]
pub struct Report {
    /// The files written (none when everything asked for exists already).
    pub written: Vec<PathBuf>,
    /// Things worth telling (a validity cut short by the CA's).
    pub notes: Vec<String>,
}

/// The certificate and key files of an extra client certificate.
pub fn client_files(name: &str) -> [String; 2] {
    [format!("client-{name}.pem"), format!("client-{name}.key")]
}

/// Checks the name of an extra client certificate: it becomes a file name and a common name.
pub fn check_client_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CLIENT_NAME
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    anyhow::ensure!(
        ok,
        "client name {name:?}: use 1 to {MAX_CLIENT_NAME} letters, digits, '.', '_', '-' or '@', \
         not starting with '.' or '-' (it is also a file name)"
    );
    Ok(())
}

/// Writes the development PKI with the default validity; returns the files written (none when
/// all exist already and `force` is off). For tests that need certificates.
#[cfg(test)]
pub fn generate(req: &CertRequest<'_>) -> anyhow::Result<Vec<PathBuf>> {
    Ok(generate_with(req, &Issue::default())?.written)
}

/// The date a `Duration` after the Unix epoch, as rcgen wants it (a macro: the date type is
/// the `time` crate's, which modgate does not name).
macro_rules! at {
    ($since_epoch:expr) => {
        rcgen::date_time_ymd(1970, 1, 1) + $since_epoch
    };
}

/// The CA that signs: its issuer, and when it stops being valid (since the epoch).
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    not_after: Duration,
}

/// Makes a new CA; returns it with its PEM certificate and key.
fn new_ca(name: &str, now: Duration) -> anyhow::Result<(Ca, String, String)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "modgate development");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let not_after = now + days(CA_DAYS);
    params.not_before = at!(now.saturating_sub(CLOCK_SKEW));
    params.not_after = at!(not_after);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let (pem, key_pem) = (cert.pem(), key.serialize_pem());
    Ok((
        Ca {
            issuer: Issuer::new(params, key),
            not_after,
        },
        pem,
        key_pem,
    ))
}

/// Reads the CA already in the output directory; its key must be the certificate's.
fn load_ca(cert: &Path, key: &Path) -> anyhow::Result<Ca> {
    let cert_pem =
        fs::read_to_string(cert).with_context(|| format!("reading {}", cert.display()))?;
    let key_pem = fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let key_pair =
        KeyPair::from_pem(&key_pem).with_context(|| format!("reading {}", key.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", cert.display()))?;
    let parsed = pem
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("{}: not a certificate: {e}", cert.display()))?;
    anyhow::ensure!(
        parsed.is_ca(),
        "{}: not a CA certificate (no basicConstraints CA:true)",
        cert.display()
    );
    anyhow::ensure!(
        parsed.public_key().subject_public_key.data.as_ref() == key_pair.der_bytes(),
        "{} is not the key of {}",
        key.display(),
        cert.display()
    );
    let not_after =
        Duration::from_secs(u64::try_from(parsed.validity().not_after.timestamp()).unwrap_or(0));
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key_pair)
        .with_context(|| format!("using {} as the issuer", cert.display()))?;
    Ok(Ca { issuer, not_after })
}

fn days(n: u32) -> Duration {
    Duration::from_secs(u64::from(n) * 86_400)
}

/// One certificate to issue, signed by the CA.
enum Leaf<'a> {
    Server(&'a [String]),
    Client(&'a str),
}

/// Issues a leaf valid from `now - CLOCK_SKEW` for `days` (not past the CA's end); returns the
/// PEM certificate and key, and a note when the CA's end cut it short.
fn issue(
    ca: &Ca,
    leaf: &Leaf<'_>,
    now: Duration,
    valid_days: u32,
) -> anyhow::Result<(String, String, Option<String>)> {
    let mut params = match leaf {
        Leaf::Server(hosts) => {
            let mut p = CertificateParams::new(hosts.to_vec())
                .with_context(|| format!("server names {hosts:?}"))?;
            p.distinguished_name
                .push(DnType::CommonName, hosts[0].as_str());
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            p
        }
        Leaf::Client(name) => {
            let mut p = CertificateParams::new(Vec::<String>::new())?;
            p.distinguished_name.push(DnType::CommonName, *name);
            p.distinguished_name
                .push(DnType::OrganizationName, "modgate development");
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p
        }
    };
    let wanted = now + days(valid_days);
    let end = wanted.min(ca.not_after);
    let note = (end < wanted).then(|| {
        format!(
            "the CA expires in {} day(s): the certificate is valid until then, not for {valid_days} \
             day(s) (--force makes a new CA)",
            ca.not_after.saturating_sub(now).as_secs() / 86_400
        )
    });
    anyhow::ensure!(
        end > now,
        "the CA has expired; --force makes a new CA (and every certificate anew)"
    );
    params.not_before = at!(now.saturating_sub(CLOCK_SKEW));
    params.not_after = at!(end);
    // Names the CA's key (its subject key identifier), for chain building beside other CAs.
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((cert.pem(), key.serialize_pem(), note))
}

/// Writes the development PKI: the CA (kept when present, unless `force`), then each of the
/// server certificate, the client certificate and the extra client certificates whose files
/// are missing (all of them under a new CA).
pub fn generate_with(req: &CertRequest<'_>, opts: &Issue<'_>) -> anyhow::Result<Report> {
    for name in opts.clients {
        check_client_name(name)?;
    }
    anyhow::ensure!(
        (1..=CA_DAYS).contains(&opts.days),
        "--days {}: give 1 to {CA_DAYS}",
        opts.days
    );
    let p = |f: &str| req.out.join(f);
    let [ca_pem, ca_key, server_pem, server_key, client_pem, client_key] = FILES.map(p);
    let ca_present = (ca_pem.exists(), ca_key.exists());
    anyhow::ensure!(
        req.force || ca_present.0 == ca_present.1,
        "{} holds {} but not {}: that CA cannot sign; --force makes a new CA (and every \
         certificate anew)",
        req.out.display(),
        if ca_present.0 { "ca.pem" } else { "ca.key" },
        if ca_present.0 { "ca.key" } else { "ca.pem" },
    );
    let fresh = req.force || !ca_present.0;

    let mut hosts: Vec<String> = req.hosts.to_vec();
    if hosts.is_empty() {
        hosts = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    }
    let mut leaves: Vec<(Leaf<'_>, PathBuf, PathBuf)> = vec![
        (Leaf::Server(&hosts), server_pem, server_key),
        (Leaf::Client(req.client_name), client_pem, client_key),
    ];
    for name in opts.clients {
        let [cert, key] = client_files(name);
        leaves.push((Leaf::Client(name), p(&cert), p(&key)));
    }
    leaves.retain(|(_, cert, key)| fresh || !cert.exists() || !key.exists());
    let mut report = Report::default();
    if !fresh && leaves.is_empty() {
        return Ok(report);
    }

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?;
    fs::create_dir_all(req.out).with_context(|| format!("creating {}", req.out.display()))?;
    let ca = if fresh {
        let (ca, pem, key) = new_ca(req.ca_name, now)?;
        write_file(&ca_pem, pem.as_bytes(), false)?;
        write_file(&ca_key, key.as_bytes(), true)?;
        report.written.extend([ca_pem, ca_key]);
        ca
    } else {
        load_ca(&ca_pem, &ca_key)?
    };
    for (leaf, cert_path, key_path) in &leaves {
        let (cert, key, note) = issue(&ca, leaf, now, opts.days)?;
        write_file(cert_path, cert.as_bytes(), false)?;
        write_file(key_path, key.as_bytes(), true)?;
        if let Some(n) = note {
            report.notes.push(format!("{}: {n}", cert_path.display()));
        }
        report.written.extend([cert_path.clone(), key_path.clone()]);
    }
    Ok(report)
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

    fn request(out: &Path) -> CertRequest<'_> {
        CertRequest {
            out,
            hosts: &[],
            ca_name: "test CA",
            client_name: "alice",
            force: false,
        }
    }

    #[test]
    fn generated_files_load_as_tls_material() {
        let dir = tempfile::tempdir().expect("tempdir");
        let req = request(dir.path());
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

    fn validity(path: &Path) -> (i64, i64, Vec<u8>) {
        let pem = fs::read(path).expect("read");
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("pem");
        let cert = pem.parse_x509().expect("x509");
        (
            cert.validity().not_before.timestamp(),
            cert.validity().not_after.timestamp(),
            cert.issuer().as_raw().to_vec(),
        )
    }

    #[test]
    fn a_missing_certificate_is_issued_by_the_ca_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let req = request(dir.path());
        generate(&req).expect("generate");
        let ca_before = fs::read(dir.path().join("ca.pem")).expect("ca");
        fs::remove_file(dir.path().join("server.pem")).expect("rm");
        let clients = ["bob".to_string()];
        let report = generate_with(
            &req,
            &Issue {
                days: 30,
                clients: &clients,
            },
        )
        .expect("again");
        let names: Vec<String> = report
            .written
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
            .collect();
        assert_eq!(
            names,
            [
                "server.pem",
                "server.key",
                "client-bob.pem",
                "client-bob.key"
            ]
        );
        assert_eq!(fs::read(dir.path().join("ca.pem")).expect("ca"), ca_before);
        server(
            &dir.path().join("server.pem"),
            &dir.path().join("server.key"),
        )
        .expect("the new server certificate loads");
        let (_, ca_end, _) = validity(&dir.path().join("ca.pem"));
        let (from, to, issuer) = validity(&dir.path().join("client-bob.pem"));
        assert_eq!(to - from, 30 * 86_400 + 3600);
        assert!(to < ca_end);
        let (_, _, server_issuer) = validity(&dir.path().join("server.pem"));
        assert_eq!(issuer, server_issuer);
    }

    #[test]
    fn half_a_ca_and_bad_names_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let req = request(dir.path());
        generate(&req).expect("generate");
        fs::remove_file(dir.path().join("ca.key")).expect("rm");
        fs::remove_file(dir.path().join("client.pem")).expect("rm");
        let e = generate(&req).expect_err("no CA key").to_string();
        assert!(e.contains("ca.pem but not ca.key"), "{e}");
        for bad in ["", "../x", ".hidden", "a b", "-x", &"x".repeat(65)] {
            assert!(check_client_name(bad).is_err(), "{bad:?}");
        }
        for good in ["alice", "ci-bot.2", "bob@corp"] {
            check_client_name(good).expect(good);
        }
    }
}
