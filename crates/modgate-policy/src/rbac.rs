//! Role-based access control (RBAC) on Go module paths.
//!
//! The gateway turns whatever authenticated a request (a TLS client
//! certificate, a basic-auth user, a bearer token, trusted forwarded
//! headers, or nothing) into a plain-data [`Principal`], and the decoded
//! request into an [`AccessRequest`]. An [`AccessPolicy`] then answers
//! "may this principal read this module?" with a [`Decision`], or with a
//! full [`Explanation`] for `modgate explain`.
//!
//! # Model
//!
//! * A [`Role`] has *bindings* (who holds the role) and *rules* (what the
//!   role allows or denies).
//! * A [`Binding`] is a list of [`Matcher`]s that must **all** match the
//!   principal (AND); a role is held when **any** of its bindings matches
//!   (OR). Multi-valued fields (O, OU, SANs, groups) match when any value
//!   matches. Values are exact, case-sensitive strings, or globs when they
//!   contain any of `*`, `?` or `[` ([`path_match`] semantics: `*` does not
//!   cross `/`). SHA-256 fingerprints are compared as hex, ignoring case and
//!   colons.
//! * Anonymous principals only ever satisfy [`Matcher::Anonymous`] and
//!   [`Matcher::Any`]: field matchers never match a missing field, and an
//!   anonymous principal has none. Empty field values count as missing.
//! * A [`Rule`] applies to a request when any of its module [`Pattern`]s
//!   matches the decoded module path, **and** its `kinds` (if given)
//!   contain the request kind, **and** its [`VersionRange`] (if given)
//!   contains the request version, **and** its [`CommitSet`] (if given) is
//!   named by the request version. A request without an exact canonical
//!   semantic version (`list`, `@latest`, a query such as `master`, or a
//!   non-canonical `v1.2`) never matches a rule that has a version range.
//!   A range judges the version *string*: a pseudo-version of a release's
//!   commit is another version; a commit set names the commit itself in
//!   pseudo-versions and hash queries (not in tags, whose string does not
//!   say which commit they are).
//!
//! # Decision
//!
//! Among the rules of every role the principal holds (in role order, then
//! rule order):
//!
//! 1. **Deny overrides allow**: the first applicable `deny` rule decides.
//! 2. Otherwise the first applicable `allow` rule decides.
//! 3. Otherwise, on a private route the decision is the private default
//!    (deny, rule [`PRIVATE_DEFAULT_RULE`]); on any other route it is the
//!    policy's public default (rule [`DEFAULT_RULE`]).
//!
//! [`AccessPolicy::default_allow`] stands for "no access section": no roles,
//! and both defaults allow, so that turning RBAC off keeps private routes
//! reachable.
//!
//! Ranged *deny* rules only catch requests that carry a canonical version:
//! a caller that wants them to hold for queries such as `v1.3` or a branch
//! name must resolve the query (or deny the query kinds) before asking.
//!
//! # Example
//!
//! ```
//! use modgate_policy::rbac::*;
//! use modgate_policy::Pattern;
//! use modgate_protocol::RequestKind;
//!
//! let readers = Role {
//!     name: "readers".into(),
//!     bindings: vec![Binding::new(vec![Matcher::field("group", "dev")?])],
//!     rules: vec![Rule {
//!         id: "read-corp".into(),
//!         effect: Effect::Allow,
//!         patterns: vec![Pattern::prefix("corp.example.com")?],
//!         kinds: None,
//!         versions: None,
//!         commits: None,
//!     }],
//! };
//! let policy = AccessPolicy::new(vec![readers], Effect::Deny)?;
//!
//! let alice = Principal {
//!     source: PrincipalSource::Basic,
//!     name: "alice".into(),
//!     user: Some("alice".into()),
//!     groups: vec!["dev".into()],
//!     ..Principal::anonymous()
//! };
//! let req = AccessRequest {
//!     module: "corp.example.com/lib",
//!     kind: RequestKind::Zip,
//!     version: Some("v1.2.3"),
//!     route: "corp",
//!     private_route: true,
//!     commit: None,
//! };
//! assert!(policy.decide(&alice, &req).is_allowed());
//!
//! let denied = policy.decide(&Principal::anonymous(), &req);
//! assert_eq!(
//!     denied.deny_message("anonymous", req.module),
//!     "modgate: anonymous may not read corp.example.com/lib: \
//!      no role grants access to private route \"corp\" (rule private-default)"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use modgate_protocol::version::{
    canonical_version, compare_semver, is_pseudo_version, is_valid_semver,
};
use modgate_protocol::RequestKind;
use thiserror::Error;

use crate::cert::CertIdentity;
use crate::glob::path_match;
use crate::pattern::Pattern;

mod compiled;

use compiled::{Compiled, Decisive};

/// Rule id reported when no rule applies and the route is public.
pub const DEFAULT_RULE: &str = "default";

/// Rule id reported when no rule applies and the route is private.
pub const PRIVATE_DEFAULT_RULE: &str = "private-default";

