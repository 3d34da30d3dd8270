//! What the ledger's own operations cost at a given size (issue 22: a million entries), on a
//! ledger made by `benches/scale.sh` (a copy: new versions are recorded into it):
//!
//! ```sh
//! cargo run --release -p modgate-ledger --example ledger_scale -- LEDGER N [SAMPLES]
//! ```
//!
//! `LEDGER` holds the entries of the first `N` objects of `benches/scale_urls.py`'s scheme
//! (`example.com/scale/m<NNNNNN>` at `v1.<j>.0`, `.info` and `.mod`). Prints, each over
//! `SAMPLES` (default 2,000) random entries: `get` (the `fetched:` index's read), `observe` of the
//! recorded bytes (a match: what every refetch after an eviction does), `observe` of new
//! versions (a first sighting: one `fsync`ed commit each, fewer samples), `count` (the gateway's
//! start-up line) and `Ledger::open`; medians and 99th percentiles in microseconds.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use modgate_ledger::{Artifact, Check, Ledger};

/// The module, version and artifact of object `i` (`benches/scale_urls.py`'s `path`).
fn object(i: u64) -> (String, String, Artifact) {
    let (pair, kind) = (i / 2, i % 2);
    let (module, j) = (pair / 10, pair % 10);
    let artifact = if kind == 0 {
        Artifact::Info
    } else {
        Artifact::Mod
    };
    (
        format!("example.com/scale/m{module:06}"),
        format!("v1.{j}.0"),
        artifact,
    )
}

/// A small deterministic generator (xorshift64*), so both scales draw alike.
struct Draw(u64);

impl Draw {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// "median / p99 µs" of the durations.
fn summary(mut d: Vec<Duration>) -> String {
    if d.is_empty() {
        return "-".into();
    }
    d.sort();
    let at = |q: f64| d[((d.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    format!("median {:.1} µs, p99 {:.1} µs", at(0.5), at(0.99))
}

fn run(path: PathBuf, n: u64, samples: usize) -> Result<(), String> {
    let t = Instant::now();
    let ledger = Ledger::open(&path).map_err(|e| e.to_string())?;
    let open = t.elapsed();
    let t = Instant::now();
    let count = ledger.count().map_err(|e| e.to_string())?;
    let count_time = t.elapsed();
    if count < n {
        return Err(format!(
            "{} holds {count} entries, fewer than {n}",
            path.display()
        ));
    }
    let mut draw = Draw(0x9e37_79b9_7f4a_7c15);
    let mut gets = Vec::with_capacity(samples);
    let mut matches = Vec::with_capacity(samples);
    for _ in 0..samples {
        let (module, version, artifact) = object(draw.below(n));
        let t = Instant::now();
        let entry = ledger
            .get(&module, &version, artifact)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{module}@{version} .{artifact} is not in the ledger"))?;
        gets.push(t.elapsed());
        let t = Instant::now();
        let check = ledger
            .observe(
                &module,
                &version,
                artifact,
                &entry.sha256,
                entry.h1.as_deref(),
                entry.size,
                "scale",
            )
            .map_err(|e| e.to_string())?;
        matches.push(t.elapsed());
        if !matches!(check, Check::Match(_)) {
            return Err(format!("{module}@{version} .{artifact}: {check:?}"));
        }
    }
    // module paths no earlier run of this example recorded
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut firsts = Vec::new();
    for i in 0..(samples / 10).max(1) {
        let module = format!("example.com/scale/new-{run}-{i:06}");
        let sha = format!("{:064x}", i);
        let t = Instant::now();
        let check = ledger
            .observe(&module, "v1.0.0", Artifact::Info, &sha, None, 51, "scale")
            .map_err(|e| e.to_string())?;
        firsts.push(t.elapsed());
        if !matches!(check, Check::FirstSeen(_)) {
            return Err(format!("{module}: {check:?}"));
        }
    }
    println!("ledger {} ({count} entries)", path.display());
    println!("  open: {:.1} ms", open.as_secs_f64() * 1e3);
    println!("  count: {:.1} ms", count_time.as_secs_f64() * 1e3);
    println!("  get ({samples}): {}", summary(gets));
    println!(
        "  observe, recorded bytes ({samples}): {}",
        summary(matches)
    );
    println!(
        "  observe, new version ({}): {}",
        firsts.len(),
        summary(firsts)
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: ledger_scale LEDGER N [SAMPLES]";
    let (Some(path), Some(n)) = (
        args.first(),
        args.get(1).and_then(|n| n.parse::<u64>().ok()),
    ) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let samples = match args.get(2).map(|s| s.parse::<usize>()) {
        None => 2000,
        Some(Ok(s)) if s > 0 => s,
        Some(_) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    if n == 0 {
        eprintln!("N must be positive");
        return ExitCode::from(2);
    }
    match run(PathBuf::from(path), n, samples) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ledger_scale: {e}");
            ExitCode::FAILURE
        }
    }
}
