//! The shipped systemd deployment (`deploy/modgate.service` with `deploy/gateway.yaml`) as an
//! operator installs it on a fresh host: `systemd-analyze verify` accepts the unit without a
//! warning, and the configuration, moved under a temporary root laid out as systemd lays out the
//! unit's directories, passes `modgate check`, serves, and writes nothing outside the
//! directories the unit makes writable (under `ProtectSystem=strict` nothing else is).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use modgate_testkit::{free_addr, get, make_certs, modgate, modgate_bin, require, Gateway};

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The unit's `[Service]` settings named `key`, in order.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        .collect()
}

/// The directories the unit has systemd create, as absolute paths, with their modes.
fn unit_directories(unit: &str) -> Vec<(PathBuf, u32)> {
    [
        ("RuntimeDirectory", "/run"),
        ("StateDirectory", "/var/lib"),
        ("CacheDirectory", "/var/cache"),
        ("LogsDirectory", "/var/log"),
    ]
    .iter()
    .flat_map(|(key, base)| {
        let mode = unit_values(unit, &format!("{key}Mode"))
            .first()
            .map_or(0o755, |m| u32::from_str_radix(m, 8).expect("octal mode"));
        unit_values(unit, key)
            .into_iter()
            .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .map(move |name| (Path::new(base).join(name), mode))
    })
    .collect()
}

#[test]
fn systemd_analyze_verify_accepts_the_unit_without_a_warning() {
    let Some(analyze) = require(
        "systemd-analyze",
        modgate_testkit::tools::on_path("systemd-analyze"),
        "apt-get install systemd",
    ) else {
        return;
    };
    let unit = repo_file("deploy/modgate.service");
    assert!(
        unit.contains("/usr/local/bin/modgate"),
        "the unit runs /usr/local/bin/modgate"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // The unit as installed, but running the binary under test (verify checks it is executable).
    let path = dir.path().join("modgate.service");
    let bin = modgate_bin();
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/modgate", &bin.to_string_lossy()),
    )
    .expect("write unit");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    // Unknown keys, bad values and ignored settings are warnings with exit 0.
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify warned:\n{said}"
    );

    // What the unit runs is what the configuration expects.
    let dirs = unit_directories(&unit);
    let names: Vec<_> = dirs.iter().map(|(p, _)| p.display().to_string()).collect();
    assert_eq!(
        names,
        [
            "/run/modgate",
            "/var/lib/modgate",
            "/var/cache/modgate",
            "/var/log/modgate"
        ]
    );
    assert_eq!(unit_values(&unit, "PIDFile"), ["/run/modgate/modgate.pid"]);
    assert!(
        unit_values(&unit, "ReadWritePaths").is_empty(),
        "ReadWritePaths names a directory nothing creates; use the *Directory= settings"
    );
    let config = repo_file("deploy/gateway.yaml");
    assert!(config.contains("pid_file: /run/modgate/modgate.pid"));
}

/// Every file under `root`, relative to it.
fn files_under(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir") {
            let e = e.expect("entry");
            let p = e.path();
            if e.file_type().expect("type").is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(root).expect("under root").to_path_buf());
            }
        }
    }
    out
}

#[test]
fn the_shipped_configuration_serves_within_the_units_directories() {
    let unit = repo_file("deploy/modgate.service");
    let shipped = repo_file("deploy/gateway.yaml");
    let instance = tempfile::tempdir().expect("tempdir");
    let root = instance.path().join("root");
    // What systemd makes before the service starts: the unit's directories, with their modes,
    // and the configuration directory the operator fills.
    for (dir, mode) in unit_directories(&unit) {
        let d = root.join(dir.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(&d).expect("mkdir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let etc = root.join("etc/modgate");
    make_certs(&etc.join("tls"), "deploy test CA", "deploy-client");

    let public = free_addr();
    let local = free_addr();
    let r = root.to_string_lossy();
    let mut config = shipped.clone();
    for dir in [
        "/etc/modgate",
        "/run/modgate",
        "/var/lib/modgate",
        "/var/cache/modgate",
        "/var/log/modgate",
    ] {
        config = config.replace(&format!(" {dir}"), &format!(" {r}{dir}"));
    }
    config = config
        .replace("\"0.0.0.0:443\"", &format!("\"{public}\""))
        .replace("\"127.0.0.1:8080\"", &format!("\"{local}\""));
    assert!(
        !config.contains(" /etc/") && !config.contains(" /var/") && !config.contains(" /run/"),
        "every absolute path of deploy/gateway.yaml lies in a directory the unit provides:\n{config}"
    );
    let path = etc.join("gateway.yaml");
    std::fs::write(&path, &config).expect("write config");
    let check = modgate(&["check", "-c", &path.to_string_lossy()]);
    assert!(
        check.status.success(),
        "modgate check refused the shipped configuration: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let etc_before = files_under(&etc);

    let mut gw = Gateway::start_in(instance, &config, local);
    let health = get(local, "/healthz").expect("healthz");
    assert_eq!(health.status, 200, "{}", gw.log());
    // A request that is decided, audited and (offline) fails upstream: the audit log is written.
    let _ = get(local, "/golang.org/x/text/@v/list");
    gw.signal("TERM");
    assert!(
        gw.wait_exit(Duration::from_secs(30)).is_some(),
        "{}",
        gw.log()
    );

    let root = gw.dir.path().join("root");
    assert_eq!(
        files_under(&root.join("etc/modgate")),
        etc_before,
        "nothing written to /etc"
    );
    let writable: Vec<PathBuf> = unit_directories(&unit)
        .into_iter()
        .map(|(d, _)| d.strip_prefix("/").expect("absolute").to_path_buf())
        .chain([PathBuf::from("etc/modgate")])
        .collect();
    for f in files_under(&root) {
        assert!(
            writable.iter().any(|w| f.starts_with(w)),
            "modgate wrote {} outside the unit's directories",
            f.display()
        );
    }
    assert!(
        root.join("var/lib/modgate/ledger.sqlite").exists(),
        "the ledger is state"
    );
    assert!(
        root.join("var/log/modgate/audit.log").exists(),
        "the audit log is in LogsDirectory"
    );
}