/// Why a matcher, version range or policy could not be built. Every message
/// is one line and names the offending value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RbacError {
    /// A matcher value is the empty string.
    #[error("matcher value must not be empty")]
    EmptyValue,
    /// A matcher value looks like a glob but is not a valid `path.Match`
    /// pattern.
    #[error("invalid glob {glob:?}: syntax error in pattern")]
    BadGlob {
        /// The value as given.
        glob: String,
    },
    /// A fingerprint matcher value is not a SHA-256 fingerprint.
    #[error("invalid SHA-256 fingerprint {value:?}: want 64 hex digits, colons optional")]
    BadFingerprint {
        /// The value as given.
        value: String,
    },
    /// [`Matcher::field`] was given an unknown field name.
    #[error("unknown matcher {key:?} (expected one of {})", FIELD_KEYS.join(", "))]
    UnknownMatcher {
        /// The field name as given.
        key: String,
    },
    /// An effect is neither `allow` nor `deny`.
    #[error("unknown effect {value:?} (expected allow or deny)")]
    UnknownEffect {
        /// The effect as given.
        value: String,
    },
    /// A version constraint does not parse.
    #[error("invalid version range {range:?}: {reason}")]
    BadVersionRange {
        /// The whole range as given.
        range: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A commit in a rule's `commits` is not a commit hash (prefix).
    #[error("invalid commit {value:?}: want a commit hash or its first 12 or more hex digits")]
    BadCommit {
        /// The value as given.
        value: String,
    },
    /// A role has an empty name.
    #[error("role at index {index} has an empty name")]
    EmptyRoleName {
        /// Position of the role in the policy.
        index: usize,
    },
    /// Two roles share a name.
    #[error("duplicate role name {name:?}")]
    DuplicateRoleName {
        /// The repeated name.
        name: String,
    },
    /// A binding has no matchers (it would match every principal).
    #[error("role {role:?}: binding {index} has no matchers (use `any` to match every principal)")]
    EmptyBinding {
        /// The role's name.
        role: String,
        /// Position of the binding in the role.
        index: usize,
    },
    /// A binding requires `anonymous` together with a matcher that no
    /// anonymous principal satisfies, so it can never match.
    #[error("role {role:?}: binding {index} combines `anonymous` with a matcher anonymous principals never satisfy")]
    ContradictoryBinding {
        /// The role's name.
        role: String,
        /// Position of the binding in the role.
        index: usize,
    },
    /// A rule has an empty id.
    #[error("role {role:?}: rule at index {index} has an empty id")]
    EmptyRuleId {
        /// The role's name.
        role: String,
        /// Position of the rule in the role.
        index: usize,
    },
    /// A rule uses an id reserved for fallback decisions
    /// ([`DEFAULT_RULE`], [`PRIVATE_DEFAULT_RULE`]).
    #[error("role {role:?}: rule id {id:?} is reserved for fallback decisions")]
    ReservedRuleId {
        /// The role's name.
        role: String,
        /// The reserved id.
        id: String,
    },
    /// Two rules share an id (ids are unique across the whole policy).
    #[error("duplicate rule id {id:?} (in roles {first_role:?} and {second_role:?})")]
    DuplicateRuleId {
        /// The repeated id.
        id: String,
        /// Role holding the first rule with that id.
        first_role: String,
        /// Role holding the later rule with that id.
        second_role: String,
    },
    /// A rule has no module patterns, so it could never apply.
    #[error("role {role:?}: rule {id:?} has no module patterns")]
    RuleWithoutPatterns {
        /// The role's name.
        role: String,
        /// The rule's id.
        id: String,
    },
    /// A rule has an empty `kinds` list, so it could never apply.
    #[error("role {role:?}: rule {id:?} has an empty kinds list (omit it to match every kind)")]
    EmptyKinds {
        /// The role's name.
        role: String,
        /// The rule's id.
        id: String,
    },
}

// ---------------------------------------------------------------------------
// Principal

/// How a [`Principal`] was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PrincipalSource {
    /// No credentials were presented (or none were required).
    #[default]
    Anonymous,
    /// A verified TLS client certificate.
    Certificate,
    /// HTTP basic authentication.
    Basic,
    /// A bearer token.
    Token,
    /// Identity headers set by a trusted front proxy.
    Forwarded,
}

impl PrincipalSource {
    /// The source's name: `anonymous`, `certificate`, `basic`, `token` or
    /// `forwarded`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PrincipalSource::Anonymous => "anonymous",
            PrincipalSource::Certificate => "certificate",
            PrincipalSource::Basic => "basic",
            PrincipalSource::Token => "token",
            PrincipalSource::Forwarded => "forwarded",
        }
    }
}

impl fmt::Display for PrincipalSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is asking, as the policy sees it. Plain data: the gateway fills it
/// from a TLS certificate, a basic-auth user, a bearer token or trusted
/// forwarded headers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// How the principal was authenticated.
    pub source: PrincipalSource,
    /// Display name used in messages: a certificate CN or SPIFFE id, a user
    /// name, a token name, or `anonymous`.
    pub name: String,
    /// Certificate fields; present for [`PrincipalSource::Certificate`] and
    /// [`PrincipalSource::Forwarded`].
    pub cert: Option<CertIdentity>,
    /// Basic-auth user name.
    pub user: Option<String>,
    /// Bearer token *name* (never the secret).
    pub token: Option<String>,
    /// Groups from the users/tokens file.
    pub groups: Vec<String>,
}

impl Principal {
    /// The unauthenticated principal, named `anonymous`.
    pub fn anonymous() -> Principal {
        Principal {
            source: PrincipalSource::Anonymous,
            name: "anonymous".to_owned(),
            cert: None,
            user: None,
            token: None,
            groups: Vec::new(),
        }
    }

    /// Whether the principal is unauthenticated.
    pub fn is_anonymous(&self) -> bool {
        self.source == PrincipalSource::Anonymous
    }

    /// Certificate fields, unless the principal is anonymous.
    fn cert_fields(&self) -> Option<&CertIdentity> {
        if self.is_anonymous() {
            return None;
        }
        self.cert.as_ref()
    }
}

impl Default for Principal {
    fn default() -> Principal {
        Principal::anonymous()
    }
}

// ---------------------------------------------------------------------------
// Matchers

/// An exact value or a glob, matched against one identity field.
///
/// A value containing any of `*`, `?` or `[` is a glob with [`path_match`]
/// semantics (`*` and `?` do not cross `/`, `\` escapes); anything else is
/// compared exactly and case-sensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueMatch {
    text: String,
    glob: bool,
}

