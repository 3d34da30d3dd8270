//! mgload: the load generator of `make bench` for what h2load cannot do — present a TLS
//! client certificate (modgate's mTLS listener, the production path) — and HTTP/1.1 over TLS
//! with the same figures. N connections over TLS 1.3 speaking HTTP/2 (m streams each) or
//! HTTP/1.1 (keep-alive, one request in flight), the URLs' paths round-robin, for a duration
//! or a request count; prints h2load-like figures, latency percentiles and its own CPU time
//! (getrusage) so that the server's CPU per request can be told apart from the loader's.
//!
//! Exit status: 0 when at least one answer came back, 1 when none did (errors printed),
//! 2 when the command line or the TLS files are unusable (nothing connects).

mod args;
mod hist;
mod http1;
mod http2;
mod report;
mod run;
mod stats;
mod tls;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

fn main() -> ExitCode {
    let args = args::Args::parse();
    let plan = match args.plan() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mgload: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match tls::client_config(&plan) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mgload: {e}");
            return ExitCode::from(2);
        }
    };
    let ctx = match run::Ctx::new(plan.clone(), config) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("mgload: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = if plan.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(plan.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mgload: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(run::run(ctx));
    print!("{}", report::render(&plan, &outcome));
    if outcome.stats.responses == 0 {
        eprintln!("mgload: no request was answered");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
