#!/usr/bin/env python3
"""Imports of the binary crate run one way: down the floors of docs/architecture.md.

Reads every module file of crates/modgate/src, finds each `crate::`, `super::`, `self::` and
child-module path it names outside test code (`#[cfg(test)]` items and test-only files are
left out), resolves the path to the file of the module it lands in, and fails when a file on a
lower floor names one on a higher floor, or when a file sits on no floor (a new file is placed
in FLOORS below, and in the drawing of docs/architecture.md, "Floors of the binary crate").

  scripts/check-floors.py            check; exit 1 with each upward import
  scripts/check-floors.py --report   also print the import loops (strongly connected components
                                     of the file import graph) and their sizes
  scripts/check-floors.py --edges    print every import edge (file -> file)

Python 3 standard library only; no build needed.
"""

import fnmatch
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "modgate", "src")

# Lowest floor first. A file may import files on its own floor or any lower one, never a higher
# one. Patterns are relative to crates/modgate/src and matched in order: the first floor with a
# matching pattern holds the file (so a whole directory can be placed with `dir/*` and one of its
# files lifted by naming it on a lower floor).
FLOORS = [
    (
        "base: metrics, logging, files and sockets, TLS material",
        [
            "metrics.rs",
            "logging.rs",
            "respond.rs",
            "rundir.rs",
            "alloc.rs",
            "tls.rs",
            "peer.rs",
            "local.rs",
            "certs.rs",
            "host.rs",
            "error_chain.rs",
            "conn/caps.rs",
            "conn/deadline.rs",
            "conn/fds.rs",
            "config/text.rs",
            "template.rs",
        ],
    ),
    (
        "runtime types: upstreams, cache plans, identities, audit, connections, drain",
        [
            "upstream.rs",
            "cache.rs",
            "cache/*",
            "identity.rs",
            "identity/*",
            "record.rs",
            "conn/*",
            "server/shutdown.rs",
            "config/forward.rs",
            "cooldown/*",
            "sumlog.rs",
        ],
    ),
    (
        "file format: the YAML configuration",
        ["config.rs", "config/*"],
    ),
    (
        "builders: configuration -> runtime model",
        ["build/*", "gateway.rs", "mirrors.rs", "model.rs", "model/*", "vulns.rs", "fetched.rs"],
    ),
    (
        "request path: admission, proxy phases, the git origin, explain, reloads",
        ["proxy/*", "gitorigin.rs", "explain.rs", "reload.rs"],
    ),
    (
        "process: server start-up, the client commands (agent, warm), commands, main",
        ["server/*", "preflight.rs", "agent.rs", "warm.rs", "commands/*", "main.rs"],
    ),
]