impl ValueMatch {
    /// Builds a matcher value, validating globs. Empty values are rejected.
    pub fn new(value: &str) -> Result<ValueMatch, RbacError> {
        if value.is_empty() {
            return Err(RbacError::EmptyValue);
        }
        let glob = value.contains(['*', '?', '[']);
        if glob && path_match(value, "").is_err() {
            return Err(RbacError::BadGlob {
                glob: value.to_owned(),
            });
        }
        Ok(ValueMatch {
            text: value.to_owned(),
            glob,
        })
    }

    /// Builds an exact SHA-256 fingerprint value: 64 hex digits, any case,
    /// colons optional. It is stored in lowercase without colons.
    pub fn fingerprint(value: &str) -> Result<ValueMatch, RbacError> {
        let hex: String = value
            .chars()
            .filter(|&c| c != ':')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RbacError::BadFingerprint {
                value: value.to_owned(),
            });
        }
        Ok(ValueMatch {
            text: hex,
            glob: false,
        })
    }

    /// Reports whether `candidate` matches. Empty candidates never match.
    pub fn matches(&self, candidate: &str) -> bool {
        if candidate.is_empty() {
            return false;
        }
        if self.glob {
            path_match(&self.text, candidate) == Ok(true)
        } else {
            self.text == candidate
        }
    }

    /// The value as given (a fingerprint in normalised form).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the value is a glob.
    pub fn is_glob(&self) -> bool {
        self.glob
    }

    fn matches_opt(&self, candidate: Option<&String>) -> bool {
        candidate.is_some_and(|c| self.matches(c))
    }

    fn matches_any(&self, candidates: &[String]) -> bool {
        candidates.iter().any(|c| self.matches(c))
    }

    /// Fingerprint comparison: hex, case-insensitive, colons ignored.
    fn matches_fingerprint(&self, candidate: &str) -> bool {
        let normalized = normalize_hex(candidate);
        if normalized.is_empty() {
            return false;
        }
        if self.glob {
            path_match(&self.text, &normalized) == Ok(true)
        } else {
            normalize_hex(&self.text) == normalized
        }
    }
}

impl fmt::Display for ValueMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn normalize_hex(s: &str) -> String {
    s.chars()
        .filter(|&c| c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Field names accepted by [`Matcher::field`].
const FIELD_KEYS: [&str; 12] = [
    "cn",
    "o",
    "ou",
    "dn",
    "san-dns",
    "san-email",
    "san-uri",
    "spiffe",
    "fingerprint",
    "user",
    "token",
    "group",
];

/// One identity test in a [`Binding`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// The principal is anonymous.
    Anonymous,
    /// The principal is not anonymous.
    Authenticated,
    /// Every principal, anonymous or not.
    Any,
    /// Certificate subject common name.
    Cn(ValueMatch),
    /// Any certificate subject organisation.
    O(ValueMatch),
    /// Any certificate subject organisational unit.
    Ou(ValueMatch),
    /// Certificate subject distinguished name, as rendered by the gateway.
    Dn(ValueMatch),
    /// Any DNS subject alternative name.
    SanDns(ValueMatch),
    /// Any e-mail subject alternative name.
    SanEmail(ValueMatch),
    /// Any URI subject alternative name.
    SanUri(ValueMatch),
    /// The certificate's SPIFFE id.
    Spiffe(ValueMatch),
    /// The certificate's SHA-256 fingerprint (hex, case-insensitive, colons
    /// ignored); build the value with [`ValueMatch::fingerprint`].
    Fingerprint(ValueMatch),
    /// Basic-auth user name.
    User(ValueMatch),
    /// Bearer token name.
    Token(ValueMatch),
    /// Any of the principal's groups.
    Group(ValueMatch),
}

impl Matcher {
    /// Builds a field matcher from its name (`cn`, `o`, `ou`, `dn`,
    /// `san-dns`, `san-email`, `san-uri`, `spiffe`, `fingerprint`, `user`,
    /// `token`, `group`) and value.
    pub fn field(key: &str, value: &str) -> Result<Matcher, RbacError> {
        if key == "fingerprint" {
            return Ok(Matcher::Fingerprint(ValueMatch::fingerprint(value)?));
        }
        let make: fn(ValueMatch) -> Matcher = match key {
            "cn" => Matcher::Cn,
            "o" => Matcher::O,
            "ou" => Matcher::Ou,
            "dn" => Matcher::Dn,
            "san-dns" => Matcher::SanDns,
            "san-email" => Matcher::SanEmail,
            "san-uri" => Matcher::SanUri,
            "spiffe" => Matcher::Spiffe,
            "user" => Matcher::User,
            "token" => Matcher::Token,
            "group" => Matcher::Group,
            _ => {
                return Err(RbacError::UnknownMatcher {
                    key: key.to_owned(),
                })
            }
        };
        Ok(make(ValueMatch::new(value)?))
    }

    /// The matcher's name: `anonymous`, `authenticated`, `any`, or one of
    /// the field names accepted by [`Matcher::field`].
    pub fn key(&self) -> &'static str {
        match self {
            Matcher::Anonymous => "anonymous",
            Matcher::Authenticated => "authenticated",
            Matcher::Any => "any",
            Matcher::Cn(_) => "cn",
            Matcher::O(_) => "o",
            Matcher::Ou(_) => "ou",
            Matcher::Dn(_) => "dn",
            Matcher::SanDns(_) => "san-dns",
            Matcher::SanEmail(_) => "san-email",
            Matcher::SanUri(_) => "san-uri",
            Matcher::Spiffe(_) => "spiffe",
            Matcher::Fingerprint(_) => "fingerprint",
            Matcher::User(_) => "user",
            Matcher::Token(_) => "token",
            Matcher::Group(_) => "group",
        }
    }

