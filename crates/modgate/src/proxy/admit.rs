//! Admission: the one pure decision of what happens to a request once its identity is known —
//! answered here, forwarded along a route's chain (with its cache plan and ledger key),
//! forwarded to a checksum database, or refused with a [`Refusal`] that carries its status,
//! message, headers, audit decision and metric reason. The proxy and `modgate explain` both
//! call [`admit`], so they cannot disagree; it does no I/O and is table-tested below.

use std::net::IpAddr;
use std::sync::Arc;

use http::Method;
use modgate_identity::AuthFailure;
use modgate_ledger::Artifact;
use modgate_policy::{AccessRequest, Decision};
use modgate_protocol::{
    parse_git_request, GitEndpoint, GitRequest, GitService, GoProxyRequest, ModuleRequest,
    RequestError, RequestKind, SumdbEndpoint,
};
use modgate_telemetry::AuditDecision;

use crate::cache::{self, CachePlan, Ttls};
use crate::gateway::Gateway;
use crate::host::request_host;
use crate::identity::{self, IdentityError, RequestIdentity};
use crate::model::{ListenerRuntime, Model};
use crate::template::Captures;
use crate::upstream::GitUpstream;
use crate::upstream::Upstream;

/// The role an identity must hold to use the admin endpoint when `access:` is configured.
pub const ADMIN_ROLE: &str = "admin";

/// The admin endpoint's path.
pub const PURGE_PATH: &str = "/admin/cache/purge";

/// The admin endpoint that lists what an identity fetched (same admission as the purge).
pub const FETCHED_PATH: &str = "/admin/fetched";

/// The challenge sent with a 401, so clients that wait for one send their `.netrc` credentials.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"modgate\"";

/// What a request is decided against.
pub struct Scope<'a> {
    pub gateway: &'a Gateway,
    pub ttl: &'a Ttls,
    /// Whether the gateway has a cache (plans and ledger keys are made only then).
    pub caching: bool,
    /// The listener the request came in on; `None` for `modgate explain`, which asks about a
    /// module request as such (no listener requirement, no admin endpoint).
    pub listener: Option<&'a ListenerRuntime>,
    /// A background refresh of a cached answer (stale-while-revalidate), made by the gateway
    /// for a request that was itself admitted: it carries no identity and is not decided again.
    pub refresh: bool,
    /// Now, in Unix seconds (waivers expire).
    pub now: i64,
}

impl<'a> Scope<'a> {
    /// A request that came in on `listener`, decided against `model` (`refresh`: the gateway's
    /// own background refresh of a cached answer).
    pub fn on_listener(
        model: &'a Model,
        listener: &'a ListenerRuntime,
        caching: bool,
        refresh: bool,
    ) -> Scope<'a> {
        Scope {
            gateway: &model.gateway,
            ttl: &model.ttl,
            caching,
            listener: Some(listener),
            refresh,
            now: unix_now(),
        }
    }
}

/// Where the loaded vulnerability database is served (under the path prefix).
pub const VULNDB_PREFIX: &str = "/vulndb/";

/// The current time in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The request as received: its head and the address of the connection's peer.
pub struct Inbound<'a> {
    pub head: &'a http::request::Parts,
    pub peer: Option<IpAddr>,
    /// The commit the requested version points at, once resolved for a rule limited to
    /// `commits` ([`Admission::commit_needed`]); `None` at first.
    pub commit: Option<&'a str>,
}

/// What admission decided, with what the audit record and metrics need whatever the verdict.
#[derive(Debug)]
pub struct Admission {
    pub verdict: Verdict,
    /// The protocol kind, once the path parsed.
    pub kind: Option<RequestKind>,
    /// The module request, once the path parsed as one (also for refusals, for the record).
    pub request: Option<ModuleRequest>,
    /// A git smart HTTP request's repository (its import path) and service.
    pub git: Option<(String, &'static str)>,
    /// The index of the route the request matched (also a private route a checksum lookup
    /// was refused for).
    pub route: Option<usize>,
    /// The access decision, when the policy was asked.
    pub decision: Option<Decision>,
    /// For a principal holding both a certificate and credentials: each as `<source>:<name>`,
    /// and those the decision came through.
    pub principals: Vec<String>,
    pub matched: Vec<String>,
    /// The decision could depend on the commit the requested tag points at (a rule limited
    /// to `commits` would otherwise apply, and `Inbound::commit` was not given): the gateway
    /// resolves the commit from the upstream's `.info` and admits the request again with it.
    pub commit_needed: bool,
    /// What the vulnerability policy said of an exact version it let through or refused
    /// (`versions.vulnerabilities`), for the audit record: the advisories that count, and
    /// those waived.
    pub vulns: Option<crate::vulns::Judgement>,
    /// What `versions.retractions` said of a retracted exact version (the mode, and why), for
    /// the audit record.
    pub retracted: Option<(crate::config::VersionMode, String)>,
    /// What `versions.cooldown` said of an exact version younger than its window (the mode,
    /// and why), for the audit record.
    pub cooled: Option<(crate::config::VersionMode, String)>,
}

/// What happens to the request.
#[derive(Debug)]
pub enum Verdict {
    /// Answered by modgate itself.
    Answer(Local),
    /// Forwarded along the matched route's chain.
    Forward {
        /// How the answer is cached (None: not cached).
        cache_plan: Option<CachePlan>,
        /// The ledger entry an exact version answers to (artifact, version).
        ledger_key: Option<(Artifact, String)>,
    },
    /// git smart HTTP, forwarded to the repository's Git host with the gateway's credential.
    Git {
        host: Arc<Upstream>,
        /// The path (and query) to ask the host for.
        path: String,
    },
    /// Forwarded to a proxied checksum database.
    Sumdb {
        db: Arc<Upstream>,
        /// The path to ask the database for.
        path: String,
        cache_plan: Option<CachePlan>,
    },
    /// Refused; nothing is forwarded.
    Refuse(Refusal),
}

/// Answers modgate gives itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// `/sumdb/<name>/supported` for a proxied database: 200, empty.
    SumdbSupported,
    /// `<import path>?go-get=1` under a git upstream's repository: the page that sends `go` in
    /// direct mode back to this gateway as the module proxy of `root`.
    GoImport {
        /// The repository root's import path.
        root: String,
        /// The gateway's GOPROXY base URL.
        proxy: String,
    },
    /// `/sumdb/<name>/…` of the company's own checksum database (`checksum_log:`), for a
    /// reader; a lookup of a version not logged yet is fetched, checked and appended first.
    ChecksumLog { endpoint: SumdbEndpoint },
    /// `/vulndb/<file>`: a file of the vulnerability database the gateway loaded (the v1
    /// layout, for `govulncheck -db`), by its path relative to `/vulndb/`.
    VulnDb { rel: String },
    /// A `list` or `@latest` answer without the versions the vulnerability policy refuses this
    /// identity: made by the gateway from the chain's own answer.
    Withheld {
        content_type: &'static str,
        body: bytes::Bytes,
        /// What was left out, and why, for the audit record.
        withheld: Vec<String>,
    },
    /// `POST /admin/cache/purge?target=…`: purge a module (or one version) from the cache.
    Purge {
        target: String,
        module: String,
        version: Option<String>,
    },
    /// `GET /admin/fetched?identity=…&since=…[&until=…][&format=…]`: what an identity
    /// fetched (the values as given, percent-decoded; checked when answered).
    Fetched {
        identity: String,
        since: String,
        until: Option<String>,
        format: String,
    },
}

