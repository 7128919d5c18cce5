#!/usr/bin/env python3
"""Turn jumpstarter-driver-template into your own driver package, jumpstarter-driver-<name>.

Run it once, from a fresh, committed copy of the template:

    python3 scripts/rename.py acme-power-strip

It rewrites every file git knows about (jumpstarter-driver-template ->
jumpstarter-driver-acme-power-strip, jumpstarter_driver_template ->
jumpstarter_driver_acme_power_strip), renames src/jumpstarter_driver_template, deletes the
template-only parts (this script, its test, and the README's rename instructions) and leaves
the result uncommitted: review it with `git status` / `git diff`, then commit.

Template-only machinery, for template maintainers: in any text file, the lines from one
containing "template-only:start" to one containing "template-only:end" (whatever the comment
syntax) are deleted. Between "renamed-only:start" and "renamed-only:end" lines, the marker
lines are deleted and the lines between are kept as they are (so a README can hide text for
the renamed project inside an HTML comment), with {name}, {distribution}, {package}, {camel}
and {title} replaced by the new names; nothing else is rewritten there.

Standard library only, so it runs before any environment exists; the syntax stays within
Python 3.8 so an older system python3 can run it too.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DISTRIBUTION = "jumpstarter-driver-template"
TEMPLATE_PACKAGE = "jumpstarter_driver_template"
PREFIX = "jumpstarter-driver-"
# Template-only machinery: deleted by the rename, with their directories if that leaves them empty.
TEMPLATE_ONLY_FILES = ("scripts/rename.py", "tests/rename_test.py")
PROVENANCE = f"Generated from {TEMPLATE_DISTRIBUTION}"

EXIT_REFUSED = 1
EXIT_INVALID_NAME = 2
VALID_NAME = (
    "A valid name is lowercase letters, digits and single hyphens, starting with a letter and not "
    "'template', e.g. 'acme-power-strip' (the package becomes jumpstarter-driver-acme-power-strip)."
)

NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*\Z")
MARKER_RE = re.compile(r"\b(template-only|renamed-only):(start|end)\b")
PLACEHOLDER_RE = re.compile(r"\{(name|distribution|package|camel|title)\}")
LEFTOVER_RE = re.compile(r"template", re.IGNORECASE)


class RenameError(Exception):
    """A reason not to rename, with the exit status to report it with."""

    def __init__(self, message: str, status: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Names:
    """Every form of the driver's name the template uses."""

    name: str  # acme-power-strip
    distribution: str  # jumpstarter-driver-acme-power-strip (PyPI, repository, README title)
    package: str  # jumpstarter_driver_acme_power_strip (import package, entry points, client() paths)
    camel: str  # AcmePowerStrip (prose, class name stems)
    title: str  # Acme Power Strip (titles)

    @classmethod
    def from_name(cls, name: str) -> Names:
        """Derive every form from a validated name."""
        words = name.split("-")
        return cls(
            name=name,
            distribution=PREFIX + name,
            package=(PREFIX + name).replace("-", "_"),
            camel="".join(word.capitalize() for word in words),
            title=" ".join(word.capitalize() for word in words),
        )


def name_problem(raw: str, name: str) -> str | None:
    """What is wrong with `name` (`raw` without the prefix), worded with `raw`; None if it is valid."""
    if not name:
        return "the name is empty" if not raw else f"{raw!r} is only the prefix, with no name after it"
    if name.lower() != name:
        return f"{raw!r} has uppercase letters"
    if "_" in name:
        return f"{raw!r} has an underscore"
    if name[0].isdigit() or name[0] == "-":
        return f"{raw!r} does not start with a letter"
    if "--" in name:
        return f"{raw!r} has a double hyphen"
    if name.endswith("-"):
        return f"{raw!r} ends with a hyphen"
    if not NAME_RE.match(name):
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c == "-"))})
        return f"{raw!r} has characters other than lowercase letters, digits and hyphens: {''.join(bad)!r}"
    if name == "template":
        return f"{raw!r} is the template's own name"
    if "template" in name.split("-"):
        return f"{raw!r} has the word 'template', which the rename removes from everything else"
    return None