    /// The value of a field matcher; `None` for `anonymous`,
    /// `authenticated` and `any`.
    pub fn value(&self) -> Option<&ValueMatch> {
        match self {
            Matcher::Anonymous | Matcher::Authenticated | Matcher::Any => None,
            Matcher::Cn(v)
            | Matcher::O(v)
            | Matcher::Ou(v)
            | Matcher::Dn(v)
            | Matcher::SanDns(v)
            | Matcher::SanEmail(v)
            | Matcher::SanUri(v)
            | Matcher::Spiffe(v)
            | Matcher::Fingerprint(v)
            | Matcher::User(v)
            | Matcher::Token(v)
            | Matcher::Group(v) => Some(v),
        }
    }

    /// Reports whether the principal satisfies this matcher. Field matchers
    /// never match an anonymous principal or a missing (or empty) field.
    pub fn matches(&self, p: &Principal) -> bool {
        match self {
            Matcher::Anonymous => p.is_anonymous(),
            Matcher::Authenticated => !p.is_anonymous(),
            Matcher::Any => true,
            _ if p.is_anonymous() => false,
            Matcher::User(v) => v.matches_opt(p.user.as_ref()),
            Matcher::Token(v) => v.matches_opt(p.token.as_ref()),
            Matcher::Group(v) => v.matches_any(&p.groups),
            _ => p.cert_fields().is_some_and(|c| self.matches_cert(c)),
        }
    }

    fn matches_cert(&self, c: &CertIdentity) -> bool {
        match self {
            Matcher::Cn(v) => v.matches_opt(c.cn.as_ref()),
            Matcher::O(v) => v.matches_any(&c.o),
            Matcher::Ou(v) => v.matches_any(&c.ou),
            Matcher::Dn(v) => v.matches(&c.subject_dn),
            Matcher::SanDns(v) => v.matches_any(&c.san_dns),
            Matcher::SanEmail(v) => v.matches_any(&c.san_email),
            Matcher::SanUri(v) => v.matches_any(&c.san_uri),
            Matcher::Spiffe(v) => v.matches_opt(c.spiffe.as_ref()),
            Matcher::Fingerprint(v) => v.matches_fingerprint(&c.fingerprint_sha256),
            _ => false,
        }
    }

    /// Whether an anonymous principal can ever satisfy this matcher.
    fn anonymous_can_match(&self) -> bool {
        matches!(self, Matcher::Anonymous | Matcher::Any)
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value() {
            Some(v) => write!(f, "{}={:?}", self.key(), v.as_str()),
            None => f.write_str(self.key()),
        }
    }
}

/// A conjunction of matchers: it matches a principal when all of them do.
/// An empty binding matches nobody ([`AccessPolicy::new`] rejects it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    /// The matchers, all of which must match.
    pub matchers: Vec<Matcher>,
}

impl Binding {
    /// A binding of the given matchers.
    pub fn new(matchers: Vec<Matcher>) -> Binding {
        Binding { matchers }
    }

    /// Reports whether every matcher matches the principal.
    pub fn matches(&self, p: &Principal) -> bool {
        !self.matchers.is_empty() && self.matchers.iter().all(|m| m.matches(p))
    }

    /// Requires `anonymous` and something anonymous principals lack.
    fn is_contradictory(&self) -> bool {
        self.matchers.contains(&Matcher::Anonymous)
            && self.matchers.iter().any(|m| !m.anonymous_can_match())
    }
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.matchers.iter().enumerate() {
            if i > 0 {
                f.write_str(" and ")?;
            }
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Effects and version ranges

/// What a rule (or a decision) does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// The request may proceed.
    Allow,
    /// The request is refused.
    Deny,
}

impl Effect {
    /// `allow` or `deny`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Effect {
    type Err = RbacError;

    fn from_str(s: &str) -> Result<Effect, RbacError> {
        match s {
            "allow" => Ok(Effect::Allow),
            "deny" => Ok(Effect::Deny),
            _ => Err(RbacError::UnknownEffect {
                value: s.to_owned(),
            }),
        }
    }
}

/// A comparison operator in a [`VersionRange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "" | "=" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }

    /// Whether `version <op> operand` holds, given `version.cmp(operand)`.
    fn accepts(self, ord: Ordering) -> bool {
        match self {
            Op::Eq => ord == Ordering::Equal,
            Op::Ne => ord != Ordering::Equal,
            Op::Gt => ord == Ordering::Greater,
            Op::Ge => ord != Ordering::Less,
            Op::Lt => ord == Ordering::Less,
            Op::Le => ord != Ordering::Greater,
        }
    }
}

fn is_op_char(c: char) -> bool {
    matches!(c, '<' | '>' | '=' | '!')
}

/// One `<op><version>` comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Constraint {
    op: Op,
    version: String,
}

/// A conjunction of semantic-version comparisons, such as
/// `>=v1.2.0, <v2.0.0`, `=v1.4.1` or `!=v1.3.0`.
///
/// Constraints are separated by commas and/or whitespace; operators are
/// `=`, `!=`, `>`, `>=`, `<` and `<=` (a bare `v1.2.3` means `=`), optionally
/// followed by whitespace. Comparison follows Go's `semver.Compare`: build
/// metadata (such as `+incompatible`) is ignored, prereleases sort before
/// their release, and shorthand operands such as `v1.2` mean `v1.2.0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRange {
    constraints: Vec<Constraint>,
}

impl VersionRange {
    /// Parses a range; every operand must be a valid semantic version.
    pub fn parse(text: &str) -> Result<VersionRange, RbacError> {
        let bad = |reason: String| RbacError::BadVersionRange {
            range: text.to_owned(),
            reason,
        };
        let mut tokens = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty());
        let mut constraints = Vec::new();
        while let Some(token) = tokens.next() {
            let joined;
            let token = if token.chars().all(is_op_char) {
                // An operator on its own: the version is the next token.
                let operand = tokens
                    .next()
                    .ok_or_else(|| bad(format!("operator {token:?} has no version")))?;
                joined = format!("{token}{operand}");
                joined.as_str()
            } else {
                token
            };
            constraints.push(parse_constraint(token).map_err(bad)?);
        }
        if constraints.is_empty() {
            return Err(bad("no constraints".to_owned()));
        }
        Ok(VersionRange { constraints })
    }

    /// Reports whether `version` is an exact canonical module version (as
    /// `module.CanonicalVersion`, so `+incompatible` is kept) satisfying
    /// every constraint. Queries, shorthand versions and other build
    /// metadata never match.
    pub fn contains(&self, version: &str) -> bool {
        canonical_version(version).as_deref() == Some(version) && self.contains_canonical(version)
    }

    /// [`VersionRange::contains`] for a version already known to be canonical.
    fn contains_canonical(&self, version: &str) -> bool {
        self.constraints
            .iter()
            .all(|c| c.op.accepts(compare_semver(version, &c.version)))
    }
}