/// Why a request is refused. Everything the answer, the audit record and the metrics say
/// about it follows from the variant.
#[derive(Debug)]
pub enum Refusal {
    /// The request's credentials or certificate did not establish an identity.
    Identity(IdentityError),
    /// The listener requires an identity and none was presented.
    IdentityRequired,
    /// The access policy (or the admin role check) said no. `anonymous`: 401 with a
    /// challenge, since a credential might be allowed; else 403.
    Denied { message: String, anonymous: bool },
    /// The admin endpoint was reached other than from this host's own tools.
    NotLocal(String),
    /// A method the endpoint does not take.
    Method {
        message: String,
        allow: &'static str,
    },
    /// A request modgate cannot take as it is (400).
    BadRequest(String),
    /// A path that is not a valid GOPROXY request.
    BadPath(RequestError),
    /// Nothing here answers it (404): no route, an unproxied checksum database, `?go-get=1`,
    /// no cache to purge.
    NotFound(String),
    /// A private module's checksum lookup: never sent to a public database (404 sends `go`
    /// to its GONOSUMDB handling).
    PrivateLookup(String),
    /// A `git push`: the gateway serves reads only.
    Push(String),
    /// What the decision needs from the upstream could not be learnt (a tag's commit for a rule
    /// limited to `commits`, a list to leave versions out of, a version's first sighting for
    /// the cooldown): 502, the upstream failed, not the client; never decided on a guess.
    Unlearnt(String),
    /// The identity is over a rate limit (429 with `Retry-After`, whole seconds, at least 1).
    RateLimited { message: String, retry_after: u64 },
    /// A refusal whose message ends with a hint for the client (the `.netrc` entry the go
    /// command would need, see [`netrc_hint`]); everything else is the inner refusal's.
    Hinted { refusal: Box<Refusal>, hint: String },
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Identity(e) => match e {
                IdentityError::Throttled { .. } => 429,
                IdentityError::Busy => 503,
                IdentityError::CertificateRefused { .. } | IdentityError::CertificateRequired => {
                    403
                }
                IdentityError::BadCredentials(_) | IdentityError::Malformed(_) => 401,
            },
            Refusal::IdentityRequired => 401,
            Refusal::Denied { anonymous, .. } => {
                if *anonymous {
                    401
                } else {
                    403
                }
            }
            Refusal::NotLocal(_) => 403,
            Refusal::Method { .. } => 405,
            Refusal::BadRequest(_) => 400,
            Refusal::BadPath(e) => e.status(),
            Refusal::NotFound(_) | Refusal::PrivateLookup(_) => 404,
            Refusal::Push(_) => 403,
            Refusal::Unlearnt(_) => 502,
            Refusal::RateLimited { .. } => 429,
            Refusal::Hinted { refusal, .. } => refusal.status(),
        }
    }

    /// The one line the client is shown (`go` prints it verbatim).
    pub fn message(&self) -> String {
        match self {
            Refusal::Identity(e) => e.message(),
            Refusal::IdentityRequired => "authentication required: present a client certificate \
                 (modgate agent) or .netrc credentials"
                .into(),
            Refusal::Denied { message, .. } => message.clone(),
            Refusal::NotLocal(m)
            | Refusal::BadRequest(m)
            | Refusal::NotFound(m)
            | Refusal::PrivateLookup(m)
            | Refusal::Push(m)
            | Refusal::Unlearnt(m) => m.clone(),
            Refusal::Method { message, .. } | Refusal::RateLimited { message, .. } => {
                message.clone()
            }
            Refusal::BadPath(e) => e.to_string(),
            Refusal::Hinted { refusal, hint } => format!("{}; {hint}", refusal.message()),
        }
    }

    /// Headers the answer carries: the Basic challenge with a 401 (no credential can stand
    /// in for a refused certificate, so none then), `Retry-After` for a throttled or busy
    /// check (a throttled client must wait, not retry at once), `Allow` with a 405.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Refusal::Identity(IdentityError::Throttled { retry_after, .. }) => {
                vec![("Retry-After", retry_after.as_secs().max(1).to_string())]
            }
            Refusal::Identity(IdentityError::Busy) => vec![("Retry-After", "1".into())],
            Refusal::RateLimited { retry_after, .. } => {
                vec![("Retry-After", (*retry_after).max(1).to_string())]
            }
            Refusal::Method { allow, .. } => vec![("Allow", (*allow).to_string())],
            Refusal::Hinted { refusal, .. } => refusal.headers(),
            r if r.status() == 401 => vec![("WWW-Authenticate", BASIC_CHALLENGE.to_string())],
            _ => Vec::new(),
        }
    }

    /// The decision the audit record carries.
    pub fn audit(&self) -> AuditDecision {
        match self {
            Refusal::Hinted { refusal, .. } => refusal.audit(),
            Refusal::Identity(_) | Refusal::IdentityRequired => AuditDecision::Unauthenticated,
            Refusal::Denied {
                anonymous: true, ..
            } => AuditDecision::Unauthenticated,
            Refusal::Denied {
                anonymous: false, ..
            }
            | Refusal::Push(_)
            | Refusal::RateLimited { .. } => AuditDecision::Deny,
            _ => AuditDecision::Error,
        }
    }

    /// The `reason` label of `modgate_auth_failures_total`, for refusals that count there.
    pub fn auth_failure(&self) -> Option<&'static str> {
        match self {
            Refusal::Identity(e) => Some(e.reason()),
            Refusal::IdentityRequired => Some("missing"),
            Refusal::Hinted { refusal, .. } => refusal.auth_failure(),
            _ => None,
        }
    }

    /// Every `reason` label of `modgate_auth_failures_total` (`match` without a wildcard: a
    /// new identity error or credential failure fails to compile until it is listed).
    pub fn auth_failure_labels() -> Vec<&'static str> {
        let _every = |e: &IdentityError, f: AuthFailure| match (e, f) {
            (
                IdentityError::BadCredentials(_)
                | IdentityError::Malformed(_)
                | IdentityError::CertificateRefused { .. }
                | IdentityError::CertificateRequired
                | IdentityError::Throttled { .. }
                | IdentityError::Busy,
                AuthFailure::UnknownUser
                | AuthFailure::BadPassword
                | AuthFailure::UnknownToken
                | AuthFailure::NotConfigured,
            ) => (),
        };
        let errors = [
            IdentityError::BadCredentials(AuthFailure::UnknownUser),
            IdentityError::BadCredentials(AuthFailure::BadPassword),
            IdentityError::BadCredentials(AuthFailure::UnknownToken),
            IdentityError::BadCredentials(AuthFailure::NotConfigured),
            IdentityError::Malformed(String::new()),
            IdentityError::CertificateRefused {
                subject: String::new(),
                reason: "",
            },
            IdentityError::CertificateRequired,
            IdentityError::Throttled {
                scope: modgate_identity::Scope::Source,
                retry_after: std::time::Duration::ZERO,
            },
            IdentityError::Busy,
        ];
        errors
            .into_iter()
            .map(Refusal::Identity)
            .chain([Refusal::IdentityRequired])
            .filter_map(|r| r.auth_failure())
            .collect()
    }
}

