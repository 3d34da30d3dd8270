//! Per-identity rate limits (issue 20), against the real binary: a bounded burst over an
//! identity's limit gets 429 with `Retry-After` and the reason, while other identities at the
//! same time are unaffected; the refusals are counted by reason and limit (never by identity)
//! and audited; response bytes over a byte limit refuse the *next* request; the real `go`
//! command prints the reason; a reload changes a limit for the next request, and a reload that
//! leaves a limit alone leaves its buckets as they were.
//!
//! Timing: every limit that must hold during a test refills at 0.001 requests (or bytes) per
//! second, so a loaded machine running the test for minutes adds no token; every limit that
//! must let requests through is a whole burst. Nothing waits on a clock but the audit writer
//! and the byte charge, which are waited for as conditions, bounded.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use modgate_testkit::{
    fingerprint_sha256, get, modgate, request, require_go, FixtureProxy, Gateway, GoEnv,
    ModuleVersion, Response,
};

const PUBLIC: &str = "example.com/pub";
const LIST: &str = "/example.com/pub/@v/list";
const ZIP: &str = "/example.com/pub/@v/v1.0.0.zip";

/// Bearer tokens: two identities under the default limit, one holding role `ci`, one with a
/// byte limit of its own.
const A_TOKEN: &str = "mgt_0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const B_TOKEN: &str = "mgt_9f8e7d6c5b4a39281706f5e4d3c2b1a0";
const CI_TOKEN: &str = "mgt_55aa55aa55aa55aa55aa55aa55aa55aa";
const BIG_TOKEN: &str = "mgt_0123456789abcdef0123456789abcdef";

/// `@LIMITS@` is the `rate_limits:` section.
const CONFIG: &str = r#"
audit: { output: "@DIR@/audit.jsonl" }
listeners:
  - { name: plain, address: "@PLAIN@", metrics: true }
upstreams:
  public: { url: "@PUBLIC@" }
routes:
  - { name: public, match: { prefix: "" }, chain: [public] }
auth:
  tokens_file: tokens
access:
  default: allow
  roles:
    - name: ci
      members: [ { group: ci } ]
@LIMITS@"#;

/// The limits the tests start from: a burst of 3 for everyone, 2 for anonymous clients, 6 for
/// role ci, and a byte limit of 1 byte/s for `big-bot`.
const LIMITS: &str = r#"rate_limits:
  default: { requests_per_second: 0.001, burst: 3 }
  anonymous: { requests_per_second: 0.001, burst: 2 }
  roles:
    ci: { requests_per_second: 0.001, burst: 6 }
  identities:
    "token:big-bot": { requests_per_second: unlimited, bytes_per_second: 1, bytes_burst: 1 }
"#;

struct World {
    gw: Gateway,
    plain: SocketAddr,
    public_url: String,
    _public: FixtureProxy,
    _rt: tokio::runtime::Runtime,
}

fn config(plain: SocketAddr, public_url: &str, limits: &str) -> String {
    CONFIG
        .replace("@PLAIN@", &plain.to_string())
        .replace("@PUBLIC@", public_url)
        .replace("@LIMITS@", limits)
}

fn write_tokens(dir: &Path) {
    let line = |name: &str, token: &str, groups: &str| {
        format!(
            "{name}:sha256:{}{groups}\n",
            fingerprint_sha256(token.as_bytes())
        )
    };
    let tokens = [
        line("a-bot", A_TOKEN, ""),
        line("b-bot", B_TOKEN, ""),
        line("ci-bot", CI_TOKEN, ":ci"),
        line("big-bot", BIG_TOKEN, ""),
    ]
    .concat();
    std::fs::write(dir.join("tokens"), tokens).expect("write tokens");
}

fn world(limits: &str) -> World {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let public = rt
        .block_on(FixtureProxy::start(&[
            ModuleVersion::new(PUBLIC, "v1.0.0").expect("module")
        ]))
        .expect("fixture");
    let dir = tempfile::tempdir().expect("tempdir");
    write_tokens(dir.path());
    let plain = modgate_testkit::free_addr();
    let public_url = public.url();
    let gw = Gateway::start_in(dir, &config(plain, &public_url, limits), plain);
    World {
        gw,
        plain,
        public_url,
        _public: public,
        _rt: rt,
    }
}

impl World {
    fn get_as(&self, token: Option<&str>, path: &str) -> Response {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        request(self.plain, "GET", path, &headers).expect("request")
    }