/// Parses one `<op><version>` token; the error is the reason.
fn parse_constraint(token: &str) -> Result<Constraint, String> {
    let split = token.find(|c| !is_op_char(c)).unwrap_or(token.len());
    let (op_text, version) = token.split_at(split);
    let op = Op::parse(op_text)
        .ok_or_else(|| format!("unknown operator {op_text:?} (expected =, !=, >, >=, < or <=)"))?;
    if !is_valid_semver(version) {
        return Err(format!(
            "{version:?} is not a semantic version (want e.g. v1.2.3)"
        ));
    }
    Ok(Constraint {
        op,
        version: version.to_owned(),
    })
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.constraints.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}{}", c.op.as_str(), c.version)?;
        }
        Ok(())
    }
}

/// The commits a rule is limited to, by hash: `[0-9a-f]`, at least 12 digits (the revision
/// a pseudo-version carries), compared in lower case.
///
/// A request names a commit when its version is a pseudo-version whose revision (its last
/// 12 hex digits) begins the hash, or is a query of four or more hex digits that begins it
/// (or that it begins: a full hash queried), or when the commit its version points at is
/// known ([`AccessRequest::commit`]: the gateway asks the upstream's `.info` for the
/// `Origin.Hash` of a release or prerelease tag before deciding) and is one of the hashes.
/// The version string of a tag does not say which commit it is; where the upstream does not
/// say either, a tag does not name the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitSet {
    hashes: Vec<String>,
}

/// The shortest commit a [`CommitSet`] takes: the revision length of a pseudo-version.
pub const MIN_COMMIT_LEN: usize = 12;

/// The shortest hex query [`CommitSet::names`] takes as a commit (git's own minimum
/// abbreviation).
const MIN_QUERY_LEN: usize = 4;

impl CommitSet {
    /// Builds the set; every value must be at least [`MIN_COMMIT_LEN`] hex digits (at most
    /// 64, a SHA-256 object name).
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<CommitSet, RbacError> {
        let mut hashes = Vec::with_capacity(values.len());
        for v in values {
            let v = v.as_ref();
            let valid = (MIN_COMMIT_LEN..=64).contains(&v.len())
                && v.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid {
                return Err(RbacError::BadCommit {
                    value: v.to_owned(),
                });
            }
            hashes.push(v.to_ascii_lowercase());
        }
        if hashes.is_empty() {
            return Err(RbacError::BadCommit {
                value: String::new(),
            });
        }
        Ok(CommitSet { hashes })
    }

    /// Whether the request names one of the commits (see [`CommitSet`]): its `version`,
    /// or the `commit` that version is known to point at.
    pub fn names_request(&self, version: Option<&str>, commit: Option<&str>) -> bool {
        if let Some(commit) = commit.filter(|c| c.len() >= MIN_COMMIT_LEN) {
            let commit = commit.to_ascii_lowercase();
            if self
                .hashes
                .iter()
                .any(|h| commit.starts_with(h.as_str()) || h.starts_with(&commit))
            {
                return true;
            }
        }
        version.is_some_and(|v| self.names(v))
    }

    /// Whether the requested `version` names one of the commits (see [`CommitSet`]).
    pub fn names(&self, version: &str) -> bool {
        let rev = if is_pseudo_version(version) {
            let main = version.split('+').next().unwrap_or(version);
            main.rsplit('-').next().unwrap_or("").to_ascii_lowercase()
        } else if version.len() >= MIN_QUERY_LEN && version.bytes().all(|b| b.is_ascii_hexdigit()) {
            version.to_ascii_lowercase()
        } else {
            return false;
        };
        self.hashes
            .iter()
            .any(|h| h.starts_with(&rev) || rev.starts_with(h.as_str()))
    }
}

impl fmt::Display for CommitSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hashes.join(", "))
    }
}

// ---------------------------------------------------------------------------
// Requests, rules and roles

/// The request being authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessRequest<'a> {
    /// Decoded module path (`""` for requests without one).
    pub module: &'a str,
    /// What is being requested.
    pub kind: RequestKind,
    /// The version as requested (`None` for `list` and `@latest`); it may be
    /// a query such as `master`.
    pub version: Option<&'a str>,
    /// Name of the route serving the module.
    pub route: &'a str,
    /// Whether that route is private.
    pub private_route: bool,
    /// The commit the version is known to point at (full hex object name), when the gateway
    /// resolved it for a rule with `commits` ([`AccessPolicy::depends_on_commit`]).
    pub commit: Option<&'a str>,
}

/// An allow or deny statement about module paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Identifier, unique across the policy; reported in decisions.
    pub id: String,
    /// What the rule does when it applies.
    pub effect: Effect,
    /// Module patterns; the rule applies to a module matching any of them.
    pub patterns: Vec<Pattern>,
    /// Request kinds the rule is limited to; `None` means every kind.
    pub kinds: Option<Vec<RequestKind>>,
    /// Versions the rule is limited to; `None` means any request, with or
    /// without a version.
    pub versions: Option<VersionRange>,
    /// Commits the rule is limited to (requests whose version names one, see
    /// [`CommitSet`]); `None` means any request.
    pub commits: Option<CommitSet>,
}

