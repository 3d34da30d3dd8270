//! Compiled indexes over module-path patterns, so that finding the first matching route (or
//! the first applicable RBAC rule) does not try every pattern in turn.
//!
//! Every pattern is filed under *slots* (a route's index, or a rule's position in role-then-
//! rule order) and answers are the lowest matching slot, exactly as a linear scan in slot
//! order would find them:
//!
//! * an element prefix is a node of a trie over path elements; every slot filed at a node the
//!   module's leading elements reach matches, without further checks;
//! * a glob list is split into its elements; each element is filed at the node of its leading
//!   literal path elements (those before the first element holding any of `*?[\`), and, when
//!   the next element is `*` followed by a literal, also under that literal in a reversed-byte
//!   trie of element suffixes. Only the globs a module reaches that way are then run through
//!   the same `MatchPrefixPatterns` code the linear scan uses;
//! * a regex is filed at the node of the complete path elements of the literal text it
//!   starts with (`corp\.example\.com/team-1/.*` under `corp.example.com`, `team-1`), when
//!   that can be told for certain from its text, else at the root; the unanchored ones are
//!   tried through one [`RegexSet`] pass when there are several.
//!
//! The leading literal elements of a glob are a necessary condition for a match: `path.Match`
//! compares literal bytes and `/` one for one, and its `*` and `?` never cross `/`, so up to
//! the first element with a metacharacter the glob and the module agree element by element
//! (a `[` class or a `\` escape could match `/`, which is why the anchoring stops at them).
//! The index only ever narrows which patterns are tried; the final word is always the
//! pattern's own matcher, so the results are those of the linear scan (property tests in
//! `route.rs` and `rbac/tests.rs` compare the two).

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use regex::{Regex, RegexSet, RegexSetBuilder, SetMatches};

use crate::glob::{glob_elements, match_prefix_pattern};
use crate::pattern::{Pattern, REGEX_SIZE_LIMIT};

/// Fewer regexes than this are tried one by one instead of through a [`RegexSet`].
const REGEX_SET_MIN: usize = 3;

/// A pattern's position in the linear order; lower slots win.
pub(crate) type Slot = u32;

/// The compiled form of a set of patterns filed under slots.
#[derive(Clone, Default)]
pub(crate) struct PathIndex {
    trie: ElementTrie<Node>,
    /// Checks that must run before a slot filed under them counts as a match.
    checks: Vec<Check>,
    /// All regexes of `checks` as one set, when there are enough of them.
    regex_set: Option<RegexSet>,
}

impl fmt::Debug for PathIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PathIndex")
            .field("nodes", &self.trie.nodes.len())
            .field("checks", &self.checks.len())
            .field("regex_set", &self.regex_set.is_some())
            .finish()
    }
}

/// What a trie node holds for the modules that reach it.
#[derive(Clone)]
struct Node {
    /// Slots of element prefixes ending here: they match whatever follows. Sorted, unique.
    definite: Vec<Slot>,
    /// `(slot, check)` pairs to verify, sorted by slot.
    candidates: Vec<(Slot, u32)>,
    /// Globs whose next element is `*literal`: filed under the literal, reversed.
    suffixes: Option<Box<SuffixTrie>>,
    /// The lowest slot among `candidates` and `suffixes` (`Slot::MAX` if none).
    min_candidate: Slot,
}

impl Default for Node {
    fn default() -> Self {
        Node {
            definite: Vec::new(),
            candidates: Vec::new(),
            suffixes: None,
            min_candidate: Slot::MAX,
        }
    }
}

#[derive(Clone)]
enum Check {
    /// One element of a glob list, matched as `MatchPrefixPatterns` matches it.
    Glob(Box<str>),
    /// An anchored regex; `set` is its position in the index's [`RegexSet`], if it is in it.
    Regex { re: Regex, set: Option<usize> },
}