impl Admission {
    fn new(verdict: Verdict) -> Admission {
        Admission {
            verdict,
            kind: None,
            request: None,
            git: None,
            route: None,
            decision: None,
            principals: Vec::new(),
            matched: Vec::new(),
            commit_needed: false,
            vulns: None,
            retracted: None,
            cooled: None,
        }
    }

    /// An admission refused before the request was looked at (identity failures).
    pub fn refused(r: Refusal) -> Admission {
        Admission::new(Verdict::Refuse(r))
    }

    fn answer(mut self, local: Local) -> Admission {
        self.verdict = Verdict::Answer(local);
        self
    }

    fn refuse(mut self, r: Refusal) -> Admission {
        self.verdict = Verdict::Refuse(r);
        self
    }

    /// How a forwarded answer is cached (None: not cached, or not forwarded).
    pub fn cache_plan(&self) -> Option<&CachePlan> {
        match &self.verdict {
            Verdict::Forward { cache_plan, .. } | Verdict::Sumdb { cache_plan, .. } => {
                cache_plan.as_ref()
            }
            _ => None,
        }
    }

    /// The path to ask the one upstream of a request without a chain (a checksum database,
    /// a Git host).
    pub fn single_path(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::Git { path, .. } | Verdict::Sumdb { path, .. } => Some(path),
            _ => None,
        }
    }

    /// A git smart HTTP request, forwarded (its body and git headers go to the host).
    pub fn is_git(&self) -> bool {
        matches!(self.verdict, Verdict::Git { .. })
    }

    /// An admin cache purge's module (and version), when that is what was admitted.
    pub fn purge(&self) -> Option<(&str, Option<&str>)> {
        match &self.verdict {
            Verdict::Answer(Local::Purge {
                module, version, ..
            }) => Some((module, version.as_deref())),
            _ => None,
        }
    }

    /// An admin fetched query's identity, when that is what was admitted.
    pub fn fetched_query(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::Answer(Local::Fetched { identity, .. }) => Some(identity),
            _ => None,
        }
    }

    #[cfg(test)]
    pub fn is_refused(&self) -> bool {
        matches!(self.verdict, Verdict::Refuse(_))
    }
}

/// The decision of a background refresh: the request that caused it was admitted.
fn refresh_decision() -> Decision {
    Decision {
        effect: modgate_policy::Effect::Allow,
        roles: Vec::new().into(),
        rule: "refresh".into(),
        reason: "background refresh of a cached answer for an admitted request".into(),
    }
}

/// Every spelling of `module` that reaches the same thing on `route`, the path as spelled
/// first: on a route to a server that names repositories without regard to case (a Git host)
/// its lower-cased form, and under a git upstream's repository template the canonical form of
/// each (the repository a host resolves `x.git`, `x.wiki`, … to: [`RootTemplate::canonical`]).
///
/// [`RootTemplate::canonical`]: crate::template::RootTemplate::canonical
fn spellings(
    gateway: &Gateway,
    route: &modgate_policy::Route<crate::upstream::Chain>,
    module: &str,
) -> Vec<String> {
    let mut out = vec![module.to_string()];
    let add = |out: &mut Vec<String>, s: String| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    if route.target.folds_case {
        add(&mut out, module.to_ascii_lowercase());
    }
    for git in route
        .target
        .steps
        .iter()
        .filter_map(|s| gateway.git.get(&s.upstream.name))
    {
        for spelled in out.clone() {
            if let Some(c) = git.root.canonical(&spelled, &git.aliases) {
                add(&mut out, c);
            }
        }
    }
    out
}

/// The route of `module`. Route patterns compare case as Go does, but a route to a server
/// that folds case (a Git host) — or a private route — also owns the other case spellings of
/// its paths: `git.corp.example/TEAM/secret` is the private repository `team/secret` to the
/// host, so it must neither fall through to a public route (its name would leave the network)
/// nor escape the private route's policy. When the lower-cased path lands on such a route and
/// the path as spelled does not, that route is the one.
pub fn route_for<'g>(
    gateway: &'g Gateway,
    module: &str,
) -> Option<modgate_policy::RouteMatch<'g, crate::upstream::Chain>> {
    let spelled = gateway.routes.lookup(module);
    if !module.bytes().any(|b| b.is_ascii_uppercase()) {
        return spelled;
    }
    let private = |m: &modgate_policy::RouteMatch<'g, crate::upstream::Chain>| {
        m.route.private || m.route.target.steps.iter().any(|s| s.upstream.private)
    };
    let lower = module.to_ascii_lowercase();
    match gateway.routes.lookup(&lower) {
        // Never away from a private route: only towards one, or towards a case-folding route
        // from a public one.
        Some(l)
            if spelled.as_ref().is_none_or(|m| m.index != l.index)
                && (private(&l)
                    || (l.route.target.folds_case && !spelled.as_ref().is_some_and(private))) =>
        {
            Some(l)
        }
        _ => spelled,
    }
}