impl Rule {
    /// Reports whether the rule applies to the request: a pattern matches
    /// the module, the kind is listed (if kinds are given) and the version
    /// is in range (if a range is given).
    pub fn applies(&self, req: &AccessRequest<'_>) -> bool {
        self.patterns.iter().any(|p| p.matches(req.module))
            && self.kinds.as_ref().is_none_or(|k| k.contains(&req.kind))
            && self
                .versions
                .as_ref()
                .is_none_or(|r| req.version.is_some_and(|v| r.contains(v)))
            && self
                .commits
                .as_ref()
                .is_none_or(|c| c.names_request(req.version, req.commit))
    }
}

/// A named set of rules and the principals holding them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// Unique, non-empty role name.
    pub name: String,
    /// Who holds the role: any binding matching is enough.
    pub bindings: Vec<Binding>,
    /// What the role allows or denies, in order.
    pub rules: Vec<Rule>,
}

impl Role {
    /// Index of the first binding matching the principal, if any.
    pub fn matching_binding(&self, p: &Principal) -> Option<usize> {
        self.bindings.iter().position(|b| b.matches(p))
    }
}

// ---------------------------------------------------------------------------
// Decisions

/// The outcome of [`AccessPolicy::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub effect: Effect,
    /// Names of the roles whose bindings matched the principal, in policy
    /// order (shared by every decision for the same principal).
    pub roles: Arc<[String]>,
    /// The decisive rule id, or [`DEFAULT_RULE`] / [`PRIVATE_DEFAULT_RULE`].
    pub rule: String,
    /// Human-readable one-line reason, without a trailing period.
    pub reason: String,
}

impl Decision {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        self.effect == Effect::Allow
    }

    /// The client-facing refusal text:
    /// `modgate: <identity> may not read <what>: <reason> (rule <id>)`, the rule id left out
    /// when the reason already names it. `what` is what the caller refused: a module, or a
    /// module with its version and kind.
    ///
    /// Control characters in `identity_name` and `module` are escaped so
    /// the message stays one line.
    pub fn deny_message(&self, identity_name: &str, module: &str) -> String {
        // A reason that names its rule ("denied by rule \"x\" of role …") says it once.
        let rule = if self.reason.contains(&format!("{:?}", self.rule)) {
            String::new()
        } else {
            format!(" (rule {})", self.rule)
        };
        format!(
            "modgate: {} may not read {}: {}{rule}",
            escape_controls(identity_name),
            escape_controls(module),
            self.reason,
        )
    }
}

fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A role the principal holds, and the first binding that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMatch {
    /// The role's name.
    pub role: String,
    /// Index of the first matching binding within the role.
    pub binding: usize,
}

/// A rule that applies to the request, from a role the principal holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    /// The role holding the rule.
    pub role: String,
    /// The rule's id.
    pub rule: String,
    /// The rule's effect.
    pub effect: Effect,
}

/// Everything that went into a decision, for `modgate explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Roles the principal holds, in policy order.
    pub roles: Vec<RoleMatch>,
    /// Every applicable rule of those roles, in role then rule order.
    pub rules: Vec<RuleMatch>,
    /// The rules of those roles that were considered and do not apply to this request (other
    /// modules, kinds or versions), in role then rule order.
    pub skipped: Vec<RuleMatch>,
    /// The decision ([`AccessPolicy::decide`] returns the same one).
    pub decision: Decision,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.roles.is_empty() {
            writeln!(f, "roles: none")?;
        }
        for r in &self.roles {
            writeln!(f, "role {:?} (binding {})", r.role, r.binding)?;
        }
        if self.rules.is_empty() {
            writeln!(f, "rules: none apply")?;
        }
        for r in &self.rules {
            writeln!(f, "rule {:?} of role {:?}: {}", r.rule, r.role, r.effect)?;
        }
        let d = &self.decision;
        write!(f, "decision: {} (rule {}): {}", d.effect, d.rule, d.reason)
    }
}

// ---------------------------------------------------------------------------
// Policy

/// A validated set of roles plus the fallback effects.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    roles: Vec<Role>,
    default_public: Effect,
    default_private: Effect,
    /// Indexes over `roles`' bindings and rules, built once with the policy.
    compiled: Compiled,
    /// The roles each recent principal holds (a principal's roles depend on it alone).
    held: HeldCache,
    /// Whether any rule is limited to `commits` (most policies have none: then no request
    /// waits for a commit to be resolved).
    commit_rules: bool,
}

/// Whether any rule of `roles` is limited to `commits`.
fn has_commit_rules(roles: &[Role]) -> bool {
    roles
        .iter()
        .any(|role| role.rules.iter().any(|rule| rule.commits.is_some()))
}

/// The roles one principal holds, by index and by name.
#[derive(Debug)]
struct Held {
    roles: Vec<usize>,
    names: Arc<[String]>,
}

/// How many distinct principals' roles are remembered; the cache is emptied when it is full.
const HELD_CACHE_MAX: usize = 4096;

/// Principals' held roles, remembered so that a principal's repeated requests (every stream of
/// a connection, every request of a CI job) skip the membership tests. Keyed by the whole
/// principal, compared by equality: a hit is exactly the principal that was computed. A clone
/// of the policy starts empty.
#[derive(Debug, Default)]
struct HeldCache {
    map: RwLock<HashMap<Principal, Arc<Held>, foldhash::fast::RandomState>>,
}

impl Clone for HeldCache {
    fn clone(&self) -> HeldCache {
        HeldCache::default()
    }
}

impl HeldCache {
    fn get(&self, p: &Principal) -> Option<Arc<Held>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(p).cloned()
    }

    fn insert(&self, p: &Principal, held: Arc<Held>) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= HELD_CACHE_MAX {
            map.clear();
        }
        map.insert(p.clone(), held);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Policies are equal when they hold the same roles, in the same order, and the same defaults:
