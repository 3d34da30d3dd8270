//! mgload's command line (flag names follow h2load's where they mean the same), checked into
//! a [`Plan`] before anything connects: one https host, the paths to request round-robin, how
//! many connections and streams, for how long or how many requests, and the TLS material.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// The command line as typed.
#[derive(Debug, Parser)]
#[command(
    name = "mgload",
    about = "HTTP/2 and HTTP/1.1 load over TLS 1.3, with an optional client certificate",
    long_about = "HTTP/2 and HTTP/1.1 load over TLS 1.3, with an optional client certificate.\n\
                  Requests the URLs (one host) round-robin for -D seconds or -n requests and \
                  prints h2load-like figures, latency percentiles and its own CPU time."
)]
pub struct Args {
    /// https:// URLs, all on one host and port; their paths are requested round-robin.
    #[arg(required = true, value_name = "URL")]
    pub urls: Vec<String>,
    /// Connections.
    #[arg(short = 'c', long = "clients", default_value_t = 1)]
    pub clients: u64,
    /// Concurrent streams per HTTP/2 connection (HTTP/1.1: must be 1).
    #[arg(short = 'm', long = "max-concurrent-streams", default_value_t = 1)]
    pub streams: u64,
    /// Seconds to run (decimals allowed); exactly one of -D and -n.
    #[arg(short = 'D', long = "duration")]
    pub duration: Option<f64>,
    /// Requests to make in all; exactly one of -D and -n.
    #[arg(short = 'n', long = "requests")]
    pub requests: Option<u64>,
    /// Runtime threads (1: everything on one thread, like h2load -t1).
    #[arg(short = 't', long = "threads", default_value_t = 1)]
    pub threads: u64,
    /// Speak HTTP/1.1 (ALPN http/1.1, keep-alive, one request in flight per connection).
    #[arg(long = "h1")]
    pub h1: bool,
    /// PEM file of the CA(s) the server certificate must chain to.
    #[arg(long = "cacert", value_name = "FILE")]
    pub cacert: PathBuf,
    /// PEM client certificate (chain, leaf first) to present; needs --key.
    #[arg(long = "cert", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long = "key", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// TLS 1.3 cipher suites to offer, colon-separated (TLS_AES_128_GCM_SHA256,
    /// TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256); all of them by default.
    #[arg(long = "tls13-ciphers", value_name = "SUITES")]
    pub tls13_ciphers: Option<String>,
    /// Seconds a request may take before it counts as timed out.
    #[arg(long = "timeout", default_value_t = 10.0)]
    pub timeout: f64,
    /// Seconds a TCP connect plus TLS handshake may take.
    #[arg(long = "connect-timeout", default_value_t = 5.0)]
    pub connect_timeout: f64,
}

/// HTTP version spoken on every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/2 (ALPN h2), several streams per connection.
    H2,
    /// HTTP/1.1 (ALPN http/1.1), keep-alive, one request at a time.
    H1,
}

impl Protocol {
    /// The ALPN protocol id.
    pub fn alpn(self) -> &'static str {
        match self {
            Protocol::H2 => "h2",
            Protocol::H1 => "http/1.1",
        }
    }
}

/// When the run ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// No request starts after this long.
    Duration(Duration),
    /// This many requests in all.
    Requests(u64),
}

/// The server all URLs name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP address (no brackets), for the TCP connect and the TLS server name.
    pub host: String,
    /// TCP port (443 when the URL names none).
    pub port: u16,
    /// `host:port` as written in the URL, for `:authority` / `Host`.
    pub authority: String,
}

/// A checked command line.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The server every URL names.
    pub target: Target,
    /// Path and query of each URL, requested round-robin.
    pub paths: Vec<String>,
    /// Connections kept open at once (`-c`).
    pub connections: usize,
    /// Requests in flight per connection (`-m`; 1 for HTTP/1.1).
    pub streams: usize,
    /// When the run ends (`-D` or `-n`).
    pub limit: Limit,
    /// Runtime threads (`-t`).
    pub threads: usize,
    /// HTTP/2 or HTTP/1.1 (`--h1`).
    pub protocol: Protocol,
    /// CA file the server certificate is checked against.
    pub cacert: PathBuf,
    /// Client certificate and key files.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Cipher suite names (IANA spelling) to offer; None: all TLS 1.3 suites.
    pub ciphers: Option<Vec<String>>,
    /// Longest a request may take.
    pub timeout: Duration,
    /// Longest a TCP connect plus TLS (and HTTP/2) handshake may take.
    pub connect_timeout: Duration,
}

/// Why a command line is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArgsError {
    #[error("--cert {0} needs --key (the client certificate's private key)")]
    CertWithoutKey(String),
    #[error("--key needs --cert (the client certificate it belongs to)")]
    KeyWithoutCert,
    #[error("give exactly one of -D/--duration and -n/--requests")]
    Limit,
    #[error("{name} must be {range}, not {value}")]
    Range {
        name: &'static str,
        range: &'static str,
        value: String,
    },
    #[error("HTTP/1.1 keeps one request in flight per connection: -m must be 1, not {0}")]
    H1Streams(u64),
    #[error("{0:?} is not an https:// URL with a host")]
    Url(String),
    #[error("all URLs must name one host and port: {0:?} differs from {1:?}")]
    MixedTargets(String, String),
    #[error("unknown TLS 1.3 cipher suite {0:?} (TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256)")]
    Cipher(String),
}

