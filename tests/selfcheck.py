"""Checks that this repository's text matches its code: what `tests/selfcheck_test.py` runs on this tree.

They know no driver by name. A *reference* is text that points at something the repository should
have: a path under one of its top directories, a relative Markdown link, a driver's export name where
code or a command uses it (`j <name> ...`, a config override by driver name), or an import of a module.
Each check takes the tree as a mapping of path to text, so a tree held in memory can be checked too.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import packages_distributions
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
TOP_DIRECTORIES = ("src", "tests", "docs", "benchmarks", "examples", "docker", ".ci", ".github", "scripts")
# A repository path in text: starts at a top directory, not inside a URL or another path.
PATH_RE = re.compile(rf"(?<![\w./:-])((?:{'|'.join(re.escape(d) for d in TOP_DIRECTORIES)})/[\w.*/<>{{}}-]*[\w*/>}}])")
LINK_RE = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
PLAIN_RE = re.compile(r"[a-z]+|[A-Z][a-z]+")
# Where a driver's export name is used as one: `j NAME`, and {"NAME": {...}} (config overrides by driver name).
EXPORT_USE_RE = r"(?:\bj {name}\b(?![-\w])|\{{[\"']{name}[\"']\s*:\s*\{{)"


def tree(root: Path = ROOT) -> dict[str, str]:
    """The text files git knows about under root (tracked, or untracked and not ignored), by path."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    files = {}
    for path in listed:
        file = root / path
        if path and file.is_file() and not file.is_symlink():
            data = file.read_bytes()
            if b"\0" not in data:
                files[path] = data.decode("utf-8", errors="replace")
    # template-only:start
    # The template's own text about the rename goes with it: blank it, keeping the line numbers.
    block = "template-only"  # the marker, spelt so that this line is none
    for path, text in files.items():
        lines, inside = [], False
        for line in text.splitlines():
            inside = inside or f"{block}:start" in line
            lines.append("" if inside else line)
            inside = inside and f"{block}:end" not in line
        files[path] = "\n".join(lines)
    # template-only:end
    return files


def exists(files: Mapping[str, str], path: str) -> bool:
    """Whether `path` (a file, a directory, or a glob, `**/` matching no directory too) names something in the tree."""
    path = path.rstrip("/")
    if "*" in path:
        patterns = {path, path.replace("**/", "")}
        return any(fnmatch.fnmatch(f, p) or fnmatch.fnmatch(f, f"{p}/*") for f in files for p in patterns)
    return path in files or any(f.startswith(f"{path}/") for f in files)


def dangling_paths(files: Mapping[str, str]) -> list[str]:
    """Every repository path named in the tree's text, and every relative Markdown link, that is not in the tree.

    A path counts when it ends with a file name that has a suffix, or with `/`: `docker/build-push-action`
    is a GitHub action. Tests are left out: they make up paths of their own, in their fixtures.
    """
    found = []
    for path, text in files.items():
        if path.endswith("_test.py"):
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            named = [m.group(1) for m in PATH_RE.finditer(line) if re.search(r"(\.\w+|/)$", m.group(1))]
            if path.endswith(".md"):
                base = Path(path).parent
                for target in LINK_RE.findall(line):
                    if "://" not in target and not target.startswith("mailto:"):
                        named.append(_normalise(base / target))
            for name in named:
                if "<" in name or "{" in name or name.startswith(".github/workflows/*"):
                    continue  # a placeholder: tests/<name>_test.py
                if not exists(files, name):
                    found.append(f"{path}:{number}: names {name}, which this repository does not have")
    return found


def _normalise(path: Path) -> str:
    """A relative path with `..` resolved, as a repository path."""
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            if parts:
                parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts)


def export_names(files: Mapping[str, str]) -> set[str]:
    """The driver names the example exporter configs export (examples/*.yaml), children included."""
    names: set[str] = set()
    for path, text in files.items():
        if path.startswith("examples/") and path.endswith((".yaml", ".yml")):
            config = yaml.safe_load(text) or {}
            pending = [config.get("export") or {}]
            while pending:
                entries = pending.pop()
                for name, entry in entries.items():
                    names.add(str(name))
                    if isinstance(entry, dict):
                        pending.append(entry.get("children") or {})
    return names