/// the indexes are built from the roles, and the principals' held roles are a cache.
impl PartialEq for AccessPolicy {
    fn eq(&self, other: &AccessPolicy) -> bool {
        let AccessPolicy {
            roles,
            default_public,
            default_private,
            compiled: _,
            held: _,
            // Derived from `roles`.
            commit_rules: _,
        } = self;
        *roles == other.roles
            && *default_public == other.default_public
            && *default_private == other.default_private
    }
}

impl Eq for AccessPolicy {}

impl AccessPolicy {
    /// Builds a policy. Requests no rule decides are denied on private
    /// routes and get `default_public` elsewhere.
    ///
    /// Rejects empty or duplicate role names, bindings without matchers or
    /// combining `anonymous` with matchers anonymous principals lack, empty,
    /// reserved (`default`, `private-default`) or duplicate rule ids (ids are
    /// unique across the whole policy), rules without patterns and rules
    /// with an empty kinds list.
    pub fn new(roles: Vec<Role>, default_public: Effect) -> Result<AccessPolicy, RbacError> {
        let mut role_names: HashSet<&str> = HashSet::with_capacity(roles.len());
        let mut rule_ids: HashMap<&str, &str> = HashMap::new();
        for (index, role) in roles.iter().enumerate() {
            if role.name.is_empty() {
                return Err(RbacError::EmptyRoleName { index });
            }
            if !role_names.insert(&role.name) {
                return Err(RbacError::DuplicateRoleName {
                    name: role.name.clone(),
                });
            }
            validate_bindings(role)?;
            validate_rules(role, &mut rule_ids)?;
        }
        let compiled = Compiled::new(&roles);
        let commit_rules = has_commit_rules(&roles);
        Ok(AccessPolicy {
            roles,
            default_public,
            default_private: Effect::Deny,
            compiled,
            held: HeldCache::default(),
            commit_rules,
        })
    }

    /// The same policy for a server that folds the case of names (a Git host): every rule's
    /// patterns compare letters without regard to case ([`Pattern::case_folded`]); ask it
    /// about a lower-cased module path. A gateway consults it for denials only, so a rule
    /// written `Team/Secret` also denies `team/secret` there; a regex too large to fold keeps
    /// its case (it then denies what it denied before).
    pub fn case_folded(&self) -> AccessPolicy {
        let roles: Vec<Role> = self
            .roles
            .iter()
            .map(|role| Role {
                rules: role
                    .rules
                    .iter()
                    .map(|rule| Rule {
                        patterns: rule
                            .patterns
                            .iter()
                            .map(|p| p.case_folded().unwrap_or_else(|| p.clone()))
                            .collect(),
                        ..rule.clone()
                    })
                    .collect(),
                ..role.clone()
            })
            .collect();
        let compiled = Compiled::new(&roles);
        AccessPolicy {
            roles,
            default_public: self.default_public,
            default_private: self.default_private,
            compiled,
            held: HeldCache::default(),
            commit_rules: self.commit_rules,
        }
    }

    /// The policy for a configuration without an access section: no roles,
    /// and every request allowed (private routes included).
    pub fn default_allow() -> AccessPolicy {
        AccessPolicy {
            roles: Vec::new(),
            default_public: Effect::Allow,
            default_private: Effect::Allow,
            compiled: Compiled::default(),
            held: HeldCache::default(),
            commit_rules: false,
        }
    }

    /// The roles, in policy order.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// The effect when no rule decides a request on a public route.
    pub fn default_public(&self) -> Effect {
        self.default_public
    }

    /// The effect when no rule decides a request on a private route (deny,
    /// except for [`AccessPolicy::default_allow`]).
    pub fn default_private(&self) -> Effect {
        self.default_private
    }

    /// The roles whose bindings match the principal, in policy order.
    pub fn roles_for(&self, p: &Principal) -> Vec<&Role> {
        self.compiled
            .held(&self.roles, p)
            .into_iter()
            .filter_map(|(role, _)| self.roles.get(role))
            .collect()
    }

    /// Whether the decision for `req` could depend on the commit its version points at: a
    /// role `p` holds has a rule limited to `commits` that would otherwise apply (pattern and
    /// kind), and the version is a tag (release or prerelease, not a pseudo-version) whose
    /// commit is not known yet. The gateway then resolves the commit before deciding.
    pub fn depends_on_commit(&self, p: &Principal, req: &AccessRequest<'_>) -> bool {
        let Some(version) = req.version.filter(|_| self.commit_rules) else {
            return false;
        };
        if req.commit.is_some()
            || is_pseudo_version(version)
            || canonical_version(version).as_deref() != Some(version)
        {
            return false;
        }
        let held = self.held(p);
        held.roles
            .iter()
            .filter_map(|&r| self.roles.get(r))
            .any(|role| {
                role.rules.iter().any(|rule| {
                    rule.commits.is_some()
                        && rule.patterns.iter().any(|pat| pat.matches(req.module))
                        && rule.kinds.as_ref().is_none_or(|k| k.contains(&req.kind))
                })
            })
    }

    /// Decides whether the principal may make the request.
    ///
    /// Goes through the policy's indexes: only the bindings that can match
    /// the principal and the rules that can apply to the module are tried.
    /// The answer is the one [`AccessPolicy::explain`] reports, which tries
    /// every binding and rule of the held roles in order.
    pub fn decide(&self, p: &Principal, req: &AccessRequest<'_>) -> Decision {
        let held = self.held(p);
        match self.compiled.decisive(&self.roles, &held.roles, req) {
            Decisive::Rule(role, rule) => by_rule(held.names.clone(), role, rule),
            Decisive::None => self.fallback(held.names.clone(), req),
        }
    }