# Upward imports not yet turned around, each with why it is still there. The check fails on
# any upward import not listed here, and on a listed one that is gone (then strike it out):
# the list only shrinks.
KNOWN = {
}

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip(src):
    """Blank out comments and string/char literals, keeping offsets and line breaks."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif re.match(r'b?r#*"', src[i:]) and not re.match(r"\w", src[i - 1 : i] or " "):
            m = re.match(r'b?r(#*)"', src[i:])
            end = src.find('"' + m.group(1), i + len(m.group(0)))
            j = n if end < 0 else end + 1 + len(m.group(1))
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c == "'":
            m = re.match(r"'(\\(x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'])'", src[i:])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:  # a lifetime
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def item_end(text, start):
    """End of the item starting at `start`: its first top-level `;`, or its matching `}`."""
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == ";" and depth == 0:
            return i + 1
        elif c == "{" and depth == 0:
            level = 0
            while i < len(text):
                if text[i] == "{":
                    level += 1
                elif text[i] == "}":
                    level -= 1
                    if level == 0:
                        return i + 1
                i += 1
            return i
        i += 1
    return i


def drop_test_items(text):
    """Blank out every item under `#[cfg(test)]`; return the text and the test-only `mod x;`s."""
    test_mods = set()
    while True:
        m = re.search(r"#\[cfg\(test\)\]", text)
        if not m:
            return text, test_mods
        start = m.end()
        # further attributes on the same item
        while True:
            a = re.match(r"\s*#\[", text[start:])
            if not a:
                break
            start = item_end(text, start + a.end() - 1)  # the `[`...`]` counts as one group
        end = item_end(text, start)
        d = re.match(r"\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*;", text[start:])
        if d:
            test_mods.add(d.group(1))
        text = text[: m.start()] + re.sub(r"[^\n]", " ", text[m.start() : end]) + text[end:]


def module_files():
    """Map module path (tuple) -> file path relative to ROOT, for every .rs file."""
    mods = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), ROOT).replace(os.sep, "/")
            parts = rel[:-3].split("/")
            if parts == ["main"]:
                path = ()
            elif parts[-1] == "mod":
                path = tuple(parts[:-1])
            else:
                path = tuple(parts)
            mods[path] = rel
    return mods


def parse_tree(text, i):
    """Parse a use tree at text[i:] (after a leading `prefix::`); return (paths, end)."""
    paths = []
    segs = []
    while True:
        m = re.match(r"\s*", text[i:])
        i += m.end()
        if text.startswith("{", i):
            i += 1
            while True:
                m = re.match(r"\s*", text[i:])
                i += m.end()
                if text.startswith("}", i):
                    i += 1
                    break
                sub, i = parse_tree(text, i)
                paths += [segs + s for s in sub]
                m = re.match(r"\s*,?", text[i:])
                i += m.end()
            return paths, i
        if text.startswith("*", i):
            return [segs], i + 1
        m = re.match(IDENT, text[i:])
        if not m:
            return [segs], i
        word = m.group(0)
        i += m.end()
        if word != "self":
            segs = segs + [word]
        m = re.match(r"\s*::\s*", text[i:])
        if not m:
            return [segs], i
        i += m.end()


def resolve(mods, here, base, segs):
    """The file of the deepest module that `base` + `segs` names."""
    path = list(base)
    best = mods.get(tuple(path))
    for s in segs:
        path.append(s)
        if tuple(path) in mods:
            best = mods[tuple(path)]
        else:
            break
    return best


def edges():
    mods = module_files()
    here_of = {v: k for k, v in mods.items()}
    test_files = set()
    texts = {}
    for path, rel in mods.items():
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            text, test_mods = drop_test_items(strip(f.read()))
        texts[rel] = text
        for t in test_mods:
            child = mods.get(path + (t,))
            if child:
                test_files.add(child)
    # a test-only module's children are test-only too
    for path, rel in mods.items():
        for k in range(len(path)):
            if mods.get(path[:k]) in test_files:
                test_files.add(rel)
    graph = {rel: set() for rel in mods.values() if rel not in test_files}
    for rel in graph:
        here = here_of[rel]
        text = texts[rel]
        children = {p[-1] for p in mods if len(p) == len(here) + 1 and p[: len(here)] == here}
        starts = "crate|super|self" + "".join("|" + re.escape(c) for c in sorted(children))
        for m in re.finditer(r"(?<![\w:$])(" + starts + r")\s*::", text):
            word = m.group(1)
            if word == "crate":
                base = ()
                rest = m.end()
            elif word in ("super", "self"):
                base = here
                rest = m.start()
                while True:
                    s = re.match(r"(super|self)\s*::\s*", text[rest:])
                    if not s:
                        break
                    if s.group(1) == "super":
                        base = base[:-1]
                    rest += s.end()
            else:
                base = here + (word,)
                rest = m.end()
            paths, _ = parse_tree(text, rest)
            for segs in paths:
                target = resolve(mods, here, base, segs)
                if target and target != rel and target not in test_files:
                    graph[rel].add(target)
    return graph


def floor_of(rel):
    for n, (_, patterns) in enumerate(FLOORS):
        if any(fnmatch.fnmatchcase(rel, p) for p in patterns):
            return n
    return None


def sccs(graph):
    """Tarjan's strongly connected components (iterative)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    advanced = True
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return out


def main(argv):
    graph = edges()
    if "--edges" in argv:
        for a in sorted(graph):
            for b in sorted(graph[a]):
                print(f"{a} -> {b}")
    if "--report" in argv:
        loops = [c for c in sccs(graph) if len(c) > 1]
        print(f"{len(graph)} module files (test-only code left out)")
        if not loops:
            print("import loops: none (the largest strongly connected component is 1 file)")
        for c in sorted(loops, key=len, reverse=True):
            print(f"import loop of {len(c)} files: {' '.join(c)}")
        # the same graph with each top-level module (a file, or a directory) as one node
        top = lambda rel: rel.split("/")[0].removesuffix(".rs")
        modules = {}
        for a, bs in graph.items():
            modules.setdefault(top(a), set()).update(top(b) for b in bs if top(b) != top(a))
        mloops = [c for c in sccs(modules) if len(c) > 1]
        if not mloops:
            print("module loops: none")
        for c in sorted(mloops, key=len, reverse=True):
            print(f"loop of {len(c)} top-level modules: {' '.join(c)}")
    problems = []
    seen = set()
    for rel in sorted(graph):
        f = floor_of(rel)
        if f is None:
            problems.append(f"{rel}: on no floor (place it in FLOORS of {sys.argv[0]})")
            continue
        for t in sorted(graph[rel]):
            g = floor_of(t)
            if g is not None and g > f:
                if (rel, t) in KNOWN:
                    seen.add((rel, t))
                    continue
                problems.append(
                    f"upward import: {rel} (floor {f}: {FLOORS[f][0].split(':')[0]}) imports "
                    f"{t} (floor {g}: {FLOORS[g][0].split(':')[0]})"
                )
    for (a, b), why in sorted(KNOWN.items()):
        if (a, b) not in seen:
            problems.append(f"{a} no longer imports {b} upward: strike it out of KNOWN")
        elif "--report" in argv:
            print(f"known upward import, still to turn around: {a} -> {b} ({why})")
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"check-floors: {len(problems)} problem(s); the floors are in "
              "docs/architecture.md, \"Floors of the binary crate\"", file=sys.stderr)
        return 1
    print("check-floors: every import of crates/modgate runs down the floors")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