/// The access decision for a module path on `route`, made for every spelling that reaches
/// the same module there ([`spellings`]): another spelling of a denied path must not get
/// through, so the first denial of any spelling wins. The one place every path kind (module
/// requests, `?go-get=1`, git smart HTTP) is decided.
fn decide_access(
    gateway: &Gateway,
    principal: &modgate_policy::Principal,
    route: &modgate_policy::Route<crate::upstream::Chain>,
    access: &AccessRequest,
) -> Decision {
    let decision = gateway.access.decide(principal, access);
    // Only a route to a server that resolves names its own way (every git upstream, a
    // templated proxy) has other spellings.
    if !decision.is_allowed() || !route.target.folds_case {
        return decision;
    }
    let spelled = spellings(gateway, route, access.module);
    for other in spelled.iter().skip(1) {
        let folded = gateway.access.decide(
            principal,
            &AccessRequest {
                module: other,
                ..*access
            },
        );
        if !folded.is_allowed() {
            return folded;
        }
    }
    // Rules are written with letters in either case (`github.com/Azure/…`), and the host
    // resolves every case spelling to one repository: each spelling, lower-cased, is also
    // asked of the case-folded policy, for denials only.
    for other in &spelled {
        let lower = other.to_ascii_lowercase();
        let folded = gateway.access_folded.decide(
            principal,
            &AccessRequest {
                module: &lower,
                ..*access
            },
        );
        if !folded.is_allowed() {
            return folded;
        }
    }
    decision
}

/// Whether the decision [`decide_access`] makes could depend on the commit the requested
/// version points at, for any spelling it decides.
fn depends_on_commit(
    gateway: &Gateway,
    principal: &modgate_policy::Principal,
    route: &modgate_policy::Route<crate::upstream::Chain>,
    access: &AccessRequest,
) -> bool {
    if gateway.access.depends_on_commit(principal, access) {
        return true;
    }
    if !route.target.folds_case {
        return false;
    }
    let spelled = spellings(gateway, route, access.module);
    spelled.iter().any(|other| {
        let lower = other.to_ascii_lowercase();
        gateway.access.depends_on_commit(
            principal,
            &AccessRequest {
                module: other,
                ..*access
            },
        ) || gateway.access_folded.depends_on_commit(
            principal,
            &AccessRequest {
                module: &lower,
                ..*access
            },
        )
    })
}

/// What a request names, for a denial: `module@version (.kind)`, or the module's `list` /
/// `@latest`.
pub fn describe(req: &ModuleRequest) -> String {
    match &req.version {
        Some(v) => format!("{}@{} (.{})", req.module, v.as_str(), req.kind.as_str()),
        None => format!("{} ({})", req.module, req.kind.as_str()),
    }
}

/// A policy denial's message, without the `modgate: ` prefix the answer adds.
fn denied(decision: &Decision, identity: &RequestIdentity, what: &str) -> Refusal {
    let message = decision.deny_message(&identity.principal.name, what);
    let message = match message.strip_prefix("modgate: ") {
        Some(m) => m.to_string(),
        None => message,
    };
    Refusal::Denied {
        message,
        anonymous: identity.principal.is_anonymous(),
    }
}

/// Decides what happens to a request whose identity is `identity`.
pub fn admit(scope: &Scope, inbound: &Inbound, identity: &RequestIdentity) -> Admission {
    let mut admission = decide(scope, inbound, identity);
    // An anonymous 401 asks for credentials: tell the go command what its `.netrc` needs.
    let hint = match (&admission.verdict, scope.listener) {
        (
            Verdict::Refuse(
                Refusal::IdentityRequired
                | Refusal::Denied {
                    anonymous: true, ..
                },
            ),
            Some(listener),
        ) => netrc_hint(scope.gateway, listener, inbound),
        _ => None,
    };
    if let Some(hint) = hint {
        admission.verdict = match admission.verdict {
            Verdict::Refuse(r) => Verdict::Refuse(Refusal::Hinted {
                refusal: Box::new(r),
                hint,
            }),
            other => other,
        };
    }
    admission
}

/// `User-Agent` prefix of the go command (it sends Go's default).
const GO_USER_AGENT: &str = "Go-http-client/";

/// What the go command's `.netrc` lookup needs, for an anonymous 401 it got: credentials go
/// only over https, and the `machine` it looks for is the host *and port* of its GOPROXY URL
/// (the Host it sent; `cmd/go/internal/auth` matches the URL's host with its port). `None`
/// for other clients (curl, for one, matches `machine` without the port) and when the gateway
/// has no users file (no `.netrc` entry could help).
fn netrc_hint(gateway: &Gateway, listener: &ListenerRuntime, inbound: &Inbound) -> Option<String> {
    let head = inbound.head;
    let agent = head.headers.get(http::header::USER_AGENT)?.to_str().ok()?;
    if !agent.starts_with(GO_USER_AGENT) || gateway.auth.users().is_none() {
        return None;
    }
    let via_proxy = inbound
        .peer
        .is_some_and(|ip| listener.identity.trusted.contains(&ip));
    if listener.tls.is_none() && !via_proxy {
        return Some("the go command sends .netrc credentials over https only".into());
    }
    let host = request_host(head)
        // Echoed back: only what a host[:port] is made of.
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 260
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    Some(match host {
        Some(h) => format!(
            "for .netrc, the go command looks for \"machine {h}\" (host and port as in GOPROXY)"
        ),
        None => {
            "for .netrc, the go command looks for \"machine <host>:<port>\" as in GOPROXY".into()
        }
    })
}