    fn reload_with(&self, limits: &str) {
        self.gw
            .write_config(&config(self.plain, &self.public_url, limits));
        let out = self.gw.reload();
        assert!(
            out.status.success(),
            "reload refused:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn metrics(&self) -> String {
        get(self.plain, "/metrics").expect("metrics").text()
    }

    /// The audit records written so far, waiting (bounded) until there are at least `n`.
    fn audit_records(&self, n: usize) -> Vec<serde_json::Value> {
        let path = self.gw.dir.path().join("audit.jsonl");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let records: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if records.len() >= n {
                return records;
            }
            assert!(
                Instant::now() < deadline,
                "{} audit records of {n} after 20 s:\n{text}",
                records.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The value of one counter sample, by its exact series name (0 when absent).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .filter(|rest| rest.starts_with(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

fn retry_after(r: &Response) -> u64 {
    r.header("retry-after")
        .unwrap_or_else(|| panic!("a 429 without Retry-After: {:?}", r.headers))
        .parse()
        .expect("Retry-After in whole seconds")
}

/// Sends `n` requests as `token` at once (one thread each); the statuses and 429 answers.
fn burst(w: &World, token: Option<&'static str>, n: usize) -> (Vec<u16>, Vec<Response>) {
    let answers: Vec<Response> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| s.spawn(move || w.get_as(token, LIST)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("request thread"))
            .collect()
    });
    let statuses = answers.iter().map(|r| r.status).collect();
    let refused = answers.into_iter().filter(|r| r.status == 429).collect();
    (statuses, refused)
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[test]
fn a_burst_over_the_limit_gets_429_and_other_identities_are_unaffected() {
    let w = world(LIMITS);
    // a-bot sends twice its burst while b-bot and ci-bot send theirs, all at once.
    let (a, b, ci) = std::thread::scope(|s| {
        let a = s.spawn(|| burst(&w, Some(A_TOKEN), 6));
        let b = s.spawn(|| burst(&w, Some(B_TOKEN), 3));
        let ci = s.spawn(|| burst(&w, Some(CI_TOKEN), 6));
        (
            a.join().expect("a"),
            b.join().expect("b"),
            ci.join().expect("ci"),
        )
    });
    assert_eq!(
        (count(&a.0, 200), count(&a.0, 429)),
        (3, 3),
        "a-bot: exactly its burst passes: {:?}",
        a.0
    );
    assert_eq!(count(&b.0, 200), 3, "b-bot is not held by a-bot: {:?}", b.0);
    assert_eq!(
        count(&ci.0, 200),
        6,
        "role ci's burst is its own: {:?}",
        ci.0
    );
    for r in &a.1 {
        // 1000 s per request at 0.001/s: whatever the moment, more than 900 s to wait.
        let secs = retry_after(r);
        assert!((900..=1000).contains(&secs), "Retry-After {secs}");
        let text = r.text();
        assert!(
            text.starts_with(
                "modgate: token:a-bot is over its rate limit of 0.001 requests/s, burst 3 \
                 (default); retry after "
            ),
            "{text}"
        );
        assert!(text.ends_with(&format!("retry after {secs} s\n")), "{text}");
    }
    // ci-bot over its role's limit is told which role's limit it is.
    let r = w.get_as(Some(CI_TOKEN), LIST);
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("burst 6 (role ci)"), "{}", r.text());
    // Anonymous clients are held per source address, apart from every identity.
    let (anon, _) = burst(&w, None, 3);
    assert_eq!((count(&anon, 200), count(&anon, 429)), (2, 1), "{anon:?}");

    // Counted by reason and limit, never by identity or module.
    let m = w.metrics();
    let limited = |limit: &str| {
        sample(
            &m,
            &format!("modgate_rate_limited_total{{limit=\"{limit}\",reason=\"requests\"}}"),
        )
    };
    assert_eq!(limited("default"), 3.0, "{m}");
    assert_eq!(limited("role:ci"), 1.0, "{m}");
    assert_eq!(limited("anonymous"), 1.0, "{m}");
    let series: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("modgate_rate_limited_total"))
        .collect();
    assert!(
        series
            .iter()
            .all(|l| !l.contains("bot") && !l.contains(PUBLIC)),
        "{series:?}"
    );

    // Audited like every refusal: status 429, decision deny, the reason, the identity.
    let records = w.audit_records(6 + 3 + 6 + 1 + 3);
    let limited: Vec<_> = records.iter().filter(|r| r["status"] == 429).collect();
    assert_eq!(limited.len(), 3 + 1 + 1, "{limited:?}");
    for r in &limited {
        assert_eq!(r["decision"], "deny", "{r}");
        assert!(
            r["reason"]
                .as_str()
                .is_some_and(|s| s.contains("is over its rate limit")),
            "{r}"
        );
        assert_eq!(r["path"], LIST, "{r}");
    }
    assert!(limited
        .iter()
        .any(|r| r["identity"].to_string().contains("a-bot")));

    // A reload that leaves the default alone (it adds an identity entry) leaves a-bot's
    // bucket as it was: still refused.
    let more = format!("{LIMITS}    \"token:b-bot\": {{ requests_per_second: 0.001, burst: 1 }}\n");
    w.reload_with(&more);
    let r = w.get_as(Some(A_TOKEN), LIST);
    assert_eq!(r.status, 429, "{}", r.text());
    // b-bot's new limit applies at once: its bucket (3 used of 3) is cut to the new burst.
    let r = w.get_as(Some(B_TOKEN), LIST);
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(
        r.text()
            .contains("over its rate limit of 0.001 requests/s (identity token:b-bot)"),
        "{}",
        r.text()
    );
    // A reload that raises the default lets a-bot through on its next request.
    w.reload_with(&LIMITS.replace(
        "default: { requests_per_second: 0.001, burst: 3 }",
        "default: { requests_per_second: 1000, burst: 1000 }",
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // The new rate refills the empty bucket a token per millisecond: the first request
        // after the reload finds one unless it comes within that millisecond.
        let r = w.get_as(Some(A_TOKEN), LIST);
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 429, "{}", r.text());
        assert!(Instant::now() < deadline, "still refused: {}", r.text());
    }
}

#[test]
fn explain_names_the_limits_that_apply_and_where_they_come_from() {
    let w = world(LIMITS);
    let cfg = w.gw.config_path.to_string_lossy().to_string();
    let explain = |who: &[&str]| {
        let mut args = vec!["explain", "example.com/pub@v1.0.0", "-c", &cfg];
        args.extend_from_slice(who);
        let out = modgate(&args);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let ci = explain(&["--token-name", "ci-bot"]);
    assert!(
        ci.contains("rate:     0.001 requests/s, burst 6 (role ci)\n"),
        "{ci}"
    );
    assert!(ci.contains("rate:     bytes unlimited\n"), "{ci}");
    assert!(ci.contains("known only to the running gateway"), "{ci}");
    let big = explain(&["--token-name", "big-bot"]);
    assert!(big.contains("rate:     requests unlimited\n"), "{big}");
    assert!(
        big.contains("rate:     1B/s of response bytes (identity token:big-bot)\n"),
        "{big}"
    );
    let anon = explain(&[]);
    assert!(
        anon.contains("0.001 requests/s, burst 2 (anonymous)"),
        "{anon}"
    );
    assert!(anon.contains("each source address"), "{anon}");
}

#[test]
fn bytes_over_the_limit_refuse_the_next_request_not_the_answer_in_flight() {
    let w = world(LIMITS);
    // The zip is served whole: a response in flight is never cut.
    let zip = w.get_as(Some(BIG_TOKEN), ZIP);
    assert_eq!(zip.status, 200, "{}", zip.text());
    let size = zip.body.len() as u64;
    assert!(size > 100, "a fixture zip of {size} bytes");
    // The bytes are charged when the answer is logged, just after its last byte: the next
    // request is refused from then on (waited for, bounded; big-bot has no request limit).
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let r = w.get_as(Some(BIG_TOKEN), LIST);
        if r.status == 429 {
            break r;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            Instant::now() < deadline,
            "never refused after {size} bytes"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let secs = retry_after(&refused);
    // At 1 byte/s the debt is about the zip's size (plus the small lists served meanwhile).
    assert!(secs + 5 >= size, "Retry-After {secs} for {size} bytes");
    assert!(
        refused.text().contains(
            "token:big-bot is over its rate limit of 1B/s of response bytes (identity \
             token:big-bot)"
        ),
        "{}",
        refused.text()
    );
    // Another identity is not charged for big-bot's bytes.
    assert_eq!(w.get_as(Some(B_TOKEN), ZIP).status, 200);
    let m = w.metrics();
    assert!(
        sample(
            &m,
            "modgate_rate_limited_total{limit=\"identity\",reason=\"bytes\"}"
        ) >= 1.0,
        "{m}"
    );
}

#[test]
fn go_prints_the_reason_and_a_reload_lets_it_through() {
    let Some(_) = require_go() else { return };
    let w = world(LIMITS);
    let env = GoEnv::new(&format!("http://{}", w.plain));
    // The go command sends no credentials over plain HTTP: it is an anonymous client, held
    // by its address (127.0.0.1). Two requests use the anonymous burst.
    for _ in 0..2 {
        assert_eq!(w.get_as(None, LIST).status, 200);
    }
    let run = env.go(&["mod", "download", "-json", &format!("{PUBLIC}@v1.0.0")]);
    assert!(!run.ok(), "go got through:\n{}", run.stdout());
    let said = format!("{}{}", run.stdout(), run.stderr());
    assert!(said.contains("429 Too Many Requests"), "{said}");
    assert!(
        said.contains(
            "modgate: anonymous client 127.0.0.1 is over its rate limit of 0.001 requests/s, \
             burst 2 (anonymous); retry after"
        ),
        "{said}"
    );
    // A reload lifts the anonymous limit: the next run gets through, without a restart.
    w.reload_with(&LIMITS.replace(
        "anonymous: { requests_per_second: 0.001, burst: 2 }",
        "anonymous: { requests_per_second: unlimited }",
    ));
    env.go(&["mod", "download", "-json", &format!("{PUBLIC}@v1.0.0")])
        .expect_ok("go mod download after the reload");
    // And one that brings it back holds it again (a fresh bucket: its burst, then 429).
    w.reload_with(LIMITS);
    let (statuses, _) = burst(&w, None, 3);
    assert_eq!(
        (count(&statuses, 200), count(&statuses, 429)),
        (2, 1),
        "{statuses:?}"
    );
}
