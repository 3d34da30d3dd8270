//! `modgate reload`: makes the running gateway apply its configuration file (SIGHUP through
//! its pid file) and prints the process's own report. Exit 0 applied, 1 refused (the old
//! configuration stays in force), 2 no running gateway answered.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Exit, Outcome};
use crate::model::ReloadReport;
use crate::{config, reload};

fn read_report(path: &Path) -> Option<ReloadReport> {
    let bytes = crate::rundir::read_nofollow(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Prints a reload's outcome; applied or refused.
fn print_report(r: &ReloadReport) -> Exit {
    if !r.applied {
        eprintln!(
            "modgate: reload refused, generation {} stays in force: {}",
            r.generation,
            r.error.as_deref().unwrap_or("unknown error")
        );
        return Exit::No;
    }
    println!("reloaded: generation {}", r.generation);
    if r.changes.is_empty() {
        println!("  no changes in the configuration file (credential and TLS files re-read)");
    }
    for c in &r.changes {
        println!("  {c}");
    }
    for u in &r.needs_upgrade {
        println!("  not applied: {u}; use `modgate run --upgrade`");
    }
    Exit::Success
}

/// The pid file a configuration names, read leniently: a file `check` refuses still names the
/// process it is meant for — as YAML when it parses, else from its `pid_file:` line — and the
/// per-instance default when it names none.
fn pid_file_of(path: &Path) -> PathBuf {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("server")?
                .get("pid_file")?
                .as_str()
                .map(PathBuf::from)
        })
        .or_else(|| pid_file_line(&text).map(PathBuf::from))
        .unwrap_or_else(|| config::instance_paths(path).0)
}

/// The value of the first `pid_file:` key in text that is not valid YAML (block or flow style,
/// quoted or not).
fn pid_file_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split(" #").next().unwrap_or(line);
        let at = line.find("pid_file:")?;
        let before = line[..at].trim_end();
        if !(before.is_empty() || before.ends_with(['{', ',', ':'])) {
            return None;
        }
        let rest = line[at + "pid_file:".len()..].trim_start();
        let value = match rest.chars().next()? {
            q @ ('"' | '\'') => rest[1..].split(q).next()?,
            _ => rest.split([',', '}']).next()?.trim_end(),
        };
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// Signals the process named by the file's pid file and waits for that process's own report:
/// what changed, or why it refused the file (the same `file:line:col` message `check` prints;
/// the process validates the file itself, so a refusal is counted in its metrics too). A file
/// that does not load and has no running gateway to tell is refused here (status 1).
pub fn reload(path: &Path, timeout_secs: f64) -> Outcome {
    let (pid_file, local_error) = match config::load(path) {
        Ok(c) => (PathBuf::from(&c.server.pid_file), None),
        Err(e) => (pid_file_of(path), Some(e.to_string())),
    };
    let refused_here = |why: &str| {
        if let Some(e) = &local_error {
            eprintln!("modgate: {e}");
            eprintln!("modgate: reload refused; {why}");
            Exit::No
        } else {
            Exit::Error
        }
    };
    let pid_file = pid_file.as_path();
    // The default per-user directory must be ours and private: a planted one would name a
    // process of someone else's choosing.
    if let Some(dir) = pid_file
        .parent()
        .filter(|d| *d == config::instance_dir() && std::fs::symlink_metadata(d).is_ok())
    {
        crate::rundir::verify(dir, "remove it and restart the gateway")?;
    }
    // Only the process holding the pid file's lock is the gateway: a stale file's pid may have
    // been reused by any process, which must not be signalled.
    let pid = match crate::rundir::running_pid(pid_file) {
        Ok(p) => p,
        Err(e @ crate::rundir::PidFileError::Bad(_)) => {
            eprintln!("modgate: {}: {e}", pid_file.display());
            return Ok(refused_here("no running gateway was told"));
        }
        Err(e @ crate::rundir::PidFileError::NotHolder { .. }) => {
            eprintln!(
                "modgate: no running gateway: pid file {} {e}",
                pid_file.display()
            );
            return Ok(refused_here("no running gateway was told"));
        }
        Err(e) if local_error.is_some() => {
            // The file does not load, so where its gateway keeps its pid file is a guess:
            // say so rather than that no gateway runs.
            eprintln!(
                "modgate: cannot tell which gateway runs this file: it does not load, and the pid \
                 file it seems to name, {}, cannot be read ({e})",
                pid_file.display()
            );
            return Ok(refused_here("no running gateway was told"));
        }
        Err(e) => {
            eprintln!(
                "modgate: no running gateway: cannot read pid file {}: {e}",
                pid_file.display()
            );
            return Ok(refused_here("no running gateway was told"));
        }
    };
    let status = reload::status_path(pid_file);
    let before = read_report(&status)
        .filter(|r| r.pid == pid as u32)
        .map(|r| r.attempt)
        .unwrap_or(0);
    // `running_pid` only returns a positive pid (never 0 or a group).
    let Some(target) = rustix::process::Pid::from_raw(pid) else {
        anyhow::bail!("pid file {} names pid {pid}", pid_file.display());
    };
    if let Err(e) = rustix::process::kill_process(target, rustix::process::Signal::HUP) {
        anyhow::bail!(
            "cannot signal pid {pid} (from {}): {}",
            pid_file.display(),
            std::io::Error::from(e)
        );
    }
    // (`try_`: a NaN given as --timeout would make `from_secs_f64` panic.)
    let wait = Duration::try_from_secs_f64(timeout_secs.clamp(0.1, 3600.0))
        .unwrap_or(Duration::from_secs(15));
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Some(r) = read_report(&status).filter(|r| r.pid == pid as u32 && r.attempt > before)
        {
            return Ok(print_report(&r));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!(
        "pid {pid} did not report a reload within {timeout_secs}s (see its log; {})",
        status.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_file_line_of_a_file_that_does_not_parse() {
        let block = "server:\n  pid_file: /run/modgate/modgate.pid   # ours\nlisteners: [\n";
        assert_eq!(
            pid_file_line(block).as_deref(),
            Some("/run/modgate/modgate.pid")
        );
        let flow = "server: { threads: 2, pid_file: \"/run/m.pid\", grace_period: 1s }\n\t: x";
        assert_eq!(pid_file_line(flow).as_deref(), Some("/run/m.pid"));
        let single = "server: {pid_file: '/a b/m.pid'}";
        assert_eq!(pid_file_line(single).as_deref(), Some("/a b/m.pid"));
        assert_eq!(pid_file_line("server:\n  my_pid_file: /x\n"), None);
        assert_eq!(pid_file_line("# pid_file: /x\n"), None);
        assert_eq!(pid_file_line("server:\n  pid_file:\n"), None);
    }
}
