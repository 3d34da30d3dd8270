//! Module-path templates: the import path of a repository's root (or of a templated upstream
//! URL's module), as path elements that are literals or `{name}` captures
//! (`git.corp.example/{group}/{repo}`), matched at the start of a module path; the captures fill
//! a URL template ([`expand`]). Used by `kind: git` upstreams (`gitorigin.rs`) and by module
//! proxies whose URL path is a template (`upstream.rs`). Pure: no I/O.

use std::collections::BTreeMap;

/// One element of a module-path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Element {
    Literal(String),
    /// `{name}`: any one path element, captured as `name`.
    Capture(String),
}

/// The import path of a repository's root, as a template over path elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootTemplate {
    elements: Vec<Element>,
}

/// The captures of a matched template, by name.
pub type Captures = BTreeMap<String, String>;

impl RootTemplate {
    /// Parses `host/{group}/{repo}`: `/`-separated elements, each a literal or one `{name}`.
    pub fn parse(s: &str) -> Result<RootTemplate, String> {
        let mut elements = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (i, e) in s.split('/').enumerate() {
            if e.is_empty() {
                return Err(format!("{s:?}: empty path element"));
            }
            let element = match e.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                Some(name) => {
                    if name.is_empty()
                        || !name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        return Err(format!(
                            "{s:?}: capture {{{name}}} must be a name of letters, digits, _ or -"
                        ));
                    }
                    if !seen.insert(name.to_string()) {
                        return Err(format!("{s:?}: capture {{{name}}} appears twice"));
                    }
                    if i == 0 {
                        return Err(format!(
                            "{s:?}: the first element (the host) must be literal"
                        ));
                    }
                    Element::Capture(name.to_string())
                }
                None if e.contains('{') || e.contains('}') => {
                    return Err(format!(
                        "{s:?}: element {e:?}: a capture is a whole element, like {{repo}}"
                    ))
                }
                None => Element::Literal(e.to_string()),
            };
            elements.push(element);
        }
        Ok(RootTemplate { elements })
    }

    /// The names this template captures.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.elements.iter().filter_map(|e| match e {
            Element::Capture(n) => Some(n.as_str()),
            Element::Literal(_) => None,
        })
    }

    /// Matches the start of `module`: the repository root's import path and the captures.
    pub fn root_of(&self, module: &str) -> Option<(String, Captures)> {
        let parts: Vec<&str> = module.split('/').collect();
        if parts.len() < self.elements.len() {
            return None;
        }
        let mut captures = Captures::new();
        for (e, p) in self.elements.iter().zip(&parts) {
            match e {
                Element::Literal(l) if l == p => {}
                Element::Literal(_) => return None,
                Element::Capture(name) => {
                    captures.insert(name.clone(), (*p).to_string());
                }
            }
        }
        Some((parts[..self.elements.len()].join("/"), captures))
    }
}

impl RootTemplate {
    /// The repository a Git host resolves `module` to, as a module path: `module` with every
    /// alias suffix (`.git`, `.wiki`, …; repeatedly, so `x.git.git` is `x`) stripped from each
    /// captured element of its root. Hosts serve `group/repo.git` (and a wiki as
    /// `group/repo.wiki`) as `group/repo`, so a decision on `group/repo` must hold for those
    /// spellings too. Literal elements compare without regard to case (a lower-cased spelling
    /// of the path has its canonical form as well). `None` when `module` is not under the
    /// template or nothing is stripped.
    pub fn canonical(&self, module: &str, aliases: &[String]) -> Option<String> {
        let mut parts: Vec<&str> = module.split('/').collect();
        if parts.len() < self.elements.len() {
            return None;
        }
        let mut changed = false;
        for (e, p) in self.elements.iter().zip(parts.iter_mut()) {
            match e {
                Element::Literal(l) if l.eq_ignore_ascii_case(p) => {}
                Element::Literal(_) => return None,
                Element::Capture(_) => {
                    while let Some(stem) = aliases
                        .iter()
                        .find_map(|a| p.strip_suffix(a.as_str()).filter(|s| !s.is_empty()))
                    {
                        *p = stem;
                        changed = true;
                    }
                }
            }
        }
        changed.then(|| parts.join("/"))
    }
}