/// The TLS 1.3 suites mgload knows, by their IANA / OpenSSL names.
pub const SUITES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

fn range<T: PartialOrd + ToString>(
    name: &'static str,
    v: T,
    lo: T,
    hi: T,
    text: &'static str,
) -> Result<T, ArgsError> {
    if v >= lo && v <= hi {
        Ok(v)
    } else {
        Err(ArgsError::Range {
            name,
            range: text,
            value: v.to_string(),
        })
    }
}

fn seconds(name: &'static str, v: f64, hi: f64, text: &'static str) -> Result<Duration, ArgsError> {
    if v.is_finite() && v > 0.0 && v <= hi {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(ArgsError::Range {
            name,
            range: text,
            value: v.to_string(),
        })
    }
}

/// Splits an https URL into its target and its path (with query; "/" when empty).
pub fn parse_url(url: &str) -> Result<(Target, String), ArgsError> {
    let bad = || ArgsError::Url(url.to_string());
    let uri: http::Uri = url.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("https") {
        return Err(bad());
    }
    let auth = uri.authority().ok_or_else(bad)?;
    let host = auth.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || auth.as_str().contains('@') {
        return Err(bad());
    }
    let port = auth.port_u16().unwrap_or(443);
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Ok((
        Target {
            host: host.to_string(),
            port,
            authority: auth.as_str().to_string(),
        },
        path,
    ))
}