/// [`admit`] without the client hints.
fn decide(scope: &Scope, inbound: &Inbound, identity: &RequestIdentity) -> Admission {
    let gateway = scope.gateway;
    let head = inbound.head;
    let anonymous = identity.principal.is_anonymous();
    let admission = Admission::new(Verdict::Forward {
        cache_plan: None,
        ledger_key: None,
    });
    if let Some(l) = scope.listener.filter(|_| !scope.refresh) {
        if l.require_identity && anonymous {
            return admission.refuse(Refusal::IdentityRequired);
        }
        let loopback = inbound.peer.is_some_and(|ip| ip.is_loopback());
        if l.admin && head.uri.path() == PURGE_PATH && loopback {
            return admit_purge(scope, l, inbound, identity, admission);
        }
        if l.admin && head.uri.path() == FETCHED_PATH && loopback {
            return admit_fetched(scope, l, inbound, identity, admission);
        }
    }

    let path = head.uri.path();
    let path = path.strip_prefix(gateway.parser.prefix()).unwrap_or(path);
    if let Some(g) = parse_git_request(path, head.uri.query()) {
        return admit_git(scope, identity, admission, head, g);
    }
    let method = &head.method;
    if method != Method::GET && method != Method::HEAD {
        return admission.refuse(Refusal::Method {
            message: format!(
                "method {method} is not allowed: the GOPROXY protocol is read-only (GET, HEAD)"
            ),
            allow: "GET, HEAD",
        });
    }
    let declares_body = head.headers.contains_key(http::header::TRANSFER_ENCODING)
        || head
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    if declares_body {
        return admission.refuse(Refusal::BadRequest("GOPROXY requests have no body".into()));
    }
    if let Some(rel) = path.strip_prefix(VULNDB_PREFIX) {
        if let Some(policy) = gateway.vulns.as_ref().filter(|p| p.serve) {
            return match policy.db.file(rel) {
                Some(_) => admission.answer(Local::VulnDb {
                    rel: rel.to_string(),
                }),
                None => admission.refuse(Refusal::NotFound(format!(
                    "{VULNDB_PREFIX}{rel}: the vulnerability database has no such file"
                ))),
            };
        }
    }
    let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
    let parsed = match gateway.parser.parse(target) {
        Ok(p) => p,
        Err(e) => return admission.refuse(Refusal::BadPath(e)),
    };
    let mut admission = Admission {
        kind: Some(parsed.kind()),
        ..admission
    };
    match parsed {
        GoProxyRequest::GoGet { import_path } => {
            // A path without a host (`/group/repo?go-get=1`) is for the host the client named:
            // the gateway serving a vanity host name, or reached as an HTTP proxy.
            let first = import_path.split('/').next().unwrap_or("");
            let host = request_host(inbound.head)
                .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name))
                .filter(|h| {
                    !first.contains('.')
                        && h.contains('.')
                        && h.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
                });
            let import_path = match host {
                Some(h) => format!("{h}/{import_path}"),
                None => import_path,
            };
            go_get(scope, inbound, identity, admission, &import_path)
        }
        GoProxyRequest::Sumdb(s) => {
            if let Some(log) = gateway.checksum_log.as_ref().filter(|l| l.name == s.name) {
                return admit_checksum_log(gateway, identity, admission, log, &s.endpoint);
            }
            let Some(db) = gateway.sumdbs.get(&s.name) else {
                // 404 on `supported` tells `go` to use the database directly.
                return admission.refuse(Refusal::NotFound(format!(
                    "checksum database {:?} is not proxied by this gateway",
                    s.name
                )));
            };
            match &s.endpoint {
                SumdbEndpoint::Supported => {
                    admission.verdict = Verdict::Answer(Local::SumdbSupported);
                    return admission;
                }
                SumdbEndpoint::Lookup { module, .. } => {
                    // A private module's name never leaves the intranet, not even to ask for
                    // its checksum.
                    if let Some(m) = route_for(gateway, module) {
                        let private = m.route.private
                            || m.route.target.steps.iter().any(|s| s.upstream.private);
                        if private {
                            admission.route = Some(m.index);
                            return admission.refuse(Refusal::PrivateLookup(format!(
                                "{module} is on private route {:?}: it is never looked up in a \
                                 public checksum database (set GONOSUMDB/GOPRIVATE for it)",
                                m.route.name
                            )));
                        }
                    }
                }
                SumdbEndpoint::Latest | SumdbEndpoint::Tile { .. } => {}
            }
            // The access policy applies to checksum-database reads too: a lookup is about its
            // module (rules for that module apply), `latest` and tiles about no module (only
            // rules whose pattern matches every path, e.g. `prefix: ""`, apply). A rule may
            // name them with `kinds: [sumdb]`.
            if gateway.access_configured && !scope.refresh {
                let (module, version) = match &s.endpoint {
                    SumdbEndpoint::Lookup { module, version } => {
                        (module.as_str(), Some(version.as_str()))
                    }
                    _ => ("", None),
                };
                let route = format!("sumdb:{}", s.name);
                let decision = gateway.access.decide(
                    &identity.principal,
                    &AccessRequest {
                        module,
                        kind: s.kind(),
                        version,
                        route: &route,
                        private_route: false,
                        commit: None,
                    },
                );
                let refusal = (!decision.is_allowed()).then(|| {
                    let what = match version {
                        Some(v) => format!("{module}@{v} (checksum lookup)"),
                        None => format!("checksum database {}", s.name),
                    };
                    denied(&decision, identity, &what)
                });
                admission.decision = Some(decision);
                if let Some(r) = refusal {
                    return admission.refuse(r);
                }
            }
            admission.verdict = Verdict::Sumdb {
                db: db.clone(),
                path: s.upstream_path(),
                cache_plan: if scope.caching {
                    CachePlan::sumdb(&s, scope.ttl)
                } else {
                    None
                },
            };
            admission
        }
        GoProxyRequest::Module(req) => {
            let Some(m) = route_for(gateway, &req.module) else {
                let message = format!("no route for module {}", req.module);
                admission.request = Some(req);
                return admission.refuse(Refusal::NotFound(message));
            };
            let route = m.route;
            admission.route = Some(m.index);
            let access = AccessRequest {
                module: &req.module,
                kind: req.kind,
                version: req.version.as_ref().map(|v| v.as_str()),
                route: &route.name,
                private_route: route.private,
                commit: inbound.commit,
            };
            let decision = if scope.refresh {
                refresh_decision()
            } else {
                let decision = decide_access(gateway, &identity.principal, route, &access);
                // A deny rule already decided: a commit could only add rules, and a deny
                // overrides, so nothing is asked upstream for a refused request.
                let by_default = [
                    modgate_policy::DEFAULT_RULE,
                    modgate_policy::PRIVATE_DEFAULT_RULE,
                ]
                .contains(&decision.rule.as_str());
                admission.commit_needed = (decision.is_allowed() || by_default)
                    && depends_on_commit(gateway, &identity.principal, route, &access);
                decision
            };
            let mut attributed = identity.clone();
            identity::attribute(&mut attributed, &decision, |p| {
                decide_access(gateway, p, route, &access)
            });
            admission.principals = attributed.principals;
            admission.matched = attributed.matched;
            let vulns = match (&gateway.vulns, &req.version) {
                (Some(policy), Some(v))
                    if decision.is_allowed()
                        && !scope.refresh
                        && matches!(
                            req.kind,
                            RequestKind::Info | RequestKind::Mod | RequestKind::Zip
                        ) =>
                {
                    Some(policy.judge(
                        &req.module,
                        v.as_str(),
                        &route.name,
                        &decision.roles,
                        scope.now,
                    ))
                }
                _ => None,
            };
            let vulnerable = vulns
                .as_ref()
                .and_then(|j| j.judged.as_ref())
                .filter(|j| j.mode == crate::config::VersionMode::Enforce)
                .map(|j| j.reason.clone());
            admission.vulns = vulns;
            if let Some(reason) = vulnerable {
                // Refused whatever the tag's commit: nothing is asked upstream for it.
                admission.commit_needed = false;
                admission.verdict = Verdict::Refuse(Refusal::Denied {
                    message: format!(
                        "{} may not read {}: {reason}",
                        identity.principal.name,
                        describe(&req)
                    ),
                    anonymous: false,
                });
            } else if decision.is_allowed() {
                let cache_plan = if scope.caching {
                    match CachePlan::module(&route.name, &req, scope.ttl, &route.target.cache) {
                        Some(p) if route.target.per_identity_cache => {
                            Some(p.per_identity(&identity::cache_identity(&identity.principal)))
                        }
                        other => other,
                    }
                } else {
                    None
                };
                let ledger_key = if scope.caching {
                    cache::artifact(&req)
                } else {
                    None
                };
                admission.verdict = Verdict::Forward {
                    cache_plan,
                    ledger_key,
                };
            } else {
                let mut what = describe(&req);
                if let Some(commit) = inbound.commit {
                    // A tag denied by the commit it points at: say which commit.
                    what.push_str(&format!(" at commit {commit}"));
                }
                admission.verdict = Verdict::Refuse(denied(&decision, identity, &what));
            }
            admission.request = Some(req);
            admission.decision = Some(decision);
            admission
        }
    }
}

