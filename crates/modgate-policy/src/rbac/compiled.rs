//! The compiled form of an [`AccessPolicy`](super::AccessPolicy): which roles a principal
//! holds, and which rules can apply to a module, found through indexes instead of by trying
//! every binding and every rule.
//!
//! * Bindings are filed under one of their matchers: an exact field value (a hash lookup by
//!   the principal's values of that field) or, failing that, a glob value's leading literal
//!   `/`-separated elements (a trie walk over the principal's values); bindings with neither
//!   (`any`, `authenticated`, `anonymous`, unanchored globs) are always tried. Only the
//!   bindings found that way are checked, in role then binding order, so each role reports
//!   the first binding that matches, as the linear scan does.
//! * Rules are filed in a [`PathIndex`] under their position in role-then-rule order; a query
//!   returns the first applicable deny and the first applicable allow among the held roles,
//!   which is all the decision needs (deny overrides allow; then the first allow).
//!
//! `decide_linear` in `super` (test builds) is the reference these are tested against.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::fmt;

use modgate_protocol::version::canonical_version;

use super::{normalize_hex, Effect, Matcher, Principal, Role, Rule, ValueMatch};
use crate::index::{ElementTrie, FastHash, PathIndex, Slot};

/// The identity fields a binding can be filed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Field {
    Cn,
    O,
    Ou,
    Dn,
    SanDns,
    SanEmail,
    SanUri,
    Spiffe,
    Fingerprint,
    User,
    Token,
    Group,
}

const FIELDS: usize = 12;

impl Field {
    fn of(m: &Matcher) -> Option<(Field, &ValueMatch)> {
        Some(match m {
            Matcher::Anonymous | Matcher::Authenticated | Matcher::Any => return None,
            Matcher::Cn(v) => (Field::Cn, v),
            Matcher::O(v) => (Field::O, v),
            Matcher::Ou(v) => (Field::Ou, v),
            Matcher::Dn(v) => (Field::Dn, v),
            Matcher::SanDns(v) => (Field::SanDns, v),
            Matcher::SanEmail(v) => (Field::SanEmail, v),
            Matcher::SanUri(v) => (Field::SanUri, v),
            Matcher::Spiffe(v) => (Field::Spiffe, v),
            Matcher::Fingerprint(v) => (Field::Fingerprint, v),
            Matcher::User(v) => (Field::User, v),
            Matcher::Token(v) => (Field::Token, v),
            Matcher::Group(v) => (Field::Group, v),
        })
    }
}

/// Calls `visit` with every non-empty identity value field matchers can see: none for an
/// anonymous principal, and the fingerprint normalised (only when `fingerprint` is set, as
/// it costs an allocation).
fn for_each_value(p: &Principal, fingerprint: bool, mut visit: impl FnMut(Field, &str)) {
    if p.is_anonymous() {
        return;
    }
    let mut one = |field, value: &str| {
        if !value.is_empty() {
            visit(field, value);
        }
    };
    p.user.iter().for_each(|v| one(Field::User, v));
    p.token.iter().for_each(|v| one(Field::Token, v));
    p.groups.iter().for_each(|v| one(Field::Group, v));
    let Some(c) = p.cert_fields() else {
        return;
    };
    c.cn.iter().for_each(|v| one(Field::Cn, v));
    c.o.iter().for_each(|v| one(Field::O, v));
    c.ou.iter().for_each(|v| one(Field::Ou, v));
    one(Field::Dn, &c.subject_dn);
    c.san_dns.iter().for_each(|v| one(Field::SanDns, v));
    c.san_email.iter().for_each(|v| one(Field::SanEmail, v));
    c.san_uri.iter().for_each(|v| one(Field::SanUri, v));
    c.spiffe.iter().for_each(|v| one(Field::Spiffe, v));
    if fingerprint {
        one(Field::Fingerprint, &normalize_hex(&c.fingerprint_sha256));
    }
}

/// One binding of one role; ids are positions in role then binding order.
#[derive(Debug, Clone, Copy)]
struct BindingRef {
    role: usize,
    binding: usize,
    /// The matcher the binding is filed under by exact value: found by that value, it needs
    /// no re-checking.
    exact: Option<usize>,
}