def dangling_names(files: Mapping[str, str], foreign: Iterable[str], exports: Iterable[str] = ()) -> list[str]:
    """Lines that name an identifier of `foreign`, or use a driver name of `exports` as a driver's.

    A compound name (snake_case, CamelCase) counts wherever it appears; a plain word only where it is
    code: in backticks or a Markdown code block, and in other files after a `.` or before `(`, `=` or `[`.
    """
    foreign = set(foreign)
    compound = sorted(name for name in foreign if not PLAIN_RE.fullmatch(name))
    plain = sorted(foreign - set(compound))
    anywhere = [EXPORT_USE_RE.format(name=re.escape(name)) for name in sorted(set(exports))]
    if compound:
        anywhere.append(rf"(?<![\w-])(?:{'|'.join(map(re.escape, compound))})(?![\w-])")
    words = "|".join(map(re.escape, plain))
    as_code = rf"(?:\.(?:{words})\b|\b(?:{words})(?=\(|=[^=]|\[))" if plain else None
    in_backticks = re.compile(rf"(?<![\w-])(?:{words})(?![\w-])") if plain else None
    anywhere_re = re.compile("|".join(anywhere)) if anywhere else None
    as_code_re = re.compile(as_code) if as_code else None
    found = []
    for path, text in files.items():
        fenced = False
        for number, line in enumerate(text.splitlines(), start=1):
            if path.endswith(".md") and line.lstrip().startswith("```"):
                fenced = not fenced
            matches = [m.group(0) for m in anywhere_re.finditer(line)] if anywhere_re else []
            if in_backticks is not None and as_code_re is not None:
                code = [line] if fenced else re.findall(r"`([^`]+)`", line)
                matches += [m.group(0) for segment in code for m in in_backticks.finditer(segment)]
                if not path.endswith(".md"):
                    matches += [m.group(0) for m in as_code_re.finditer(line)]
            for name in dict.fromkeys(matches):
                found.append(f"{path}:{number}: names {name!r}, which this repository does not have")
    return found


def unused_export_uses(files: Mapping[str, str], candidates: Iterable[str]) -> list[str]:
    """Uses of a driver name of `candidates` (`j <name> ...`) that the example configs do not export."""
    return dangling_names(files, (), set(candidates) - export_names(files))


def defined_names(source: str) -> set[str]:
    """The public names a Python module defines: classes, functions, methods and class-level fields."""
    try:
        module = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(module):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    names.add(item.target.id)
    return {name for name in names if not name.startswith("_")}


def identifiers(files: Mapping[str, str]) -> set[str]:
    """Every word-like token of the tree's text: what the tree mentions at all."""
    words: set[str] = set()
    for text in files.values():
        words.update(re.findall(r"[A-Za-z_][\w]*", text))
    return words


# Imports and dependencies


def imported_distributions(files: Mapping[str, str], prefix: str) -> dict[str, set[str]]:
    """For each Python file under `prefix`: the installed distributions its top-level imports come from."""
    by_module = packages_distributions()
    local = {Path(p).parts[1] for p in files if p.startswith("src/") and len(Path(p).parts) > 2}
    found: dict[str, set[str]] = {}
    for path, text in files.items():
        if not (path.startswith(prefix) and path.endswith(".py")):
            continue
        try:
            module = ast.parse(text)
        except SyntaxError:
            continue
        tops = set()
        for node in _reachable(module):
            if isinstance(node, ast.Import):
                tops.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops.add(node.module.partition(".")[0])
        distributions = set()
        for top in tops - local - set(sys.stdlib_module_names):
            distributions.update(_canonical(d) for d in by_module.get(top, [f"<no distribution: {top}>"]))
        found[path] = distributions
    return found


def _reachable(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of `tree`, but of an `if sys.version_info ...:` only the branch this Python takes.

    `if sys.version_info >= (3, 14): from compression import zstd / else: from backports import zstd` needs
    the backport only where it runs; on 3.14 the other branch is the standard library's.
    """
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and "sys.version_info" in ast.unparse(node.test):
            taken = eval(compile(ast.Expression(node.test), "<version test>", "eval"), {"sys": sys})
            stack.extend(node.body if taken else node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _canonical(name: str) -> str:
    """A distribution name in PEP 503 form."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_dependencies(pyproject: str) -> set[str]:
    """The distributions pyproject.toml's [project] dependencies name."""
    import tomllib

    project = tomllib.loads(pyproject)["project"]
    return {_canonical(Requirement(r).name) for r in project.get("dependencies", [])}


def undeclared_imports(files: Mapping[str, str]) -> list[str]:
    """Modules of the package (tests aside) that import a distribution pyproject.toml does not depend on.

    A dependency of a dependency does not count: it may go, or move, in the dependency's next release.
    """
    declared = declared_dependencies(files["pyproject.toml"])
    found = []
    for path, distributions in sorted(imported_distributions(files, "src/").items()):
        if path.endswith("_test.py"):
            continue
        missing = sorted(distributions - declared)
        if missing:
            found.append(f"{path} imports from {', '.join(missing)}, which pyproject.toml's dependencies do not name")
    return found
