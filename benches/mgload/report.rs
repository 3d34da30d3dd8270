//! mgload's printout. The lines `make bench` reads are spelled as h2load spells them
//! ("TLS Protocol:", "Cipher:", "Application protocol:", "finished in", "requests:",
//! "status codes:"), so one parser serves both loaders; then exact status counts, latency
//! percentiles, connections, the loader's own CPU time, and the errors by message.

use std::fmt::Write;
use std::time::Duration;

use crate::args::{Limit, Plan, Protocol};
use crate::run::Outcome;

/// A duration as h2load prints one: `5.00s`, `12.34ms`, `734us`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2}s")
    } else if s >= 0.001 {
        format!("{:.2}ms", s * 1e3)
    } else {
        format!("{}us", d.as_micros())
    }
}

/// A quantity with h2load's binary unit prefixes: `123`, `1.50K`, `2.34M`, `1.07G`.
pub fn format_units(v: f64) -> String {
    const K: f64 = 1024.0;
    if v >= K * K * K {
        format!("{:.2}G", v / (K * K * K))
    } else if v >= K * K {
        format!("{:.2}M", v / (K * K))
    } else if v >= K {
        format!("{:.2}K", v / K)
    } else {
        format!("{}", v.max(0.0).round() as u64)
    }
}

fn ms(ns: Option<u64>) -> String {
    match ns {
        Some(v) => format!("{:.3}", v as f64 / 1e6),
        None => "-".to_string(),
    }
}