/// The suffixes a Git host folds onto a repository's name when `repo_aliases` is not set:
/// `.git` (every host) and `.wiki` (a repository's wiki on GitHub, GitLab and Gitea, readable
/// by whoever reads the repository).
pub const DEFAULT_REPO_ALIASES: [&str; 2] = [".git", ".wiki"];

/// The suffix every Git host folds onto a repository's name: always an alias.
pub const GIT_SUFFIX: &str = ".git";

/// Fills `{name}` in `template` from `captures`; every name must be captured.
pub fn expand(template: &str, captures: &Captures) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("{template:?}: unclosed {{"))?;
        let name = &after[..close];
        let value = captures.get(name).ok_or_else(|| {
            format!("{template:?}: {{{name}}} is not captured by the module template")
        })?;
        out.push_str(value);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("{template:?}: unmatched }}"));
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_the_repository_root_at_the_start() {
        let t = RootTemplate::parse("git.corp.example/{group}/{repo}").expect("template");
        assert_eq!(t.names().collect::<Vec<_>>(), ["group", "repo"]);
        let (root, c) = t
            .root_of("git.corp.example/platform/tools/sub/v2")
            .expect("match");
        assert_eq!(root, "git.corp.example/platform/tools");
        assert_eq!(c["group"], "platform");
        assert_eq!(c["repo"], "tools");
        assert_eq!(
            expand("https://git.corp.example/{group}/{repo}.git", &c).expect("url"),
            "https://git.corp.example/platform/tools.git"
        );
        assert!(t.root_of("git.corp.example/platform").is_none());
        assert!(t.root_of("other.example/platform/tools").is_none());
    }

    #[test]
    fn alias_spellings_have_the_repository_as_canonical_form() {
        let t = RootTemplate::parse("git.corp.example/{group}/{repo}").expect("template");
        let aliases: Vec<String> = DEFAULT_REPO_ALIASES.iter().map(|s| s.to_string()).collect();
        for (module, want) in [
            (
                "git.corp.example/team/secret.git",
                Some("git.corp.example/team/secret"),
            ),
            (
                "git.corp.example/team/secret.wiki",
                Some("git.corp.example/team/secret"),
            ),
            (
                "git.corp.example/team/secret.git.git",
                Some("git.corp.example/team/secret"),
            ),
            (
                "git.corp.example/team/secret.wiki.git",
                Some("git.corp.example/team/secret"),
            ),
            (
                "git.corp.example/team.git/secret.git/x.git/v2",
                Some("git.corp.example/team/secret/x.git/v2"),
            ),
            (
                "GIT.corp.example/team/secret.git",
                Some("GIT.corp.example/team/secret"),
            ),
            ("git.corp.example/team/secret", None),
            ("git.corp.example/team/.git", None),
            ("git.corp.example/team/git", None),
            ("git.corp.example/team/secret.GIT", None),
            ("git.corp.example/team", None),
            ("other.example/team/secret.git", None),
        ] {
            assert_eq!(t.canonical(module, &aliases).as_deref(), want, "{module}");
        }
        assert_eq!(
            t.canonical("git.corp.example/team/secret.wiki", &[".git".into()]),
            None
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "",
            "git.corp.example//{repo}",
            "{host}/x",
            "git.corp.example/{a}/{a}",
            "git.corp.example/x{repo}",
            "git.corp.example/{re po}",
        ] {
            assert!(RootTemplate::parse(bad).is_err(), "{bad:?}");
        }
        let c = Captures::from([("repo".to_string(), "x".to_string())]);
        assert!(expand("https://h/{group}.git", &c).is_err());
        assert!(expand("https://h/{repo.git", &c).is_err());
        assert!(expand("https://h/repo}.git", &c).is_err());
    }
}
