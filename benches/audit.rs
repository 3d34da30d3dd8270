//! What one audit record costs the gateway: `AuditLog::record` called from several threads at
//! once (like Pingora's workers), to a file on tmpfs (`/dev/shm` when present, so the figure is
//! CPU work and wake-ups, not the disk), timed until the log has been shut down (every line
//! written and fsynced). Besides criterion's wall time per record, a one-shot report (only
//! with `--bench`) prints the process's CPU time and context switches per record, read with
//! `getrusage(RUSAGE_SELF)` (all threads, the audit writer included). Run with
//! `cargo bench -p modgate-benches --bench audit`; pin to one core with `taskset -c 1` to see
//! the single-core case of `benches/load.sh`. Figures go to docs/performance.md.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant, UNIX_EPOCH};

use criterion::{Criterion, Throughput};
use modgate_telemetry::{
    rfc3339_millis, AuditDecision, AuditIdentity, AuditLog, AuditRecord, AuditSinkConfig,
};

/// Threads logging at once in the criterion cases.
const THREADS: u64 = 4;

/// A cached `.info` hit by an mTLS client, as the gateway records it (about 520 bytes of JSON).
fn record(i: u64) -> AuditRecord {
    AuditRecord {
        ts: rfc3339_millis(UNIX_EPOCH + Duration::from_millis(1_780_000_000_000 + i)),
        trace_id: format!("{i:032x}"),
        listener: "public".into(),
        client_addr: "10.20.30.40:51234".into(),
        identity: AuditIdentity {
            source: "mtls".into(),
            name: "ci-runner-7".into(),
            dn: Some("CN=ci-runner-7,OU=platform,O=Example Corp".into()),
            fingerprint: Some(
                "3f1c9a0e5b7d2c4a6e8f0b1d3c5e7a9b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c".into(),
            ),
            serial: Some("4a3f".into()),
            principals: Vec::new(),
            matched: None,
        },
        roles: vec!["ci".to_string()].into(),
        method: "GET".into(),
        path: "/github.com/aws/aws-sdk-go-v2/service/s3/@v/v1.58.2.info".into(),
        module: Some("github.com/aws/aws-sdk-go-v2/service/s3".into()),
        version: Some("v1.58.2".into()),
        kind: Some("info".into()),
        route: Some("public".into()),
        decision: AuditDecision::Allow,
        rule: Some("ci-read".into()),
        reason: None,
        status: 200,
        bytes: 54,
        incomplete: false,
        duration_ms: 0.42,
        upstream: None,
        cache: Some("hit".into()),
        event: None,
        advisories: Vec::new(),
        would_deny: None,
        withheld: Vec::new(),
        waived: Vec::new(),
    }
}

fn scratch_dir() -> tempfile::TempDir {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(&shm) {
            return d;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

/// Stands in for the rest of a request's work between two records: about `units` × 1 µs of
/// CPU (a fixed amount of arithmetic, so preemption does not change it).
fn work(units: u32) {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..units * 800 {
        x = black_box(x.rotate_left(7) ^ x.wrapping_mul(0x2545_f491_4f6c_dd1d));
    }
    black_box(x);
}

/// Logs `total` records from `threads` threads, with `units` of [`work`] before each, then
/// shuts the log down; returns the wall time of the whole (start to fsync). `on == false`
/// runs the same loop with the audit log off (the baseline for the work).
fn run(threads: u64, total: u64, units: u32, dir: &std::path::Path, on: bool) -> Duration {
    let path = dir.join("audit.jsonl");
    let _ = std::fs::remove_file(&path);
    let log = if on {
        AuditLog::start(AuditSinkConfig::File(path)).expect("start")
    } else {
        AuditLog::off()
    };
    let per = total.div_ceil(threads);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let log = log.clone();
            s.spawn(move || {
                for i in 0..per {
                    work(units);
                    log.record(black_box(&record(t * per + i))).expect("record");
                }
            });
        }
    });
    log.shutdown().expect("shutdown");
    start.elapsed()
}

struct Usage {
    cpu: Duration,
    voluntary: i64,
    involuntary: i64,
}

fn usage() -> Usage {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage only writes the struct it is given, which is valid (zeroed) memory.
    let (rc, ru) = unsafe {
        (
            libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()),
            ru.assume_init(),
        )
    };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Usage {
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        voluntary: ru.ru_nvcsw,
        involuntary: ru.ru_nivcsw,
    }
}

/// One-shot figures over `N` records: the audit log's CPU time and context switches per record
/// (the run with the log on minus the same run with it off), tight and paced like requests.
fn report(dir: &std::path::Path) {
    const N: u64 = 200_000;
    run(THREADS, 20_000, 0, dir, true); // warm-up
    for (threads, units) in [(4, 0), (4, 20), (1, 20)] {
        let measure = |on: bool| {
            let before = usage();
            let wall = run(threads, N, units, dir, on);
            let after = usage();
            (
                wall,
                after.cpu - before.cpu,
                after.voluntary - before.voluntary,
                after.involuntary - before.involuntary,
            )
        };
        let (_, cpu_off, vol_off, invol_off) = measure(false);
        let (wall, cpu_on, vol_on, invol_on) = measure(true);
        let per = |x: f64| x / N as f64;
        eprintln!(
            "audit report: {N} records from {threads} threads, ~{units} µs of work before each: \
             wall {:.2} µs/record; audit CPU {:.2} µs/record (on {:.2}, off {:.2}); \
             context switches {:.3}/record on, {:.3}/record off (voluntary {vol_on}, involuntary {invol_on})",
            per(wall.as_secs_f64() * 1e6),
            per(cpu_on.as_secs_f64() * 1e6 - cpu_off.as_secs_f64() * 1e6),
            per(cpu_on.as_secs_f64() * 1e6),
            per(cpu_off.as_secs_f64() * 1e6),
            per((vol_on + invol_on) as f64),
            per((vol_off + invol_off) as f64),
        );
    }
}

fn audit(c: &mut Criterion) {
    let dir = scratch_dir();
    let mut g = c.benchmark_group("audit_log");
    g.throughput(Throughput::Elements(1));
    g.bench_function("record_4_threads_to_shutdown", |b| {
        b.iter_custom(|iters| run(THREADS, iters.max(THREADS), 0, dir.path(), true))
    });
    g.bench_function("record_4_threads_paced_20us", |b| {
        b.iter_custom(|iters| run(THREADS, iters.max(THREADS), 20, dir.path(), true))
    });
    g.bench_function("off_4_threads_paced_20us", |b| {
        b.iter_custom(|iters| run(THREADS, iters.max(THREADS), 20, dir.path(), false))
    });
    g.finish();
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    if benching {
        let dir = scratch_dir();
        report(dir.path());
    }
    let mut c = Criterion::default().configure_from_args();
    audit(&mut c);
    c.final_summary();
}
