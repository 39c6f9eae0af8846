#!/usr/bin/env python3
"""The house rules that rustfmt and clippy do not check (issue 10):

1. no circle of imports between modules (`crate::x` / `super::` paths, comments and
   strings excluded), in src/, core/src/ and worker/src/, file by file and folder by
   folder;
2. no function longer than MAX_LINES lines (from its `fn` line to its closing brace),
   tests excluded.

Prints what breaks a rule and exits 1, or prints a one-line summary."""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRATES = ["src", "core/src", "worker/src", "server/src"]
MAX_LINES = 70


def strip(text):
    """The text with comments, strings and char literals blanked (newlines kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = '"' + hashes
            j = text.find(end, i + 2 + len(hashes))
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            m = re.match(r"'(\\(x..|u\{[0-9a-fA-F]+\}|.)|[^\\'])'", text[i:])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def module_of(crate_dir, path):
    rel = path.relative_to(crate_dir).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def imports(mod, code):
    """Modules `mod` names: crate::a::b..., super::x..."""
    found = set()
    for m in re.finditer(r"\bcrate((?:::\w+)+)", code):
        found.add(tuple(m.group(1).split("::")[1:]))
    for m in re.finditer(r"\bsuper((?:::\w+)+)", code):
        base = mod[:-1]
        found.add(base + tuple(m.group(1).split("::")[1:]))
    return found


def resolve(name, modules):
    """The longest known module that `name` starts with."""
    for k in range(len(name), 0, -1):
        if name[:k] in modules:
            return name[:k]
    return None


def cycles(graph):
    """Strongly connected components with more than one node."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def long_functions(path, code):
    lines = code.split("\n")
    found = []
    test_depth = None
    depth = 0
    pending_test = False
    fn_re = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\S*\s+)?fn\s+(\w+)")
    open_fns = []  # (name, start line, depth at start)
    for no, line in enumerate(lines, 1):
        if re.match(r"^\s*#\[cfg\(test\)\]", line) or re.match(r"^\s*#\[(pg_)?test\]", line):
            pending_test = True
        m = fn_re.match(line)
        if m and test_depth is None:
            open_fns.append((m.group(7), no, depth, pending_test))
        if pending_test and "{" in line and test_depth is None:
            test_depth = depth
            pending_test = False
        for ch in line:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                while open_fns and depth == open_fns[-1][2]:
                    name, start, _, is_test = open_fns.pop()
                    if not is_test and no - start + 1 > MAX_LINES:
                        found.append(f"{path.relative_to(ROOT)}:{start}: fn {name} is {no - start + 1} lines")
                if test_depth is not None and depth == test_depth:
                    test_depth = None
        if m and ";" in line and "{" not in line and open_fns and open_fns[-1][1] == no:
            open_fns.pop()  # a declaration without a body (trait method)
    return found


def main():
    problems = []
    n_files = n_modules = 0
    for crate in CRATES:
        crate_dir = ROOT / crate
        if not crate_dir.is_dir():
            continue
        files = sorted(crate_dir.rglob("*.rs"))
        codes = {f: strip(f.read_text()) for f in files}
        modules = {module_of(crate_dir, f): f for f in files}
        graph, folders = {}, {}
        for f, code in codes.items():
            n_files += 1
            mod = module_of(crate_dir, f)
            for name in imports(mod, code):
                target = resolve(name, modules)
                if target is None or target == mod:
                    continue
                # a module may use its own parent's nouns (`use super::*`) and its children
                if target == mod[: len(target)] or mod == target[: len(mod)]:
                    continue
                graph.setdefault(mod, set()).add(target)
                a, b = mod[:1], target[:1]
                if a != b and a and b:
                    folders.setdefault(a, set()).add(b)
            problems += long_functions(f, code)
        n_modules += len(modules)
        for comp in cycles(graph):
            problems.append(f"{crate}: modules import each other in a circle: {', '.join('::'.join(c) or 'crate' for c in comp)}")
        for comp in cycles(folders):
            problems.append(f"{crate}: top-level modules import each other in a circle: {', '.join('::'.join(c) for c in comp)}")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"layout: {n_files} files, {n_modules} modules, no import circles, no function over {MAX_LINES} lines")


if __name__ == "__main__":
    main()