def suggest_name(name: str) -> str | None:
    """A valid name close to an invalid one, made by applying every rule at once; None if none is left."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()  # é -> e
    # Lowercase, every run of other characters becomes one hyphen, then no hyphen or digit may lead.
    candidate = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-").lstrip("0123456789-")
    return candidate if candidate and name_problem(candidate, candidate) is None else None


def validate_name(raw: str) -> str:
    """Return the driver name without the jumpstarter-driver- prefix, or raise RenameError (exit 2)."""
    name = raw[len(PREFIX) :] if raw.startswith(PREFIX) else raw
    problem = name_problem(raw, name)
    if problem is None:
        return name
    suggestion = suggest_name(name)
    if suggestion is not None:
        problem += f"; use {suggestion!r}"
    raise RenameError(f"invalid driver name: {problem}.\n{VALID_NAME}", EXIT_INVALID_NAME)


def name_substitutions(new: Names) -> list[tuple[str, str]]:
    """Template name forms (regular expressions) and what replaces them, in paths and text."""
    return [
        (re.escape(TEMPLATE_DISTRIBUTION), new.distribution),
        (re.escape(TEMPLATE_PACKAGE), new.package),
        (re.escape(TEMPLATE_PACKAGE.upper()), new.package.upper()),
        (r"Jumpstarter Driver Template", f"Jumpstarter Driver {new.title}"),
        (r"JumpstarterDriverTemplate", f"JumpstarterDriver{new.camel}"),
    ]


def prose_substitutions() -> list[tuple[str, str]]:
    """Prose that names the template as "this project": it becomes this package."""
    return [
        (r"\b[Tt]he template\b(?!-)", "this package"),
        (r"\b[Tt]his template\b(?!-)", "this package"),
    ]


class Substituter:
    """One-pass replacement of every template form, so a replacement is never rewritten again."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._replacements = [replacement for _, replacement in pairs]
        self._regex = re.compile("|".join(f"({pattern})" for pattern, _ in pairs))

    def __call__(self, text: str) -> str:
        """Return text with every template form replaced."""
        return self._regex.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        index = match.lastindex - 1 if match.lastindex else 0
        replacement = self._replacements[index]
        # Keep a sentence's capital: "The template's tests" -> "This package's tests".
        if match.group(0)[:1].isupper() and replacement[:1].islower():
            replacement = replacement[:1].upper() + replacement[1:]
        return replacement


def rewrite_text(text: str, path: str, new: Names, substitute: Substituter) -> str:
    """Apply the markers and the substitutions to one file's text."""
    out = []
    block = None  # None, or (kind, line number of its start marker)
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        marker = MARKER_RE.search(line)
        if marker is not None:
            kind, edge = marker.groups()
            if edge == "start":
                if block is not None:
                    raise RenameError(f"{path}:{number}: {kind}:start inside the block started on line {block[1]}")
                block = (kind, number)
            else:
                if block is None or block[0] != kind:
                    raise RenameError(f"{path}:{number}: {kind}:end without a {kind}:start before it")
                block = None
            continue
        if block is None:
            out.append(substitute(line))
        elif block[0] == "renamed-only":
            out.append(PLACEHOLDER_RE.sub(lambda m: getattr(new, m.group(1)), line))
    if block is not None:
        raise RenameError(f"{path}:{block[1]}: {block[0]}:start without a {block[0]}:end")
    return "".join(out)


def renamed_path(path: str, substitute: Substituter) -> str:
    """The path with the template's name replaced in every component."""
    return "/".join(substitute(part) for part in path.split("/"))


@dataclass
class Plan:
    """Everything the rename will do, computed before anything is touched."""

    deletes: list[str] = field(default_factory=list)
    moves: list[tuple[str, str]] = field(default_factory=list)  # deepest first
    writes: dict[str, tuple[str, str]] = field(default_factory=dict)  # final path -> (old text, new text)
    leftovers: list[str] = field(default_factory=list)


def git(*args: str) -> str:
    """Run git in the template's directory and return its output."""
    try:
        result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise RenameError("git is not installed: the rename uses it to know which files are the project's") from None
    if result.returncode != 0:
        raise RenameError(
            f"{ROOT} is not a git work tree ({result.stderr.strip()}): the rename rewrites the files git "
            "tracks, and git lets you review it (`git diff`) or undo it. Clone the repository, or run "
            "`git init && git add -A && git commit -m 'From jumpstarter-driver-template'` first."
        )
    return result.stdout