impl PathIndex {
    /// Indexes `(slot, pattern)` pairs; slots need not be unique nor given in order.
    pub(crate) fn new<'a>(patterns: impl IntoIterator<Item = (Slot, &'a Pattern)>) -> PathIndex {
        let mut index = PathIndex::default();
        let mut regexes = Vec::new();
        for (slot, pattern) in patterns {
            match pattern {
                Pattern::Prefix(p) => {
                    let p = p.strip_suffix('/').unwrap_or(p);
                    let node = if p.is_empty() {
                        0
                    } else {
                        index.trie.insert(p.split('/'))
                    };
                    index.trie.nodes[node].value.definite.push(slot);
                }
                Pattern::Glob(g) => {
                    for element in glob_elements(g) {
                        let check = index.push_check(Check::Glob(element.into()));
                        let anchor = GlobAnchor::of(element);
                        let node = index.trie.insert(anchor.literal.iter().copied());
                        let value = &mut index.trie.nodes[node].value;
                        match anchor.suffix {
                            Some(suffix) => value
                                .suffixes
                                .get_or_insert_with(Box::default)
                                .insert(suffix, (slot, check)),
                            None => value.candidates.push((slot, check)),
                        }
                    }
                }
                Pattern::Regex(re) => {
                    let anchor = regex_anchor(re.as_str());
                    // Only the unanchored regexes, tried on every lookup, go into the set.
                    let set = anchor.is_empty().then(|| {
                        regexes.push(re.as_str().to_owned());
                        regexes.len() - 1
                    });
                    let check = index.push_check(Check::Regex {
                        re: re.clone(),
                        set,
                    });
                    let node = index.trie.insert(anchor.iter().map(String::as_str));
                    index.trie.nodes[node].value.candidates.push((slot, check));
                }
            }
        }
        for node in &mut index.trie.nodes {
            let v = &mut node.value;
            v.definite.sort_unstable();
            v.definite.dedup();
            v.candidates.sort_unstable();
            v.min_candidate = v.candidates.first().map_or(Slot::MAX, |c| c.0);
            if let Some(s) = v.suffixes.as_mut() {
                s.finish();
                let lowest = s.nodes.iter().filter_map(|n| n.candidates.first());
                v.min_candidate = lowest.fold(v.min_candidate, |m, c| m.min(c.0));
            }
        }
        if regexes.len() >= REGEX_SET_MIN {
            // The set holds the very expressions already compiled one by one, so it answers
            // like them; if it cannot be built (size limits), they are tried one by one.
            index.regex_set = RegexSetBuilder::new(&regexes)
                .size_limit(REGEX_SIZE_LIMIT.saturating_mul(regexes.len()))
                .dfa_size_limit(REGEX_SIZE_LIMIT.saturating_mul(4))
                .build()
                .ok();
        }
        index
    }

    fn push_check(&mut self, check: Check) -> u32 {
        let id = u32::try_from(self.checks.len()).unwrap_or(u32::MAX);
        self.checks.push(check);
        id
    }

    /// For each class `k < N`, the lowest slot whose pattern matches `module` among the slots
    /// `classify` puts in class `k` (slots it maps to `None` are not wanted), or `None`.
    pub(crate) fn query<const N: usize>(
        &self,
        module: &str,
        classify: impl Fn(Slot) -> Option<usize>,
    ) -> [Option<Slot>; N] {
        let mut best = [Slot::MAX; N];
        // The lowest slot left to check on the way.
        let mut floor = Slot::MAX;
        // Element prefixes first: they need no checking and bound what is left to try.
        self.trie.walk(module, |node, _| {
            floor = floor.min(node.min_candidate);
            for &slot in &node.definite {
                if best.iter().all(|&b| slot >= b) {
                    break;
                }
                if let Some(k) = classify(slot) {
                    best[k] = best[k].min(slot);
                }
            }
        });
        if best.iter().all(|&b| b <= floor) {
            return best.map(|b| (b != Slot::MAX).then_some(b));
        }
        let mut regex_matches: Option<SetMatches> = None;
        let mut try_all = |candidates: &[(Slot, u32)], best: &mut [Slot; N]| {
            for &(slot, check) in candidates {
                if best.iter().all(|&b| slot >= b) {
                    break;
                }
                let Some(k) = classify(slot) else {
                    continue;
                };
                if slot < best[k] && self.check(check, module, &mut regex_matches) {
                    best[k] = slot;
                }
            }
        };
        self.trie.walk(module, |node, next| {
            try_all(&node.candidates, &mut best);
            if let (Some(suffixes), Some(element)) = (&node.suffixes, next) {
                suffixes.walk(element, |candidates| try_all(candidates, &mut best));
            }
        });
        best.map(|b| (b != Slot::MAX).then_some(b))
    }

    fn check(&self, check: u32, module: &str, regex_matches: &mut Option<SetMatches>) -> bool {
        match self.checks.get(check as usize) {
            Some(Check::Glob(glob)) => match_prefix_pattern(glob, module),
            Some(Check::Regex { re, set }) => match (&self.regex_set, set) {
                (Some(rs), Some(i)) => regex_matches
                    .get_or_insert_with(|| rs.matches(module))
                    .matched(*i),
                _ => re.is_match(module),
            },
            None => false,
        }
    }
}