/// The whole printout of a run.
pub fn render(plan: &Plan, out: &Outcome) -> String {
    let s = &out.stats;
    let mut r = String::new();
    let proto = match plan.protocol {
        Protocol::H2 => "HTTP/2",
        Protocol::H1 => "HTTP/1.1",
    };
    let limit = match plan.limit {
        Limit::Duration(d) => format!("for {}", format_duration(d)),
        Limit::Requests(n) => format!("{n} requests"),
    };
    let _ = writeln!(
        r,
        "mgload: https://{}, {proto}, {} connection(s) x {} stream(s), {} path(s) round-robin, {limit}",
        plan.target.authority,
        plan.connections,
        plan.streams,
        plan.paths.len()
    );
    match &plan.client_cert {
        Some((cert, _)) => {
            let _ = writeln!(r, "Client certificate: {}", cert.display());
        }
        None => {
            let _ = writeln!(r, "Client certificate: none");
        }
    }
    let (version, cipher, alpn) = match &out.negotiated {
        Some(n) => (n.version.as_str(), n.cipher.as_str(), n.alpn.as_str()),
        None => ("-", "-", "-"),
    };
    let _ = writeln!(r, "TLS Protocol: {version}");
    let _ = writeln!(r, "Cipher: {cipher}");
    let _ = writeln!(r, "Application protocol: {alpn}");
    let secs = out.elapsed.as_secs_f64();
    let per_sec = |v: f64| if secs > 0.0 { v / secs } else { 0.0 };
    let _ = writeln!(
        r,
        "\nfinished in {}, {:.2} req/s, {}B/s",
        format_duration(out.elapsed),
        per_sec(s.responses as f64),
        format_units(per_sec(s.bytes as f64))
    );
    let _ = writeln!(
        r,
        "requests: {} total, {} started, {} done, {} succeeded, {} failed, {} errored, {} timeout",
        s.total(),
        s.started,
        s.done(),
        s.succeeded,
        s.failed,
        s.errored,
        s.timeout
    );
    let _ = writeln!(
        r,
        "status codes: {} 2xx, {} 3xx, {} 4xx, {} 5xx",
        s.status_range(200, 299),
        s.status_range(300, 399),
        s.status_range(400, 499),
        s.status_range(500, 599)
    );
    let codes: Vec<String> = s.status.iter().map(|(c, n)| format!("{c} {n}")).collect();
    let _ = writeln!(
        r,
        "status: {}",
        if codes.is_empty() {
            "-".to_string()
        } else {
            codes.join(", ")
        }
    );
    let _ = writeln!(
        r,
        "traffic: {}B ({}) total",
        format_units(s.bytes as f64),
        s.bytes
    );
    let _ = writeln!(
        r,
        "connections: {} made, {} failed",
        s.connects, s.connect_errors
    );
    let h = &s.latency;
    let _ = writeln!(
        r,
        "latency ms: min {} mean {} p50 {} p90 {} p99 {} max {} ({} answers)",
        ms(h.min()),
        ms(h.mean().map(|m| m as u64)),
        ms(h.percentile(50.0)),
        ms(h.percentile(90.0)),
        ms(h.percentile(99.0)),
        ms(h.max()),
        h.count()
    );
    let (user, sys) = out.cpu;
    let cpu = user + sys;
    let per_req = if s.responses > 0 {
        format!("{:.2}", cpu.as_secs_f64() * 1e6 / s.responses as f64)
    } else {
        "-".to_string()
    };
    let _ = writeln!(
        r,
        "client CPU: {:.3}s (user {:.3}s, system {:.3}s), {per_req} us/req, {:.1}% of the wall time",
        cpu.as_secs_f64(),
        user.as_secs_f64(),
        sys.as_secs_f64(),
        per_sec(cpu.as_secs_f64()) * 100.0
    );
    if !s.errors.is_empty() {
        let _ = writeln!(r, "errors:");
        let mut errs: Vec<_> = s.errors.iter().collect();
        errs.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (why, n) in errs {
            let _ = writeln!(r, "  {n} x {why}");
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Target;
    use crate::stats::Stats;
    use crate::tls::Negotiated;
    use std::path::PathBuf;

    #[test]
    fn h2load_units() {
        assert_eq!(format_duration(Duration::from_millis(5004)), "5.00s");
        assert_eq!(format_duration(Duration::from_micros(12_345)), "12.35ms");
        assert_eq!(format_duration(Duration::from_micros(734)), "734us");
        assert_eq!(format_units(123.4), "123");
        assert_eq!(format_units(1536.0), "1.50K");
        assert_eq!(format_units(2.5 * 1048576.0), "2.50M");
        assert_eq!(format_units(3.0 * 1073741824.0), "3.00G");
    }

    #[test]
    fn printout_carries_the_lines_the_bench_reads() {
        let plan = Plan {
            target: Target {
                host: "127.0.0.1".into(),
                port: 8443,
                authority: "127.0.0.1:8443".into(),
            },
            paths: vec!["/a".into()],
            connections: 2,
            streams: 4,
            limit: Limit::Duration(Duration::from_secs(2)),
            threads: 1,
            protocol: Protocol::H2,
            cacert: PathBuf::from("ca.pem"),
            client_cert: Some((PathBuf::from("c.pem"), PathBuf::from("c.key"))),
            ciphers: None,
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        };
        let mut stats = Stats {
            started: 4,
            ..Stats::default()
        };
        for _ in 0..3 {
            stats.response(200, Duration::from_micros(500));
        }
        stats.response(404, Duration::from_millis(2));
        stats.connect_failed("connect: refused");
        stats.connects = 2;
        stats.bytes = 2048;
        let out = Outcome {
            stats,
            elapsed: Duration::from_secs(2),
            cpu: (Duration::from_millis(30), Duration::from_millis(10)),
            negotiated: Some(Negotiated {
                version: "TLSv1.3".into(),
                cipher: "TLS_AES_128_GCM_SHA256".into(),
                alpn: "h2".into(),
            }),
        };
        let text = render(&plan, &out);
        for want in [
            "Client certificate: c.pem\n",
            "TLS Protocol: TLSv1.3\n",
            "Cipher: TLS_AES_128_GCM_SHA256\n",
            "Application protocol: h2\n",
            "finished in 2.00s, 2.00 req/s, 1.00KB/s\n",
            "requests: 5 total, 4 started, 5 done, 3 succeeded, 1 failed, 0 errored, 0 timeout\n",
            "status codes: 3 2xx, 0 3xx, 1 4xx, 0 5xx\n",
            "status: 200 3, 404 1\n",
            "connections: 2 made, 1 failed\n",
            "p99 2.000 max 2.000 (4 answers)\n",
            "client CPU: 0.040s (user 0.030s, system 0.010s), 10000.00 us/req, 2.0% of the wall time\n",
            "  1 x connect: refused\n",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
    }
}