/// Which bindings a principal can satisfy.
#[derive(Clone, Default)]
struct Members {
    bindings: Vec<BindingRef>,
    /// Per field: exact value → binding ids.
    exact: Vec<HashMap<Box<str>, Vec<usize>, FastHash>>,
    /// Per field: glob values by their leading literal elements → binding ids.
    globs: Vec<ElementTrie<Vec<usize>>>,
    /// Bindings filed under nothing: always tried.
    floating: Vec<usize>,
    /// Whether any binding is filed under an exact fingerprint.
    fingerprints: bool,
}

impl Members {
    fn new(roles: &[Role]) -> Members {
        let mut m = Members {
            exact: vec![HashMap::default(); FIELDS],
            globs: vec![ElementTrie::default(); FIELDS],
            ..Members::default()
        };
        // How many bindings each exact value would be filed under: a binding is filed under
        // its least shared one (`ou=team-7` rather than `o=Example Corp`).
        let mut shared: HashMap<(Field, String), usize> = HashMap::new();
        for binding in roles.iter().flat_map(|r| &r.bindings) {
            for (field, v) in binding.matchers.iter().filter_map(Field::of) {
                if !v.is_glob() {
                    *shared.entry((field, exact_key(field, v))).or_default() += 1;
                }
            }
        }
        for (role_index, role) in roles.iter().enumerate() {
            for (binding_index, binding) in role.bindings.iter().enumerate() {
                let id = m.bindings.len();
                let exact = binding
                    .matchers
                    .iter()
                    .enumerate()
                    .filter_map(|(i, x)| Field::of(x).map(|(f, v)| (i, f, v)))
                    .filter(|(_, _, v)| !v.is_glob())
                    .min_by_key(|&(_, f, v)| shared.get(&(f, exact_key(f, v))).copied())
                    .map(|(i, _, _)| i);
                m.bindings.push(BindingRef {
                    role: role_index,
                    binding: binding_index,
                    exact,
                });
                if let Some((field, v)) = exact.and_then(|i| Field::of(&binding.matchers[i])) {
                    m.fingerprints |= field == Field::Fingerprint;
                    m.exact[field as usize]
                        .entry(exact_key(field, v).into_boxed_str())
                        .or_default()
                        .push(id);
                    continue;
                }
                // The glob value with the longest literal anchor, if any (fingerprints are
                // matched in normalised form, so their globs are not filed).
                let anchored = binding
                    .matchers
                    .iter()
                    .filter_map(Field::of)
                    .filter(|(f, v)| *f != Field::Fingerprint && v.is_glob())
                    .map(|(f, v)| (f, glob_anchor(v.as_str())))
                    .max_by_key(|(_, anchor)| anchor.len());
                match anchored {
                    Some((field, anchor)) if !anchor.is_empty() => {
                        let trie = &mut m.globs[field as usize];
                        let node = trie.insert(anchor);
                        if let Some(ids) = trie.value_mut(node) {
                            ids.push(id);
                        }
                    }
                    _ => m.floating.push(id),
                }
            }
        }
        m
    }

    /// The roles `p` holds, in policy order, each with its first matching binding.
    fn held(&self, roles: &[Role], p: &Principal) -> Vec<(usize, usize)> {
        // (binding id, whether its exact matcher is known to hold)
        let mut hits: Vec<(usize, bool)> = self.floating.iter().map(|&id| (id, false)).collect();
        for_each_value(p, self.fingerprints, |field, value| {
            if let Some(ids) = self.exact[field as usize].get(value) {
                hits.extend(ids.iter().map(|&id| (id, true)));
            }
            let globs = &self.globs[field as usize];
            if !globs.is_empty() {
                globs.walk(value, |ids, _| {
                    hits.extend(ids.iter().map(|&id| (id, false)));
                });
            }
        });
        hits.sort_unstable();
        hits.dedup_by_key(|h| h.0);
        let mut held: Vec<(usize, usize)> = Vec::new();
        for (id, exact_holds) in hits {
            let Some(b) = self.bindings.get(id) else {
                continue;
            };
            if held.last().is_some_and(|&(role, _)| role == b.role) {
                continue;
            }
            let Some(binding) = roles.get(b.role).and_then(|r| r.bindings.get(b.binding)) else {
                continue;
            };
            let known = if exact_holds { b.exact } else { None };
            let matches = !binding.matchers.is_empty()
                && binding
                    .matchers
                    .iter()
                    .enumerate()
                    .all(|(i, m)| Some(i) == known || m.matches(p));
            if matches {
                held.push((b.role, b.binding));
            }
        }
        held
    }
}