    /// The roles `p` holds: remembered per principal, computed through the binding index the
    /// first time.
    fn held(&self, p: &Principal) -> Arc<Held> {
        if let Some(held) = self.held.get(p) {
            return held;
        }
        let roles: Vec<usize> = self
            .compiled
            .held(&self.roles, p)
            .into_iter()
            .map(|(role, _)| role)
            .collect();
        let names: Vec<String> = roles
            .iter()
            .filter_map(|&r| self.roles.get(r))
            .map(|role| role.name.clone())
            .collect();
        let held = Arc::new(Held {
            roles,
            names: names.into(),
        });
        if !self.roles.is_empty() {
            self.held.insert(p, held.clone());
        }
        held
    }

    /// [`AccessPolicy::decide`] by trying every binding and rule in order:
    /// the reference the compiled decision is tested against.
    #[cfg(test)]
    fn decide_linear(&self, p: &Principal, req: &AccessRequest<'_>) -> Decision {
        self.decision(&self.held_roles(p), req)
    }

    /// Decides like [`AccessPolicy::decide`], also reporting the roles held
    /// (with the matching binding) and every applicable rule.
    pub fn explain(&self, p: &Principal, req: &AccessRequest<'_>) -> Explanation {
        let held = self.held_roles(p);
        let roles = held
            .iter()
            .map(|&(role, binding)| RoleMatch {
                role: role.name.clone(),
                binding,
            })
            .collect();
        let rules = applicable_rules(&held, req)
            .map(|(role, rule)| RuleMatch {
                role: role.name.clone(),
                rule: rule.id.clone(),
                effect: rule.effect,
            })
            .collect();
        let skipped = held
            .iter()
            .flat_map(|&(role, _)| {
                role.rules
                    .iter()
                    .filter(|rule| !rule.applies(req))
                    .map(move |rule| RuleMatch {
                        role: role.name.clone(),
                        rule: rule.id.clone(),
                        effect: rule.effect,
                    })
            })
            .collect();
        Explanation {
            roles,
            rules,
            skipped,
            decision: self.decision(&held, req),
        }
    }

    /// Roles the principal holds, each with its first matching binding.
    fn held_roles(&self, p: &Principal) -> Vec<(&Role, usize)> {
        self.roles
            .iter()
            .filter_map(|role| role.matching_binding(p).map(|b| (role, b)))
            .collect()
    }

    fn decision(&self, held: &[(&Role, usize)], req: &AccessRequest<'_>) -> Decision {
        let names: Arc<[String]> = held.iter().map(|(role, _)| role.name.clone()).collect();
        let mut first_allow = None;
        for (role, rule) in applicable_rules(held, req) {
            match rule.effect {
                Effect::Deny => return by_rule(names, role, rule),
                Effect::Allow => {
                    first_allow.get_or_insert((role, rule));
                }
            }
        }
        match first_allow {
            Some((role, rule)) => by_rule(names, role, rule),
            None => self.fallback(names, req),
        }
    }

    fn fallback(&self, roles: Arc<[String]>, req: &AccessRequest<'_>) -> Decision {
        if req.private_route {
            let effect = self.default_private;
            let mut reason = format!("no role grants access to private route {:?}", req.route);
            if effect == Effect::Allow {
                reason.push_str("; private default is allow");
            }
            return Decision {
                effect,
                roles,
                rule: PRIVATE_DEFAULT_RULE.to_owned(),
                reason,
            };
        }
        Decision {
            effect: self.default_public,
            roles,
            rule: DEFAULT_RULE.to_owned(),
            reason: format!("no role grants access; default is {}", self.default_public),
        }
    }
}

/// The applicable rules of the held roles, in role then rule order.
fn applicable_rules<'p, 'r>(
    held: &'r [(&'p Role, usize)],
    req: &'r AccessRequest<'_>,
) -> impl Iterator<Item = (&'p Role, &'p Rule)> + 'r {
    held.iter().flat_map(move |&(role, _)| {
        role.rules
            .iter()
            .filter(move |rule| rule.applies(req))
            .map(move |rule| (role, rule))
    })
}

fn by_rule(roles: Arc<[String]>, role: &Role, rule: &Rule) -> Decision {
    let verb = match rule.effect {
        Effect::Allow => "allowed",
        Effect::Deny => "denied",
    };
    Decision {
        effect: rule.effect,
        roles,
        rule: rule.id.clone(),
        reason: format!("{verb} by rule {:?} of role {:?}", rule.id, role.name),
    }
}

fn validate_bindings(role: &Role) -> Result<(), RbacError> {
    for (index, binding) in role.bindings.iter().enumerate() {
        let err = if binding.matchers.is_empty() {
            RbacError::EmptyBinding {
                role: role.name.clone(),
                index,
            }
        } else if binding.is_contradictory() {
            RbacError::ContradictoryBinding {
                role: role.name.clone(),
                index,
            }
        } else {
            continue;
        };
        return Err(err);
    }
    Ok(())
}

/// Checks the role's rules; `seen` maps rule ids to their role's name.
fn validate_rules<'p>(
    role: &'p Role,
    seen: &mut HashMap<&'p str, &'p str>,
) -> Result<(), RbacError> {
    let role_name = || role.name.clone();
    for (index, rule) in role.rules.iter().enumerate() {
        let id = rule.id.as_str();
        if id.is_empty() {
            return Err(RbacError::EmptyRuleId {
                role: role_name(),
                index,
            });
        }
        if id == DEFAULT_RULE || id == PRIVATE_DEFAULT_RULE {
            return Err(RbacError::ReservedRuleId {
                role: role_name(),
                id: id.to_owned(),
            });
        }
        if let Some(first_role) = seen.insert(id, &role.name) {
            return Err(RbacError::DuplicateRuleId {
                id: id.to_owned(),
                first_role: first_role.to_owned(),
                second_role: role_name(),
            });
        }
        if rule.patterns.is_empty() {
            return Err(RbacError::RuleWithoutPatterns {
                role: role_name(),
                id: id.to_owned(),
            });
        }
        if rule.kinds.as_ref().is_some_and(Vec::is_empty) {
            return Err(RbacError::EmptyKinds {
                role: role_name(),
                id: id.to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