def check_location() -> None:
    """Refuse to run from outside the tree: the script renames the copy it is part of, wherever it is called from."""
    cwd = Path.cwd().resolve()
    if cwd != ROOT and ROOT not in cwd.parents:
        raise RenameError(
            f"refusing to rename: this script renames the copy of the template it belongs to, {ROOT}, but you "
            f"are in {cwd}. Run it from inside that copy (cd {ROOT}); to rename another copy, run its own "
            "scripts/rename.py."
        )


def check_tree(force: bool, dry_run: bool) -> str:
    """Refuse a tree that is not the template anymore, or that has uncommitted changes; return a note."""
    pyproject = ROOT / "pyproject.toml"
    project_name = None
    if pyproject.is_file():
        # A regular expression rather than tomllib: the script must run on Pythons older than 3.11.
        found = re.search(r'^name\s*=\s*"([^"]*)"', pyproject.read_text(encoding="utf-8"), re.MULTILINE)
        project_name = found.group(1) if found else None
    has_package = (ROOT / "src" / TEMPLATE_PACKAGE).is_dir()
    if project_name != TEMPLATE_DISTRIBUTION or not has_package:
        raise RenameError(
            f"refusing to rename: {ROOT} is not {TEMPLATE_DISTRIBUTION} anymore (pyproject.toml names "
            f"{project_name!r}; src/{TEMPLATE_PACKAGE} {'exists' if has_package else 'is missing'}). "
            "The rename runs once, on a fresh copy of the template."
        )
    status = git("status", "--porcelain", "--", ".")
    if not status.strip() or force:
        return ""
    if dry_run:
        return "The tree has uncommitted changes: the rename itself will refuse to run without --force."
    changed = "\n".join("  " + line for line in status.splitlines()[:20])
    raise RenameError(
        "refusing to rename a tree with uncommitted changes, so that `git diff` shows exactly what the "
        f"rename did and `git checkout` can undo it:\n{changed}\nCommit or stash them, or pass --force."
    )


def project_files() -> list[str]:
    """The project's files: tracked ones, plus untracked ones that are not ignored (only with --force)."""
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    return sorted({path for path in listed if path and (ROOT / path).is_file() and not (ROOT / path).is_symlink()})


def make_plan(new: Names) -> Plan:
    """Compute the deletes, moves and rewrites of the rename; raise RenameError on a problem."""
    names = Substituter(name_substitutions(new))
    text_substitute = Substituter(name_substitutions(new) + prose_substitutions())
    plan = Plan()
    files = project_files()
    plan.deletes = [path for path in TEMPLATE_ONLY_FILES if path in files]
    kept = [path for path in files if path not in plan.deletes]

    # Rename path components deepest first, so each move's parent still has its old name.
    sources = set()
    for path in kept:
        parts = path.split("/")
        for depth in range(len(parts)):
            if names(parts[depth]) != parts[depth]:
                sources.add("/".join(parts[: depth + 1]))
    for source in sorted(sources, key=lambda p: (-p.count("/"), p)):
        parent, _, last = source.rpartition("/")
        target = f"{parent}/{names(last)}" if parent else names(last)
        if (ROOT / target).exists():
            raise RenameError(f"cannot rename {source} to {target}: {target} already exists")
        plan.moves.append((source, target))

    for path in kept:
        final = renamed_path(path, names)
        data = (ROOT / path).read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is None or "\0" in text:
            if LEFTOVER_RE.search(data.decode("latin-1")):
                plan.leftovers.append(f"{final}: binary file mentions 'template'")
            continue
        new_text = rewrite_text(text, path, new, text_substitute)
        if new_text != text:
            plan.writes[final] = (text, new_text)
        provenance = {line for line in new_text.splitlines() if PROVENANCE in line and final == "README.md"}
        for number, line in enumerate(new_text.splitlines(), start=1):
            if LEFTOVER_RE.search(line) and line not in provenance:
                plan.leftovers.append(f"{final}:{number}: {line.strip()}")
        if LEFTOVER_RE.search(final):
            plan.leftovers.append(f"{final}: the path mentions 'template'")
    return plan