/// Where a glob element is filed: its leading literal path elements and, when the element
/// after them is `*` followed by a literal (`*.corp.example.com`), that literal.
struct GlobAnchor<'g> {
    literal: Vec<&'g str>,
    suffix: Option<&'g str>,
}

impl<'g> GlobAnchor<'g> {
    fn of(glob: &'g str) -> GlobAnchor<'g> {
        let is_meta = |part: &str| part.contains(['*', '?', '[', '\\']);
        let mut literal = Vec::new();
        let mut suffix = None;
        for part in glob.split('/') {
            if !is_meta(part) {
                literal.push(part);
                continue;
            }
            let rest = part.trim_start_matches('*');
            if rest.len() < part.len() && !rest.is_empty() && !is_meta(rest) {
                suffix = Some(rest);
            }
            break;
        }
        GlobAnchor { literal, suffix }
    }
}

/// The path elements every module matched by the regex `anchored` (a regex's text as
/// [`Pattern::regex`] compiles it: `^(?:r)$`) starts with: the complete elements of the
/// literal text `r` begins with. Empty whenever that cannot be told for certain: the text is
/// not wrapped that way, `r` has a top-level `|`, unbalanced groups, or a `#` (a comment in
/// `(?x)` mode could hide structure), or begins with anything but plain characters and
/// escaped punctuation (a group, a class, a flag such as `(?i)`, `.`, a Unicode character).
///
/// Flags given to a `RegexBuilder` rather than written in the text (case-insensitivity) are
/// invisible here; [`Pattern::regex`] never sets any.
fn regex_anchor(anchored: &str) -> Vec<String> {
    let Some(r) = anchored
        .strip_prefix("^(?:")
        .and_then(|s| s.strip_suffix(")$"))
    else {
        return Vec::new();
    };
    if !is_top_level_concatenation(r) {
        return Vec::new();
    }
    let literal = literal_prefix(r);
    // Every element but the last (which may continue past the literal) is complete.
    let mut elements: Vec<String> = literal.split('/').map(str::to_owned).collect();
    elements.pop();
    elements
}

/// Whether `r` is a concatenation at its top level: parentheses balance, no `|` outside a
/// group or class, no `#`.
fn is_top_level_concatenation(r: &str) -> bool {
    let b = r.as_bytes();
    let (mut depth, mut class, mut i) = (0usize, 0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'#' => return false,
            b'\\' => i += 1,
            b'[' => {
                class += 1;
                // A `]` right after `[` or `[^` is a literal.
                if b.get(i + 1) == Some(&b'^') {
                    i += 1;
                }
                if b.get(i + 1) == Some(&b']') {
                    i += 1;
                }
            }
            b']' if class > 0 => class -= 1,
            _ if class > 0 => {}
            b'(' => depth += 1,
            b')' => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            b'|' if depth == 0 => return false,
            _ => {}
        }
        i += 1;
    }
    depth == 0 && class == 0
}

/// The literal text `r` starts with: plain ASCII letters, digits and `/-_~@:,=%!`, and
/// escaped punctuation, up to the first anything else; a literal followed by a repetition
/// operator is left out.
fn literal_prefix(r: &str) -> String {
    let b = r.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let (c, width) = match b[i] {
            c if c.is_ascii_alphanumeric() || b"/-_~@:,=%!".contains(&c) => (c, 1),
            b'\\' => match b.get(i + 1) {
                Some(&c) if b".-/+*?()[]{}|^$\\".contains(&c) => (c, 2),
                _ => break,
            },
            _ => break,
        };
        if matches!(b.get(i + width), Some(b'*' | b'+' | b'?' | b'{')) {
            break;
        }
        out.push(char::from(c));
        i += width;
    }
    out
}