impl Args {
    /// Checks the command line and turns it into a plan.
    pub fn plan(&self) -> Result<Plan, ArgsError> {
        let client_cert = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (Some(c), None) => return Err(ArgsError::CertWithoutKey(c.display().to_string())),
            (None, Some(_)) => return Err(ArgsError::KeyWithoutCert),
            (None, None) => None,
        };
        let limit = match (self.duration, self.requests) {
            (Some(d), None) => Limit::Duration(seconds("-D", d, 86_400.0, "0 < s <= 86400")?),
            (None, Some(n)) => Limit::Requests(range("-n", n, 1, 1_000_000_000, "1..=1e9")?),
            _ => return Err(ArgsError::Limit),
        };
        let connections = range("-c", self.clients, 1, 10_000, "1..=10000")? as usize;
        let streams = range("-m", self.streams, 1, 1_000, "1..=1000")? as usize;
        let threads = range("-t", self.threads, 1, 64, "1..=64")? as usize;
        let protocol = if self.h1 { Protocol::H1 } else { Protocol::H2 };
        if protocol == Protocol::H1 && streams != 1 {
            return Err(ArgsError::H1Streams(self.streams));
        }
        let mut target: Option<Target> = None;
        let mut paths = Vec::with_capacity(self.urls.len());
        for url in &self.urls {
            let (t, p) = parse_url(url)?;
            match &target {
                Some(first) if *first != t => {
                    return Err(ArgsError::MixedTargets(
                        url.clone(),
                        first.authority.clone(),
                    ))
                }
                Some(_) => {}
                None => target = Some(t),
            }
            paths.push(p);
        }
        let target = target.ok_or_else(|| ArgsError::Url(String::new()))?;
        let ciphers = match &self.tls13_ciphers {
            None => None,
            Some(list) => {
                let mut v = Vec::new();
                for name in list.split(':').filter(|s| !s.is_empty()) {
                    let canon = name.to_ascii_uppercase().replace("TLS13_", "TLS_");
                    if !SUITES.contains(&canon.as_str()) {
                        return Err(ArgsError::Cipher(name.to_string()));
                    }
                    v.push(canon);
                }
                if v.is_empty() {
                    return Err(ArgsError::Cipher(list.clone()));
                }
                Some(v)
            }
        };
        Ok(Plan {
            target,
            paths,
            connections,
            streams,
            limit,
            threads,
            protocol,
            cacert: self.cacert.clone(),
            client_cert,
            ciphers,
            timeout: seconds("--timeout", self.timeout, 3600.0, "0 < s <= 3600")?,
            connect_timeout: seconds(
                "--connect-timeout",
                self.connect_timeout,
                600.0,
                "0 < s <= 600",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Result<Plan, ArgsError> {
        let mut v = vec!["mgload"];
        v.extend_from_slice(args);
        Args::try_parse_from(v)
            .unwrap_or_else(|e| panic!("clap refused {args:?}: {e}"))
            .plan()
    }

    #[test]
    fn h2load_style_command_line() {
        let p = plan(&[
            "-c32",
            "-m8",
            "-D",
            "2.5",
            "--cacert",
            "ca.pem",
            "--cert",
            "c.pem",
            "--key",
            "c.key",
            "--tls13-ciphers",
            "TLS_AES_128_GCM_SHA256",
            "https://127.0.0.1:18613/example.com/bench/@v/v1.0.0.info",
            "https://127.0.0.1:18613/example.com/bench/@v/list?x=1",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.connections, 32);
        assert_eq!(p.streams, 8);
        assert_eq!(p.limit, Limit::Duration(Duration::from_millis(2500)));
        assert_eq!(p.protocol, Protocol::H2);
        assert_eq!(p.threads, 1);
        assert_eq!(
            p.target,
            Target {
                host: "127.0.0.1".into(),
                port: 18613,
                authority: "127.0.0.1:18613".into()
            }
        );
        assert_eq!(
            p.paths,
            [
                "/example.com/bench/@v/v1.0.0.info",
                "/example.com/bench/@v/list?x=1"
            ]
        );
        assert_eq!(
            p.client_cert,
            Some((PathBuf::from("c.pem"), PathBuf::from("c.key")))
        );
        assert_eq!(p.ciphers, Some(vec!["TLS_AES_128_GCM_SHA256".to_string()]));
        assert_eq!(p.timeout, Duration::from_secs(10));
    }

    #[test]
    fn h1_request_count_defaults() {
        let p = plan(&[
            "--h1",
            "-n",
            "1000",
            "-c",
            "4",
            "--cacert=ca.pem",
            "https://localhost",
            "--tls13-ciphers",
            "tls13_aes_256_gcm_sha384:TLS_CHACHA20_POLY1305_SHA256",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.protocol, Protocol::H1);
        assert_eq!(p.limit, Limit::Requests(1000));
        assert_eq!(p.streams, 1);
        assert_eq!(p.target.port, 443);
        assert_eq!(p.target.authority, "localhost");
        assert_eq!(p.paths, ["/"]);
        assert_eq!(p.client_cert, None);
        assert_eq!(
            p.ciphers,
            Some(vec![
                "TLS_AES_256_GCM_SHA384".to_string(),
                "TLS_CHACHA20_POLY1305_SHA256".to_string()
            ])
        );
    }

    #[test]
    fn ipv6_host_loses_its_brackets() {
        let (t, p) = parse_url("https://[::1]:8443/a/b").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.host, "::1");
        assert_eq!(t.authority, "[::1]:8443");
        assert_eq!(p, "/a/b");
    }

    #[test]
    fn cert_without_key_is_refused() {
        let e = plan(&["-n1", "--cacert", "ca", "--cert", "c.pem", "https://h/"]);
        assert_eq!(e.err(), Some(ArgsError::CertWithoutKey("c.pem".into())));
        let e = plan(&["-n1", "--cacert", "ca", "--key", "c.key", "https://h/"]);
        assert_eq!(e.err(), Some(ArgsError::KeyWithoutCert));
    }

    #[test]
    fn refusals() {
        let cases: &[(&[&str], &str)] = &[
            (&["--cacert", "ca", "https://h/"], "exactly one of"),
            (
                &["-D1", "-n1", "--cacert", "ca", "https://h/"],
                "exactly one of",
            ),
            (&["-D0", "--cacert", "ca", "https://h/"], "-D must be"),
            (&["-Dinf", "--cacert", "ca", "https://h/"], "-D must be"),
            (&["-n0", "--cacert", "ca", "https://h/"], "-n must be"),
            (
                &["-n1", "-c0", "--cacert", "ca", "https://h/"],
                "-c must be",
            ),
            (
                &["-n1", "-m1001", "--cacert", "ca", "https://h/"],
                "-m must be",
            ),
            (
                &["-n1", "-t0", "--cacert", "ca", "https://h/"],
                "-t must be",
            ),
            (
                &["-n1", "--h1", "-m2", "--cacert", "ca", "https://h/"],
                "-m must be 1",
            ),
            (
                &["-n1", "--cacert", "ca", "http://h/"],
                "not an https:// URL",
            ),
            (
                &["-n1", "--cacert", "ca", "/just/a/path"],
                "not an https:// URL",
            ),
            (
                &["-n1", "--cacert", "ca", "https://u:p@h/"],
                "not an https:// URL",
            ),
            (
                &["-n1", "--cacert", "ca", "https://h:1/", "https://h:2/"],
                "one host and port",
            ),
            (
                &[
                    "-n1",
                    "--cacert",
                    "ca",
                    "--tls13-ciphers",
                    "RC4",
                    "https://h/",
                ],
                "unknown TLS 1.3 cipher suite \"RC4\"",
            ),
            (
                &["-n1", "--cacert", "ca", "--timeout=0", "https://h/"],
                "--timeout must be",
            ),
        ];
        for (args, want) in cases {
            match plan(args) {
                Ok(p) => panic!("{args:?} accepted: {p:?}"),
                Err(e) => assert!(e.to_string().contains(want), "{args:?}: {e}"),
            }
        }
    }

    #[test]
    fn clap_requires_cacert_and_a_url() {
        assert!(Args::try_parse_from(["mgload", "-n1", "https://h/"]).is_err());
        assert!(Args::try_parse_from(["mgload", "-n1", "--cacert", "ca"]).is_err());
    }
}