def delete(path: Path) -> None:
    """Delete a file, its bytecode, and the directories that leaves empty, up to the project root."""
    path.unlink()
    cache = path.parent / "__pycache__"
    for compiled in cache.glob(f"{path.stem}.*.pyc"):
        compiled.unlink()
    if cache.is_dir() and not any(cache.iterdir()):
        cache.rmdir()
    parent = path.parent
    while parent != ROOT and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def apply(plan: Plan) -> None:
    """Carry out the plan."""
    for path in plan.deletes:
        delete(ROOT / path)
    for source, target in plan.moves:
        # A whole directory moves at once, with what git ignores in it (caches), so nothing stays behind.
        os.rename(ROOT / source, ROOT / target)
    for path, (_, text) in plan.writes.items():
        # Overwriting in place keeps the file's mode (executable scripts stay executable).
        (ROOT / path).write_bytes(text.encode("utf-8"))


def stale_environment() -> bool:
    """Whether the project's .venv has the template's package installed (uv run does not remove it)."""
    patterns = ("lib/python*/site-packages", "Lib/site-packages")
    return any(any((ROOT / ".venv").glob(f"{pattern}/{TEMPLATE_PACKAGE}-*.dist-info")) for pattern in patterns)


def describe(plan: Plan, new: Names, dry_run: bool, diff: bool) -> str:
    """Say what the rename does (or would do)."""
    verb = "Would rename" if dry_run else "Renamed"
    lines = [
        f"{verb} {TEMPLATE_DISTRIBUTION} to {new.distribution} (import package {new.package}, CamelCase {new.camel}):"
    ]
    lines += [f"  delete   {path}" for path in plan.deletes]
    lines += [f"  move     {source} -> {target}" for source, target in plan.moves]
    for path, (old, text) in sorted(plan.writes.items()):
        changed = sum(1 for line in difflib.ndiff(old.splitlines(), text.splitlines()) if line[:1] in "+-")
        lines.append(f"  rewrite  {path} ({changed} lines changed)")
        if diff:
            lines += [
                "    " + line.rstrip("\n")
                for line in difflib.unified_diff(
                    old.splitlines(keepends=True), text.splitlines(keepends=True), f"a/{path}", f"b/{path}"
                )
            ]
    if plan.leftovers:
        lines.append("Lines that still mention 'template' (review them):")
        lines += [f"  {leftover}" for leftover in plan.leftovers]
    if not dry_run:
        lines += [
            "",
            "Next: review with `git status` and `git diff`, then",
            "  uv run pytest",
            f"  git add -A && git commit -m 'Rename the template to {new.distribution}'",
        ]
        if stale_environment():
            lines.append(
                "The .venv made before the rename still has the template's package (`jmp driver list` shows its "
                "drivers): run `uv sync` to replace it."
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python3 scripts/rename.py",
        description=(
            "Turn jumpstarter-driver-template into jumpstarter-driver-NAME: rewrite every reference in the "
            "files git tracks, rename src/jumpstarter_driver_template, and remove the template-only parts "
            "(this script, its test, the README's rename instructions). Run it from inside the copy it belongs "
            "to; it runs once, on a committed tree, and leaves the result uncommitted for you to review."
        ),
        epilog=f"{VALID_NAME} Exit status: 0 done, 1 refused (tree already renamed, uncommitted changes, "
        "not a git work tree, run from outside the tree), 2 invalid name or usage.",
    )
    parser.add_argument("name", help="the driver name, e.g. acme-power-strip (a jumpstarter-driver- prefix is dropped)")
    parser.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    parser.add_argument("--diff", action="store_true", help="with --dry-run, also print each file's diff")
    parser.add_argument("--force", action="store_true", help="run even if the tree has uncommitted changes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the rename; return the exit status."""
    args = parse_args(argv)
    try:
        new = Names.from_name(validate_name(args.name))
        check_location()
        note = check_tree(args.force, args.dry_run)
        plan = make_plan(new)
        if not args.dry_run:
            apply(plan)
    except RenameError as error:
        print(f"rename.py: {error}", file=sys.stderr)
        return error.status
    print(describe(plan, new, args.dry_run, args.diff))
    if note:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