/// A trie over `/`-separated path elements; node 0 is the root (the empty path).
#[derive(Clone)]
pub(crate) struct ElementTrie<V> {
    nodes: Vec<TrieNode<V>>,
}

#[derive(Clone)]
struct TrieNode<V> {
    children: HashMap<Box<str>, usize, FastHash>,
    value: V,
}

impl<V: Default> Default for ElementTrie<V> {
    fn default() -> Self {
        ElementTrie {
            nodes: vec![TrieNode {
                children: HashMap::default(),
                value: V::default(),
            }],
        }
    }
}

impl<V: Default> ElementTrie<V> {
    /// The node for the path of `elements` (created as needed).
    pub(crate) fn insert<'e>(&mut self, elements: impl IntoIterator<Item = &'e str>) -> usize {
        let mut node = 0;
        for element in elements {
            node = match self.nodes[node].children.get(element) {
                Some(&child) => child,
                None => {
                    let child = self.nodes.len();
                    self.nodes.push(TrieNode {
                        children: HashMap::default(),
                        value: V::default(),
                    });
                    self.nodes[node].children.insert(element.into(), child);
                    child
                }
            };
        }
        node
    }

    /// Whether nothing was inserted below the root.
    pub(crate) fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    /// The value at `node` (from [`ElementTrie::insert`]).
    pub(crate) fn value_mut(&mut self, node: usize) -> Option<&mut V> {
        self.nodes.get_mut(node).map(|n| &mut n.value)
    }

    /// Visits the root and every node along `path`'s leading elements, each with the element
    /// that follows it in `path` (if any).
    pub(crate) fn walk<'p>(&self, path: &'p str, mut visit: impl FnMut(&V, Option<&'p str>)) {
        let mut node = &self.nodes[0];
        let mut elements = path.split('/');
        loop {
            let next = elements.next();
            visit(&node.value, next);
            match next.and_then(|e| node.children.get(e)) {
                Some(&child) => node = &self.nodes[child],
                None => return,
            }
        }
    }
}

/// Glob candidates filed under the literal that ends a path element, as a trie over the
/// literal's bytes from last to first.
#[derive(Clone, Default)]
struct SuffixTrie {
    nodes: Vec<SuffixNode>,
}

#[derive(Clone, Default)]
struct SuffixNode {
    next: Vec<(u8, usize)>,
    candidates: Vec<(Slot, u32)>,
}

impl SuffixTrie {
    fn insert(&mut self, suffix: &str, candidate: (Slot, u32)) {
        if self.nodes.is_empty() {
            self.nodes.push(SuffixNode::default());
        }
        let mut node = 0;
        for b in suffix.bytes().rev() {
            node = match self.nodes[node].next.iter().find(|(c, _)| *c == b) {
                Some(&(_, child)) => child,
                None => {
                    let child = self.nodes.len();
                    self.nodes.push(SuffixNode::default());
                    self.nodes[node].next.push((b, child));
                    child
                }
            };
        }
        self.nodes[node].candidates.push(candidate);
    }

    fn finish(&mut self) {
        for n in &mut self.nodes {
            n.candidates.sort_unstable();
        }
    }

    /// Visits the candidates of every literal `element` ends with.
    fn walk(&self, element: &str, mut visit: impl FnMut(&[(Slot, u32)])) {
        let mut node = 0;
        for b in element.bytes().rev() {
            let Some(&(_, child)) = self
                .nodes
                .get(node)
                .and_then(|n| n.next.iter().find(|(c, _)| *c == b))
            else {
                return;
            };
            node = child;
            visit(&self.nodes[child].candidates);
        }
    }
}

/// A fast, non-cryptographic hasher (the Fx hash of rustc) for the short strings the indexes
/// are keyed by. Keys come from the configuration; lookups only probe, so untrusted input
/// cannot lengthen chains.
pub(crate) type FastHash = BuildHasherDefault<FxHasher>;

#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
