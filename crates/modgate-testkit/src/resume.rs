//! A TLS client that resumes sessions: Python's `ssl` module (OpenSSL) driven one connection
//! per command, so tests can check what a resumed TLS 1.2 session ID or TLS 1.3 ticket is
//! allowed to do after the gateway's certificate material changed.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The script, shipped with the testkit and written to a temporary file when used.
const SCRIPT: &str = include_str!("../py/resume.py");

/// What one connection did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// The request got an HTTP answer.
    Answered {
        /// Whether the handshake resumed the offered session.
        reused: bool,
        status: u16,
        /// The first line of the body.
        body: String,
    },
    /// The handshake or the exchange failed.
    Failed(String),
}

impl Resumed {
    /// The HTTP status, if the request was answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Resumed::Answered { status, .. } => Some(*status),
            Resumed::Failed(_) => None,
        }
    }

    /// Whether the handshake resumed a session.
    pub fn reused(&self) -> bool {
        matches!(self, Resumed::Answered { reused: true, .. })
    }
}

/// One `python3 resume.py` process: one TLS context, so its sessions can be resumed.
pub struct ResumingClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    _script: tempfile::NamedTempFile,
}

impl ResumingClient {
    /// A client of `addr` presenting `cert`/`key`, trusting `ca`, speaking exactly TLS
    /// `version` ("1.2" or "1.3"), fetching `path` on each connection.
    pub fn start(
        addr: SocketAddr,
        ca: &Path,
        cert: &Path,
        key: &Path,
        version: &str,
        path: &str,
    ) -> ResumingClient {
        let mut script = tempfile::Builder::new()
            .suffix(".py")
            .tempfile()
            .expect("temporary script");
        script
            .write_all(SCRIPT.as_bytes())
            .expect("write resume.py");
        let mut child = Command::new("python3")
            .arg(script.path())
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .args([ca, cert, key])
            .args([version, path])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 (make deps installs it): {e}"));
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        ResumingClient {
            child,
            stdin,
            stdout,
            _script: script,
        }
    }

    fn connect(&mut self, mode: &str) -> Resumed {
        writeln!(self.stdin, "{mode}").expect("write to resume.py");
        self.stdin.flush().expect("flush resume.py");
        let mut line = String::new();
        // The script bounds each connection with a 10 s socket timeout.
        self.stdout.read_line(&mut line).expect("read resume.py");
        parse(line.trim_end())
    }

    /// A full handshake.
    pub fn fresh(&mut self) -> Resumed {
        self.connect("fresh")
    }

    /// A handshake offering the newest session the server gave.
    pub fn resume(&mut self) -> Resumed {
        self.connect("resume")
    }
}

impl Drop for ResumingClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse(line: &str) -> Resumed {
    if let Some(e) = line.strip_prefix("error=") {
        return Resumed::Failed(e.to_string());
    }
    let mut reused = false;
    let mut status = 0;
    let mut body = String::new();
    let mut rest = line;
    if let Some(r) = rest.strip_prefix("reused=") {
        let (v, r) = r.split_once(' ').unwrap_or((r, ""));
        reused = v == "True";
        rest = r;
    }
    if let Some(r) = rest.strip_prefix("status=") {
        let (v, r) = r.split_once(' ').unwrap_or((r, ""));
        status = v.parse().unwrap_or(0);
        rest = r;
    }
    if let Some(b) = rest.strip_prefix("body=") {
        body = b.to_string();
    }
    if status == 0 {
        return Resumed::Failed(format!("unexpected output from resume.py: {line:?}"));
    }
    Resumed::Answered {
        reused,
        status,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_script_lines() {
        assert_eq!(
            parse("reused=True status=403 body=modgate: no"),
            Resumed::Answered {
                reused: true,
                status: 403,
                body: "modgate: no".into()
            }
        );
        assert_eq!(
            parse("error=SSLError: [SSL] alert"),
            Resumed::Failed("SSLError: [SSL] alert".into())
        );
        assert!(matches!(parse("garbage"), Resumed::Failed(_)));
    }
}