/// git smart HTTP for a repository of a git upstream: clone and fetch forwarded to the Git host
/// with the gateway's credential, RBAC on the repository's import path; pushes refused.
fn admit_git(
    scope: &Scope,
    identity: &RequestIdentity,
    mut admission: Admission,
    head: &http::request::Parts,
    g: GitRequest,
) -> Admission {
    let gateway = scope.gateway;
    admission.kind = Some(RequestKind::Git);
    admission.git = Some((g.import_path.clone(), g.service.as_str()));
    if g.service == GitService::ReceivePack {
        return admission.refuse(Refusal::Push(format!(
            "{}: pushes are not accepted through modgate (it serves reads); push to the Git host",
            g.import_path
        )));
    }
    let (want, allow) = match g.endpoint {
        GitEndpoint::InfoRefs => (Method::GET, "GET"),
        GitEndpoint::Rpc => (Method::POST, "POST"),
    };
    if head.method != want {
        return admission.refuse(Refusal::Method {
            message: format!("{}: use {allow} for this git endpoint", g.import_path),
            allow,
        });
    }
    let not_here =
        |why: &str| Refusal::NotFound(format!("{}: not a repository here ({why})", g.import_path));
    let found = git_repository(
        scope,
        identity,
        &mut admission,
        &g.import_path,
        RequestKind::Git,
    );
    let Repository {
        git,
        route,
        root,
        captures,
        decision,
    } = match found {
        Ok(found) => found,
        Err(why) => return admission.refuse(not_here(why)),
    };
    if root != g.import_path {
        return admission.refuse(not_here("not the root of a git upstream's repository"));
    }
    let refusal = (!decision.is_allowed())
        .then(|| denied(&decision, identity, &format!("{} (git)", g.import_path)))
        .or_else(|| {
            // A clone carries every module and version of the repository: refused when any
            // rule the identity holds denies something inside it.
            denied_inside(gateway, identity, route, &g.import_path).map(|rule| Refusal::Denied {
                message: format!(
                    "{} may not clone {}: rule {rule:?} denies part of it (fetch modules \
                     through the module proxy instead)",
                    identity.principal.name, g.import_path
                ),
                anonymous: identity.principal.is_anonymous(),
            })
        })
        .or_else(|| {
            not_covered(gateway, identity, route, &g.import_path).map(|spelling| Refusal::Denied {
                message: format!(
                    "{} may not clone {}: rule {:?} allows {spelling} but no rule allows \
                         every module path inside it (fetch modules through the module proxy \
                         instead)",
                    identity.principal.name, g.import_path, decision.rule
                ),
                anonymous: identity.principal.is_anonymous(),
            })
        });
    let refusal = refusal.or_else(|| {
        // A clone carries every tag too: refused where a version policy would refuse some of
        // them to this identity (modules are then fetched through the module proxy, where
        // each version is judged).
        versions_inside(gateway, &route.name, &decision.roles, &g.import_path).map(|why| {
            Refusal::Denied {
                message: format!(
                    "{} may not clone {}: {why} (fetch modules through the module proxy \
                     instead, where each version is judged)",
                    identity.principal.name, g.import_path
                ),
                anonymous: identity.principal.is_anonymous(),
            }
        })
    });
    admission.decision = Some(decision);
    if let Some(r) = refusal {
        return admission.refuse(r);
    }
    let (Some(host), Ok(url)) = (
        gateway.git_hosts.get(&git.name),
        crate::template::expand(&git.repo, &captures),
    ) else {
        return admission.refuse(not_here("its git upstream has no host"));
    };
    let Ok(repo_path) = url.parse::<http::Uri>().map(|u| u.path().to_string()) else {
        return admission.refuse(not_here("its repository URL does not parse"));
    };
    let base = host.url.path.as_str();
    let relative = repo_path.strip_prefix(base).unwrap_or(&repo_path);
    admission.verdict = Verdict::Git {
        host: host.clone(),
        path: g.host_path(relative),
    };
    admission
}

/// A read of the company's own checksum database (`checksum_log:`): only members of its reader
/// roles may read it (its data tiles name every module version logged; an anonymous request is
/// asked for credentials), and a lookup — which may make the gateway fetch and log the version
/// — is also decided as a read of the module's `.mod` on its route, like the request `go`
/// makes next.
fn admit_checksum_log(
    gateway: &Gateway,
    identity: &RequestIdentity,
    mut admission: Admission,
    log: &crate::gateway::ChecksumLogPolicy,
    endpoint: &SumdbEndpoint,
) -> Admission {
    let name = &identity.principal.name;
    if identity.principal.is_anonymous() {
        return admission.refuse(Refusal::Denied {
            message: format!(
                "anonymous may not read checksum database {}: it is served to its readers only",
                log.name
            ),
            anonymous: true,
        });
    }
    let reader = gateway
        .access
        .roles_for(&identity.principal)
        .iter()
        .any(|r| log.readers.contains(&r.name));
    if !reader {
        return admission.refuse(Refusal::Denied {
            message: format!(
                "{name} may not read checksum database {}: no role of theirs is among its readers",
                log.name
            ),
            anonymous: false,
        });
    }
    if let SumdbEndpoint::Lookup { module, version } = endpoint {
        let Some(m) = route_for(gateway, module) else {
            return admission.refuse(Refusal::NotFound(format!(
                "{module}@{version}: no route for module {module}, so it is not in checksum \
                 database {}",
                log.name
            )));
        };
        admission.route = Some(m.index);
        let decision = decide_access(
            gateway,
            &identity.principal,
            m.route,
            &AccessRequest {
                module,
                kind: RequestKind::Mod,
                version: Some(version),
                route: &m.route.name,
                private_route: m.route.private,
                commit: None,
            },
        );
        let refusal = (!decision.is_allowed()).then(|| {
            denied(
                &decision,
                identity,
                &format!("{module}@{version} (checksum lookup)"),
            )
        });
        admission.decision = Some(decision);
        if let Some(r) = refusal {
            return admission.refuse(r);
        }
    }
    admission.verdict = Verdict::Answer(Local::ChecksumLog {
        endpoint: endpoint.clone(),
    });
    admission
}