/// The principal's value an exact matcher value is looked up by: itself, or for a
/// fingerprint its hex digits in lowercase.
fn exact_key(field: Field, v: &ValueMatch) -> String {
    if field == Field::Fingerprint {
        normalize_hex(v.as_str())
    } else {
        v.as_str().to_owned()
    }
}

/// The leading `/`-separated elements of a value glob before the first one holding any of
/// `*?[\`: every value the glob matches starts with them, element for element.
fn glob_anchor(glob: &str) -> Vec<&str> {
    glob.split('/')
        .take_while(|part| !part.contains(['*', '?', '[', '\\']))
        .collect()
}

/// A rule's place in the policy.
#[derive(Debug, Clone, Copy)]
struct RuleRef {
    role: usize,
    rule: usize,
}

/// The indexes of one policy.
#[derive(Clone, Default)]
pub(super) struct Compiled {
    members: Members,
    /// Rules, in role then rule order: slot `s` is `rules[s]`.
    rules: Vec<RuleRef>,
    index: PathIndex,
}

impl fmt::Debug for Compiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compiled")
            .field("bindings", &self.members.bindings.len())
            .field("floating_bindings", &self.members.floating.len())
            .field("rules", &self.rules.len())
            .field("index", &self.index)
            .finish()
    }
}

/// What decides a request: the first applicable deny, else the first applicable allow.
pub(super) enum Decisive<'p> {
    Rule(&'p Role, &'p Rule),
    None,
}

impl Compiled {
    pub(super) fn new(roles: &[Role]) -> Compiled {
        let mut rules = Vec::new();
        let mut patterns = Vec::new();
        for (role_index, role) in roles.iter().enumerate() {
            for (rule_index, rule) in role.rules.iter().enumerate() {
                let slot = Slot::try_from(rules.len()).unwrap_or(Slot::MAX);
                rules.push(RuleRef {
                    role: role_index,
                    rule: rule_index,
                });
                patterns.extend(rule.patterns.iter().map(|p| (slot, p)));
            }
        }
        Compiled {
            members: Members::new(roles),
            rules,
            index: PathIndex::new(patterns),
        }
    }

    /// The roles `p` holds (indices into `roles`, in policy order), each with its first
    /// matching binding.
    pub(super) fn held(&self, roles: &[Role], p: &Principal) -> Vec<(usize, usize)> {
        self.members.held(roles, p)
    }

    /// The decisive rule among the rules of `held` (role indices in policy order) for the
    /// request.
    pub(super) fn decisive<'p>(
        &self,
        roles: &'p [Role],
        held: &[usize],
        req: &super::AccessRequest<'_>,
    ) -> Decisive<'p> {
        let canonical = OnceCell::new();
        let rule_at = |slot: Slot| {
            let r = self.rules.get(usize::try_from(slot).ok()?)?;
            let role = roles.get(r.role)?;
            Some((role, role.rules.get(r.rule)?, r.role))
        };
        let classify = |slot: Slot| {
            let (_, rule, role_index) = rule_at(slot)?;
            held.binary_search(&role_index).ok()?;
            if !rule.kinds.as_ref().is_none_or(|k| k.contains(&req.kind)) {
                return None;
            }
            if let Some(range) = &rule.versions {
                let v = req.version?;
                let is_canonical =
                    *canonical.get_or_init(|| canonical_version(v).as_deref() == Some(v));
                if !(is_canonical && range.contains_canonical(v)) {
                    return None;
                }
            }
            if let Some(commits) = &rule.commits {
                if !commits.names_request(req.version, req.commit) {
                    return None;
                }
            }
            Some(match rule.effect {
                Effect::Deny => 0,
                Effect::Allow => 1,
            })
        };
        let [deny, allow] = self.index.query::<2>(req.module, classify);
        match deny.or(allow).and_then(rule_at) {
            Some((role, rule, _)) => Decisive::Rule(role, rule),
            None => Decisive::None,
        }
    }
}