/// Why a clone of the repository at `root` carries versions a version policy refuses the
/// identity (holding `roles`, on `route`): the vulnerability database names a module inside it
/// and the identity's mode is `enforce`, or the cooldown refuses it versions (`enforce`) and the
/// repository is not exempt. `None` when no version policy would refuse anything inside it.
fn versions_inside(gateway: &Gateway, route: &str, roles: &[String], root: &str) -> Option<String> {
    let inside = |module: &str| {
        let (m, r) = (module.to_ascii_lowercase(), root.to_ascii_lowercase());
        m == r || m.starts_with(&format!("{r}/"))
    };
    if let Some(v) = &gateway.vulns {
        if v.mode_for(route, roles) == crate::config::VersionMode::Enforce {
            if let Some(named) = v.db.module_paths().find(|m| inside(m)) {
                return Some(format!(
                    "the vulnerability database names {named}, and a clone carries every version"
                ));
            }
        }
    }
    if let Some((policy, exempt)) = &gateway.cooldown {
        let mode =
            crate::config::mode_for(policy.mode, &policy.routes, &policy.roles, route, roles);
        if mode == crate::config::VersionMode::Enforce && !exempt.iter().any(|p| p.matches(root)) {
            return Some(
                "new versions are held back for a cooldown, and a clone carries every tag".into(),
            );
        }
    }
    None
}

/// The id of a deny rule, of a role the identity holds, that could match the repository
/// `root` or anything inside it — a module below it, or a version range or kind limit on
/// it — whatever kinds it names: what a decision on the root alone cannot see. Decided for
/// every spelling of the root ([`spellings`]), without regard to case on a case-folding route,
/// by [`Pattern::may_match_within`](modgate_policy::Pattern::may_match_within): prefixes and
/// globs element by element, a regex on its automaton (every path it could match below the
/// root, not a probe path). Any deny that could match inside refuses the clone: a clone
/// carries every commit of every ref, so every nested module path the history ever held, and
/// what it holds can change between this decision and the clone.
fn denied_inside(
    gateway: &Gateway,
    identity: &RequestIdentity,
    route: &modgate_policy::Route<crate::upstream::Chain>,
    root: &str,
) -> Option<String> {
    use modgate_policy::Effect;
    let folds_case = route.target.folds_case;
    let spelled = spellings(gateway, route, root);
    gateway
        .access
        .roles_for(&identity.principal)
        .into_iter()
        .flat_map(|role| role.rules.iter())
        .filter(|r| r.effect == Effect::Deny)
        // Whatever its kinds: a clone carries zips, `.mod`s and history alike. A deny on the
        // root limited to kinds or versions is not seen by the root's git decision either.
        .find(|r| {
            r.patterns
                .iter()
                .any(|p| spelled.iter().any(|s| p.may_match_within(s, folds_case)))
        })
        .map(|r| r.id.clone())
}

/// A spelling of the repository `root` inside which not every module path is allowed, when
/// the route's default denies: the module proxy refuses what no rule allows, and a clone would
/// carry it. Covered means an allow rule of a role the identity holds, not limited to
/// versions or commits and allowing kind `git`, has a pattern matching the root and every
/// path below it ([`Pattern::matches_all_within`](modgate_policy::Pattern::matches_all_within):
/// always so for a prefix or glob that matches the root; for a regex, decided on its
/// automaton). `None` when every spelling is covered or the default allows.
fn not_covered(
    gateway: &Gateway,
    identity: &RequestIdentity,
    route: &modgate_policy::Route<crate::upstream::Chain>,
    root: &str,
) -> Option<String> {
    use modgate_policy::Effect;
    let access = &gateway.access;
    let default = if route.private {
        access.default_private()
    } else {
        access.default_public()
    };
    if default == Effect::Allow {
        return None;
    }
    let allows: Vec<&modgate_policy::Rule> = access
        .roles_for(&identity.principal)
        .into_iter()
        .flat_map(|role| role.rules.iter())
        .filter(|r| {
            r.effect == Effect::Allow
                && r.versions.is_none()
                && r.commits.is_none()
                && r.kinds
                    .as_ref()
                    .is_none_or(|k| k.contains(&RequestKind::Git))
        })
        .collect();
    spellings(gateway, route, root).into_iter().find(|s| {
        !allows
            .iter()
            .any(|r| r.patterns.iter().any(|p| p.matches_all_within(s)))
    })
}

/// The git upstream whose repository holds `import_path` (on the route that matches it), the
/// repository root's import path and captures, and the access decision for `kind` on
/// `import_path`; or why there is none. Sets the admission's route.
fn git_repository<'g>(
    scope: &Scope<'g>,
    identity: &RequestIdentity,
    admission: &mut Admission,
    import_path: &str,
    kind: RequestKind,
) -> Result<Repository<'g>, &'static str> {
    let gateway = scope.gateway;
    let m = route_for(gateway, import_path).ok_or("no route")?;
    admission.route = Some(m.index);
    let (git, root, captures) = m
        .route
        .target
        .steps
        .iter()
        .find_map(|s| {
            let git = gateway.git.get(&s.upstream.name)?;
            let (root, captures) = git.root.root_of(import_path)?;
            Some((git.clone(), root, captures))
        })
        .ok_or("not in a repository of a git upstream")?;
    let decision = decide_access(
        gateway,
        &identity.principal,
        m.route,
        &AccessRequest {
            module: import_path,
            kind,
            version: None,
            route: &m.route.name,
            private_route: m.route.private,
            commit: None,
        },
    );
    Ok(Repository {
        git,
        route: m.route,
        root,
        captures,
        decision,
    })
}

/// What [`git_repository`] finds for an import path.
struct Repository<'g> {
    git: Arc<GitUpstream>,
    route: &'g modgate_policy::Route<crate::upstream::Chain>,
    /// The repository root's import path.
    root: String,
    captures: Captures,
    /// The access decision on the import path.
    decision: Decision,
}

/// `?go-get=1` for an import path: answered for paths under a git upstream's repositories
/// (RBAC applies: denied is 403, or 401 for anonymous), 404 for everything else.
fn go_get(
    scope: &Scope,
    inbound: &Inbound,
    identity: &RequestIdentity,
    mut admission: Admission,
    import_path: &str,
) -> Admission {
    let gateway = scope.gateway;
    let not_served = |why: &str| {
        Refusal::NotFound(format!(
            "{import_path}: no ?go-get=1 page here ({why}); use this gateway as GOPROXY"
        ))
    };
    let found = git_repository(
        scope,
        identity,
        &mut admission,
        import_path,
        RequestKind::GoGet,
    );
    let Repository { root, decision, .. } = match found {
        Ok(found) => found,
        Err(why) => return admission.refuse(not_served(why)),
    };
    let refusal = (!decision.is_allowed())
        .then(|| denied(&decision, identity, &format!("{import_path} (go-get)")));
    admission.decision = Some(decision);
    if let Some(r) = refusal {
        return admission.refuse(r);
    }
    let base = match &gateway.public_url {
        Some(u) => u.clone(),
        None => {
            let host = request_host(inbound.head).unwrap_or_default();
            // Named in the page only if it is a host name (and port): never anything else a
            // client wrote there.
            let plain_host = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
            if !plain_host {
                return admission.refuse(Refusal::BadRequest(
                    "?go-get=1: the request's Host is not a host name (or set server.public_url)"
                        .into(),
                ));
            }
            let tls = scope.listener.is_some_and(|l| l.tls.is_some());
            format!("{}://{host}", if tls { "https" } else { "http" })
        }
    };
    admission.verdict = Verdict::Answer(Local::GoImport {
        root,
        proxy: format!("{base}{}", gateway.parser.prefix()),
    });
    admission
}

/// The HTML page of a `?go-get=1` answer (values escaped for an attribute).
pub fn go_import_page(root: &str, proxy: &str) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    format!(
        "<!DOCTYPE html>\n<html><head><meta name=\"go-import\" content=\"{} mod {}\"></head>\n\
         <body>go get {}: served by the module proxy {}</body></html>\n",
        esc(root),
        esc(proxy),
        esc(root),
        esc(proxy)
    )
}

/// Why the caller may not use an admin endpoint, if it may not: not from this host's own
/// tools (a loopback peer that is a trusted front proxy speaks for a remote client; a web
/// page can reach loopback too, hence the `Host`/`Origin` checks), or, with `access:`
/// configured, without the role `admin`.
fn admin_refusal(
    scope: &Scope,
    listener: &ListenerRuntime,
    inbound: &Inbound,
    identity: &RequestIdentity,
) -> Option<Refusal> {
    let head = inbound.head;
    let through_proxy = inbound
        .peer
        .is_some_and(|ip| listener.identity.trusted.contains(&ip));
    let not_local = crate::local::refusal(head, &listener.own_hosts, "admin").or_else(|| {
        through_proxy.then(|| {
            "admin: requests through a trusted front proxy are not local; call the admin \
             endpoint directly"
                .to_string()
        })
    });
    if let Some(message) = not_local {
        return Some(Refusal::NotLocal(message));
    }
    let gateway = scope.gateway;
    if gateway.access_configured {
        let holds_admin = gateway
            .access
            .roles_for(&identity.principal)
            .iter()
            .any(|r| r.name == ADMIN_ROLE);
        if !holds_admin {
            return Some(Refusal::Denied {
                message: format!(
                    "admin: {} does not hold the role {ADMIN_ROLE:?} the admin endpoint requires",
                    identity.principal.name
                ),
                anonymous: identity.principal.is_anonymous(),
            });
        }
    }
    None
}

/// `GET /admin/fetched?identity=ID&since=T[&until=T][&format=text|json|cyclonedx]`, admitted
/// as the purge is ([`admin_refusal`]): who fetched what is as sensitive as what the cache
/// holds.
fn admit_fetched(
    scope: &Scope,
    listener: &ListenerRuntime,
    inbound: &Inbound,
    identity: &RequestIdentity,
    admission: Admission,
) -> Admission {
    let head = inbound.head;
    if let Some(r) = admin_refusal(scope, listener, inbound, identity) {
        return admission.refuse(r);
    }
    if head.method != Method::GET && head.method != Method::HEAD {
        return admission.refuse(Refusal::Method {
            message: format!("use GET {FETCHED_PATH}?identity=ID&since=T[&until=T][&format=F]"),
            allow: "GET, HEAD",
        });
    }
    if !scope.caching {
        return admission.refuse(Refusal::NotFound(
            "this gateway keeps no fetched index (fetched: needs cache:)".into(),
        ));
    }
    let mut params = std::collections::BTreeMap::new();
    for kv in head
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
    {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        if !matches!(k, "identity" | "since" | "until" | "format") {
            return admission.refuse(Refusal::BadRequest(format!(
                "unknown parameter {k:?} (identity, since, until, format)"
            )));
        }
        let v = match modgate_protocol::percent_decode(v) {
            Ok(v) => v,
            Err(e) => return admission.refuse(Refusal::BadRequest(format!("{k}: {e}"))),
        };
        if params.insert(k, v).is_some() {
            return admission.refuse(Refusal::BadRequest(format!("{k} given twice")));
        }
    }
    let (Some(who), Some(since)) = (params.remove("identity"), params.remove("since")) else {
        return admission.refuse(Refusal::BadRequest(
            "missing ?identity=ID&since=T (T: RFC 3339, a date, or a span ago such as 7d)".into(),
        ));
    };
    Admission {
        verdict: Verdict::Answer(Local::Fetched {
            identity: who,
            since,
            until: params.remove("until"),
            format: params.remove("format").unwrap_or_else(|| "json".into()),
        }),
        ..admission
    }
}

/// `POST /admin/cache/purge?target=MODULE[@VERSION]` from a loopback peer on an admin
/// listener. Loopback is not enough: a web page can reach it too (DNS rebinding, cross-site
/// fetch), and a loopback peer that is a trusted front proxy speaks for a remote client.
/// With `access:` configured, the caller must hold the role `admin`.
fn admit_purge(
    scope: &Scope,
    listener: &ListenerRuntime,
    inbound: &Inbound,
    identity: &RequestIdentity,
    admission: Admission,
) -> Admission {
    let head = inbound.head;
    if let Some(r) = admin_refusal(scope, listener, inbound, identity) {
        return admission.refuse(r);
    }
    if head.method != Method::POST {
        return admission.refuse(Refusal::Method {
            message: format!("use POST {PURGE_PATH}?target=MODULE[@VERSION]"),
            allow: "POST",
        });
    }
    if !scope.caching {
        return admission.refuse(Refusal::NotFound("this gateway has no cache".into()));
    }
    let query = head.uri.query().unwrap_or("");
    let Some(raw) = query.split('&').find_map(|kv| kv.strip_prefix("target=")) else {
        return admission.refuse(Refusal::BadRequest(
            "missing ?target=MODULE[@VERSION]".into(),
        ));
    };
    let target = match modgate_protocol::percent_decode(raw) {
        Ok(t) => t,
        Err(e) => return admission.refuse(Refusal::BadRequest(e.to_string())),
    };
    match cache::target(&target) {
        Ok((module, version)) => Admission {
            verdict: Verdict::Answer(Local::Purge {
                target,
                module,
                version,
            }),
            ..admission
        },
        Err(e) => admission.refuse(Refusal::BadRequest(e.to_string())),
    }
}

#[cfg(test)]
mod tests;
