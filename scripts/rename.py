#!/usr/bin/env python3
"""Turn jumpstarter-driver-template into your own driver package, jumpstarter-driver-<name>.

Run it once, from a fresh, committed copy of the template ("Use this template", a clone):

    python3 scripts/rename.py acme-power-strip --examples skeleton,power

It keeps the example units you name and deletes the others, rewrites every file git knows about
(jumpstarter-driver-template -> jumpstarter-driver-acme-power-strip, jumpstarter_driver_template ->
jumpstarter_driver_acme_power_strip, the skeleton driver Template -> AcmePowerStrip), moves
src/jumpstarter_driver_template, deletes the template-only parts (this script, its tests, copier's
files, the README's template sections), writes .copier-answers.yml so that `copier update` can
bring later template changes in, and leaves the result uncommitted for you to review.

`copier copy` runs this same script as its task (--copier-operation), so both ways in give the same
tree; `copier update` runs it again over the project, where the package is merged, not nested.

Template-only machinery, for template maintainers. In any text file:
- lines from one containing "template-only:start" to one containing "template-only:end" are deleted;
- between "renamed-only:start" and "renamed-only:end" lines, the marker lines are deleted and the
  lines between are kept (a README hides them inside an HTML comment), with {name}, {distribution},
  {package}, {camel}, {title} and {description} replaced; nothing else is rewritten there;
- lines between "unit:NAMES:start" and "unit:NAMES:end" (NAMES: units, comma-separated) are kept,
  without the marker lines, when one of those units is kept, and deleted otherwise;
- lines between "dropped:NAMES:start" and "dropped:NAMES:end" are kept when none of those units is kept,
  like renamed-only lines (placeholders replaced, {template_files} among them: the template's files at
  the commit the copy records, for a link to a dropped example), and deleted otherwise.
A unit's files are listed in UNITS below, one line each; SUPPORT lists modules units share.

Standard library only, so it runs before any environment exists; the syntax stays within
Python 3.8 so an older system python3 can run it too.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import keyword
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DISTRIBUTION = "jumpstarter-driver-template"
TEMPLATE_PACKAGE = "jumpstarter_driver_template"
PREFIX = "jumpstarter-driver-"
# Where copier fetches the template from (written as _src_path): the template's public home.
TEMPLATE_SOURCE = "https://github.com/jumpstarter-dev/jumpstarter-driver-template"
ANSWERS_FILE = ".copier-answers.yml"
# Template-only machinery: deleted by the rename, with their directories if that leaves them empty.
TEMPLATE_ONLY = (
    "scripts/rename.py",
    "tests/template_test.py",
    "copier.yml",
    "{{ _copier_conf.answers_file }}.jinja",
)
PROVENANCE = f"Generated from {TEMPLATE_DISTRIBUTION}"
DEFAULT_AUTHOR_NAME = "Your Name"  # the same defaults as copier.yml's questions
DEFAULT_AUTHOR_EMAIL = "you@example.com"
DEFAULT_DESCRIPTION = "Jumpstarter driver for {name}"

P = f"src/{TEMPLATE_PACKAGE}"
# The example units an author picks: the files each one owns (a directory ends with /) and the units it
# needs. Everything a unit owns outside these files is in blocks
# marked unit:NAME (pyproject.toml, examples/exporter.yaml, README.md, docs/).
EXAMPLES: dict[str, tuple[str, str]] = {
    "skeleton": (
        f"{P}/driver.py {P}/client.py {P}/driver_test.py {P}/client_test.py tests/hardware/driver_test.py "
        "benchmarks/driver_bench.py",
        "base_client validation lifecycle",
    ),
    "power": (
        f"{P}/power/ tests/power_test.py tests/hardware/power_test.py benchmarks/power_bench.py docs/power.md",
        "commands validation",
    ),
    "custom": (
        f"{P}/custom/ tests/custom_test.py tests/hardware/custom_test.py benchmarks/custom_bench.py docs/custom.md",
        "base_client validation cancellation batching",
    ),
    "device": (
        f"{P}/device/ tests/device_test.py tests/hardware/device_test.py benchmarks/device_bench.py docs/device.md",
        "base_client validation",
    ),
    "board": (
        f"{P}/board/ tests/board_test.py tests/hardware/board_test.py docs/board.md",
        "device base_client validation",
    ),
    "storage": (
        f"{P}/storage/ tests/storage_test.py tests/hardware/storage_test.py benchmarks/storage_bench.py "
        "docs/storage.md",
        "commands validation cancellation batching",
    ),
    "console": (
        f"{P}/console/ tests/console_test.py tests/hardware/console_test.py benchmarks/console_bench.py "
        "docs/console.md",
        "commands validation",
    ),
}
# Modules that several units use: kept when a kept unit needs them.
SUPPORT: dict[str, tuple[str, str]] = {
    "commands": (f"{P}/commands.py {P}/commands_test.py", "cancellation"),
    "cancellation": (f"{P}/cancellation.py {P}/cancellation_test.py", ""),
    "lifecycle": (f"{P}/lifecycle.py {P}/lifecycle_test.py", ""),
    "base_client": (f"{P}/base_client.py {P}/base_client_test.py", ""),
    "batching": (f"{P}/batching.py {P}/batching_test.py", ""),
    "validation": (f"{P}/validation.py {P}/validation_test.py", ""),
}
UNITS = {**EXAMPLES, **SUPPORT}

# Upstream driver packages (jumpstarter-dev/jumpstarter, python/packages/jumpstarter-driver-*, on main in
# 2026-11, which includes every 0.9 release): a driver named after one would clash with it on PyPI, and
# depend on itself when it is one the template uses (power, composite, opendal, network).
# fmt: off
UPSTREAM_DRIVERS = frozenset((
    "adb", "androidemulator", "ble", "can", "composite", "corellium", "cuttlefish", "dds", "doip",
    "dut-network", "dutlink", "energenie", "esp32", "fastboot", "flashers", "gpiod", "gptp", "http",
    "http-power", "iosdevice", "iossimulator", "iscsi", "kubevirt", "mitmproxy", "nanokvm", "nanokvm-usb",
    "netsim", "network", "noyito-relay", "obd", "opendal", "pi-pico", "power", "probe-rs", "pyserial", "qemu",
    "qualcomm", "raspberrypi", "renode", "ridesx", "sdmux", "sdwire", "shell", "sigrok", "snmp", "someip",
    "ssh", "ssh-mitm", "ssh-mount", "stlink-msd", "tasmota", "tftp", "tmt", "uboot", "uds", "uds-can",
    "uds-doip", "ustreamer", "vnc", "xcp", "yepkit",
))
# fmt: on

EXIT_REFUSED = 1
EXIT_INVALID = 2
VALID_NAME = (
    "A valid name is lowercase letters, digits and single hyphens, starting with a letter, not an upstream "
    "driver's or an example unit's name, e.g. 'acme-power-strip' (the package becomes "
    "jumpstarter-driver-acme-power-strip)."
)

NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*\Z")
MARKER_RE = re.compile(r"\b(template-only|renamed-only|(unit|dropped):([a-z_,]+)):(start|end)\b")
PLACEHOLDER_RE = re.compile(r"\{(name|distribution|package|camel|title|description|template_files)\}")
LEFTOVER_RE = re.compile(r"template", re.IGNORECASE)
# Directories never read or rewritten in copier mode, where git may not say which files are the project's.
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".tox", ".mypy_cache", ".pytest_cache",
             ".ruff_cache", "dist", "build", ".uploads"}  # fmt: skip


class RenameError(Exception):
    """A reason not to rename, with the exit status to report it with."""

    def __init__(self, message: str, status: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Names:
    """Every form of the driver's name the template uses."""

    name: str  # acme-power-strip (the skeleton's exporter key and `j` command)
    distribution: str  # jumpstarter-driver-acme-power-strip (PyPI, repository, README title)
    package: str  # jumpstarter_driver_acme_power_strip (import package, entry points, client() paths)
    camel: str  # AcmePowerStrip (the skeleton's class, prose)
    title: str  # Acme Power Strip (titles)

    @classmethod
    def from_name(cls, name: str, camel: str | None = None) -> Names:
        """Derive every form from a validated name (the class name from it too, unless `camel` is given)."""
        words = name.split("-")
        return cls(
            name=name,
            distribution=PREFIX + name,
            package=(PREFIX + name).replace("-", "_"),
            camel=camel or "".join(word.capitalize() for word in words),
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
    if name in UPSTREAM_DRIVERS:
        return (
            f"{PREFIX}{name} is one of Jumpstarter's own driver packages: yours would clash with it on PyPI "
            "(and depend on itself if the template uses it)"
        )
    if name in UNITS:
        return f"{raw!r} is the name of one of the template's example units, whose driver keeps that name"
    package = (PREFIX + name).replace("-", "_")
    if not package.isidentifier() or keyword.iskeyword(package):
        return f"{raw!r} gives the import package {package!r}, which is not a Python identifier"
    return None


CLASS_RE = re.compile(r"[A-Z][A-Za-z0-9_]*\Z")
VALID_CLASS = (
    "A valid class name is a Python identifier in CapWords, ASCII letters and digits, that the package does not "
    "use already, e.g. 'NetPDU' (the client becomes NetPDUClient)."
)


def validate_class(raw: str) -> str:
    """Return the skeleton driver's class name as given, or raise RenameError (exit 2) saying what is wrong."""
    if not raw:
        problem = "the class name is empty"
    elif not raw.isascii() or not raw.isidentifier():
        problem = f"{raw!r} is not a Python identifier"
    elif keyword.iskeyword(raw):  # True, False, None: the others start lowercase
        problem = f"{raw!r} is a Python keyword"
    elif not CLASS_RE.match(raw):
        problem = f"{raw!r} does not start with an uppercase letter"
    elif raw.endswith("Client"):
        problem = f"{raw!r} ends with 'Client', which the client class's name adds ({raw}Client)"
    else:
        return raw
    raise RenameError(f"invalid class name: {problem}.\n{VALID_CLASS}", EXIT_INVALID)


def suggest_name(name: str) -> str | None:
    """A valid name close to an invalid one, made by applying every rule at once; None if none is left."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()  # é -> e
    # Lowercase, every run of other characters becomes one hyphen, then no hyphen or digit may lead.
    candidate = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-").lstrip("0123456789-")
    if candidate in UPSTREAM_DRIVERS or candidate in UNITS:
        candidate = f"my-{candidate}"  # a name of one's own, next to the upstream one
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
    raise RenameError(f"invalid driver name: {problem}.\n{VALID_NAME}", EXIT_INVALID)


def select_units(examples: str | None) -> list[str]:
    """The units to keep: the examples named (default: all of them) and what they need; exit 2 on an unknown one."""
    chosen = chosen_examples(examples)
    unknown = [unit for unit in chosen if unit not in EXAMPLES]
    if unknown or not chosen:
        problem = f"unknown example unit {', '.join(map(repr, unknown))}" if unknown else "no example unit chosen"
        raise RenameError(f"{problem}: choose from {', '.join(EXAMPLES)} (comma-separated)", EXIT_INVALID)
    keep: list[str] = []
    pending = list(chosen)
    while pending:
        unit = pending.pop(0)
        if unit not in keep:
            keep.append(unit)
            pending += UNITS[unit][1].split()
    return [unit for unit in UNITS if unit in keep]  # in manifest order


def chosen_examples(examples: str | None) -> list[str]:
    """The example units named on the command line (default: all of them), as given."""
    return list(EXAMPLES) if examples is None else [unit.strip() for unit in examples.split(",") if unit.strip()]


def unit_paths(unit: str) -> list[str]:
    """The paths a unit owns (a directory ends with /)."""
    return UNITS[unit][0].split()


def owner(path: str) -> str | None:
    """The unit that owns a file, or None for files every selection keeps."""
    for unit in UNITS:
        for owned in unit_paths(unit):
            if path == owned or (owned.endswith("/") and path.startswith(owned)):
                return unit
    return None


def name_substitutions(new: Names) -> list[tuple[str, str]]:
    """Template name forms (regular expressions) and what replaces them, in paths and text."""
    return [
        (re.escape(TEMPLATE_DISTRIBUTION), new.distribution),
        (re.escape(TEMPLATE_PACKAGE), new.package),
        (re.escape(TEMPLATE_PACKAGE.upper()), new.package.upper()),
        (r"Jumpstarter Driver Template", f"Jumpstarter Driver {new.title}"),
        (r"JumpstarterDriverTemplate", f"JumpstarterDriver{new.camel}"),
    ]


def text_substitutions(new: Names) -> list[tuple[str, str]]:
    """Beyond the name forms: prose that names the template, and the skeleton driver's names."""
    return [
        (r"\b[Tt]he template\b(?!-)", "this package"),
        (r"\b[Tt]his template\b(?!-)", "this package"),
        # The skeleton: class Template, TemplateClient, TestTemplate -> AcmePowerStrip...; its exporter key
        # `template` (YAML key, `j template`, "template", `template`) -> acme-power-strip.
        (r"Template(?![a-z])", new.camel),
        (r"(?<=^  )template(?=:)", new.name),
        (r"(?<=\bj )template\b(?![-_])", new.name),
        (r'(?<=")template(?=")', new.name),
        (r"(?<=`)template(?=`)", new.name),
    ]


class Substituter:
    """One-pass replacement of every template form, so a replacement is never rewritten again."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._replacements = [replacement for _, replacement in pairs]
        self._regex = re.compile("|".join(f"({pattern})" for pattern, _ in pairs), re.MULTILINE)

    def __call__(self, text: str) -> str:
        """Return text with every template form replaced."""
        return self._regex.sub(self._replace, text)

    def _replace(self, match: re.Match) -> str:
        index = match.lastindex - 1 if match.lastindex else 0
        replacement = self._replacements[index]
        # Keep a sentence's capital: "The template's tests" -> "This package's tests".
        if match.group(0)[:1].isupper() and replacement[:1].islower():
            replacement = replacement[:1].upper() + replacement[1:]
        return replacement


def template_files(commit: str) -> str:
    """Where the template's files are at `commit`, on its public home: what links to dropped examples start with."""
    return f"{TEMPLATE_SOURCE}/blob/{commit}"


def rewrite_text(
    text: str, path: str, new: Names, keep: list[str], description: str, substitute: Substituter, commit: str
) -> str:
    """Apply the markers and the substitutions to one file's text."""
    sentence = description if description.endswith((".", "!", "?")) else f"{description}."  # as README's first line
    values = {"description": sentence, **{k: getattr(new, k) for k in ("name", "distribution", "package")}}
    values.update(camel=new.camel, title=new.title, template_files=template_files(commit))
    out = []
    blocks: list[tuple[str, bool, int]] = []  # open blocks: (kind, kept, line of its start marker)
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        marker = MARKER_RE.search(line)
        if marker is not None:
            kind, unit_kind, units, edge = marker.groups()
            kind = f"{unit_kind}:{units}" if units else kind
            if edge == "start":
                if blocks and not blocks[-1][0].startswith(("unit:", "dropped:")):
                    start = blocks[-1][2]
                    raise RenameError(f"{path}:{number}: {marker.group(0)} inside the block started on line {start}")
                if units:
                    unknown = [unit for unit in units.split(",") if unit not in UNITS]
                    if unknown:
                        raise RenameError(f"{path}:{number}: unknown unit {', '.join(unknown)} in {marker.group(0)}")
                if unit_kind == "dropped":
                    kept = not any(unit in keep for unit in units.split(","))
                else:
                    kept = any(unit in keep for unit in units.split(",")) if units else kind == "renamed-only"
                blocks.append((kind, kept, number))
            else:
                if not blocks or blocks[-1][0] != kind:
                    raise RenameError(f"{path}:{number}: {marker.group(0)} without a matching start before it")
                blocks.pop()
            continue
        if not all(kept for _, kept, _ in blocks):
            continue
        if any(kind == "renamed-only" or kind.startswith("dropped:") for kind, _, _ in blocks):
            out.append(PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], line))
        else:
            out.append(substitute(line))
    if blocks:
        raise RenameError(f"{path}:{blocks[-1][2]}: a {blocks[-1][0]} block without its end")
    return "".join(out)


def set_metadata(text: str, author_name: str, author_email: str, description: str) -> str:
    """pyproject.toml's description and authors, from the answers (JSON strings are TOML basic strings)."""
    line = f"description = {json.dumps(description)}"
    text = re.sub(r'^description = ".*"$', lambda _: line, text, count=1, flags=re.MULTILINE)
    author = f"authors = [{{ name = {json.dumps(author_name)}, email = {json.dumps(author_email)} }}]"
    return re.sub(r"^authors = \[.*\]$", lambda _: author, text, count=1, flags=re.MULTILINE)


@dataclass
class Plan:
    """Everything the rename will do, computed before anything is touched."""

    deletes: list[str] = field(default_factory=list)
    writes: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # final path -> (source, old, new text)
    leftovers: list[str] = field(default_factory=list)


def git(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, strip: bool = True) -> str:
    """Run git and return its output (stripped unless told not to); raise RenameError if it fails."""
    try:
        result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise RenameError("git is not installed: the rename uses it to know which files are the project's") from None
    if result.returncode != 0:
        raise RenameError(f"git {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout.strip() if strip else result.stdout


def check_git_tree() -> None:
    """Refuse a directory that is not a git work tree: by hand, git tells the project's files and undoes a rename."""
    try:
        git("rev-parse", "--show-toplevel")
    except RenameError as e:
        raise RenameError(
            f"{ROOT} is not a git work tree ({e}): the rename rewrites the files git tracks, and git lets you "
            "review it (`git diff`) or undo it. Clone the repository, or run "
            "`git init && git add -A && git commit -m 'From jumpstarter-driver-template'` first."
        ) from None


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
            "The rename runs once, on a fresh copy of the template; later template changes come in with "
            "`uvx copier update --trust`."
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


def project_files(copier_operation: str | None) -> list[str]:
    """The files to rename. By hand: what git tracks, plus untracked files it does not ignore.

    Under `copier copy` the directory holds only what copier wrote. Under `copier update` copier has
    rendered the new template over the (clean) project: the files it wrote are the ones git sees
    changed; the author's other files are left alone.
    """
    if copier_operation == "update" and (ROOT / ".git").exists():
        # Not stripped: each entry starts with its two status columns, " M .ci/compat.py" among them.
        listed = git("status", "--porcelain", "-z", "--untracked-files=all", "--no-renames", strip=False)
        paths = [entry[3:] for entry in listed.split("\0") if len(entry) > 3]
    elif copier_operation is not None:
        paths = []
        for directory, dirnames, filenames in os.walk(ROOT):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
            paths += [os.path.relpath(os.path.join(directory, f), ROOT).replace(os.sep, "/") for f in filenames]
    else:
        paths = git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    return sorted({p for p in paths if p and (ROOT / p).is_file() and not (ROOT / p).is_symlink()} - {ANSWERS_FILE})


def check_clashes(new: Names, files: list[str], chosen_class: bool = False) -> None:
    """Refuse a name whose skeleton class would clash with a name the template's code already uses."""
    for path in files:
        if path.endswith(".py") and owner(path) != "skeleton" and path not in TEMPLATE_ONLY:
            text = (ROOT / path).read_text(encoding="utf-8", errors="replace")
            found = re.search(rf"\b({new.camel}|{new.camel}Client)\b", text)
            if found:
                what, hint = ("class name", VALID_CLASS) if chosen_class else ("driver name", VALID_NAME)
                raise RenameError(
                    f"invalid {what}: the driver class {new.camel} would clash with {found.group(1)} in "
                    f"{path}.\n{hint}",
                    EXIT_INVALID,
                )


def make_plan(new: Names, keep: list[str], files: list[str], answers: dict[str, object], commit: str = "main") -> Plan:
    """Compute the deletes and the rewrites of the rename (links to dropped examples at `commit`); raise RenameError."""
    names = Substituter(name_substitutions(new))
    substitute = Substituter(name_substitutions(new) + text_substitutions(new))
    description = str(answers["description"])
    plan = Plan()
    for path in files:
        unit = owner(path)
        if path in TEMPLATE_ONLY or (unit is not None and unit not in keep):
            plan.deletes.append(path)
            continue
        final = "/".join(names(part) for part in path.split("/"))
        data = (ROOT / path).read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is None or "\0" in text:
            if LEFTOVER_RE.search(data.decode("latin-1")):
                plan.leftovers.append(f"{final}: binary file mentions 'template'")
            if final != path:
                plan.writes[final] = (path, "", "")
            continue
        new_text = rewrite_text(text, path, new, keep, description, substitute, commit)
        if final == "pyproject.toml":
            new_text = set_metadata(new_text, str(answers["author_name"]), str(answers["author_email"]), description)
        if new_text != text or final != path:
            plan.writes[final] = (path, text, new_text)
        provenance = {line for line in new_text.splitlines() if PROVENANCE in line and final == "README.md"}
        for number, line in enumerate(new_text.splitlines(), start=1):
            if LEFTOVER_RE.search(line.replace(TEMPLATE_SOURCE, "")) and line not in provenance:
                plan.leftovers.append(f"{final}:{number}: {line.strip()}")
        if LEFTOVER_RE.search(final):
            plan.leftovers.append(f"{final}: the path mentions 'template'")
    return plan


def apply(plan: Plan) -> None:
    """Carry out the plan. A file moves by being written at its new path: into an existing package directory
    (`copier update` renders the template next to the renamed package), files merge instead of nesting."""
    emptied = set()
    for path in plan.deletes:
        (ROOT / path).unlink()
        emptied.add((ROOT / path).parent)
    for final, (source, old, text) in plan.writes.items():
        target = ROOT / final
        target.parent.mkdir(parents=True, exist_ok=True)
        if final != source:
            if not text and not old:  # a binary file: move it as it is
                os.replace(ROOT / source, target)
            else:
                target.write_bytes(text.encode("utf-8"))
                shutil.copymode(ROOT / source, target)
                (ROOT / source).unlink()
            emptied.add((ROOT / source).parent)
        else:
            # Overwriting in place keeps the file's mode (executable scripts stay executable).
            target.write_bytes(text.encode("utf-8"))
    for directory in sorted(emptied, key=lambda d: -len(d.parts)):
        prune(directory)


def prune(directory: Path) -> None:
    """Remove a directory left without files (bytecode caches aside), and its parents that this empties."""
    while directory != ROOT and directory.is_dir():
        cache = directory / "__pycache__"
        entries = [entry for entry in directory.iterdir() if entry != cache]
        if entries:
            return
        shutil.rmtree(cache, ignore_errors=True)
        directory.rmdir()
        directory = directory.parent


def git_source(source: str) -> str:
    """What copier accepts as _src_path, as something `git clone` accepts."""
    for alias, base in (("gh:", "https://github.com/"), ("gl:", "https://gitlab.com/")):
        if source.startswith(alias):
            return base + source[len(alias) :].lstrip("/")
    if Path(source).expanduser().is_dir():  # a local path as file://, so that --filter is honoured
        return Path(source).expanduser().resolve().as_uri()
    return source


def find_template_commit(source: str) -> tuple[str, str]:
    """The template commit this copy was made from, the one whose tree is this tree: as described, and in full.

    "Use this template" makes a new first commit with the template's tree (not its commit), so the
    trees are compared: this working tree's, then those of this repository's own commits (an author
    who committed before renaming), against every commit of the template, fetched without contents.
    """
    with tempfile.TemporaryDirectory(prefix="rename-") as tmp:
        bare = str(Path(tmp) / "template.git")
        try:
            git("clone", "--quiet", "--bare", "--filter=tree:0", git_source(source), bare, cwd=Path(tmp))
        except RenameError as e:
            raise RenameError(
                f"cannot read the template at {source} to find which of its commits this copy comes from ({e}). "
                "Pass --template-source with its URL or a local clone, or --commit with the template commit or tag "
                "you copied."
            ) from None
        commits = {}
        for line in git("--git-dir", bare, "log", "--all", "--format=%T %H").splitlines():
            tree, commit = line.split()
            commits.setdefault(tree, commit)  # the newest commit with that tree
        index = dict(os.environ, GIT_INDEX_FILE=str(Path(tmp) / "index"))
        git("--git-dir", bare, "--work-tree", str(ROOT), "add", "--all", ".", env=index)
        trees = [git("--git-dir", bare, "write-tree", env=index)]
        with contextlib.suppress(RenameError):  # no commit yet
            trees += git("log", "--format=%T", "HEAD").split()
        for tree in trees:
            if tree in commits:
                return git("--git-dir", bare, "describe", "--tags", "--always", commits[tree]), commits[tree]
    raise RenameError(
        f"no commit of the template at {source} has this copy's files: pass --commit with the template commit or "
        "tag you copied (copier update needs it to know what you changed)."
    )


def write_answers(answers: dict[str, object]) -> None:
    """The answers file copier reads on update (JSON scalars and lists are valid YAML)."""
    lines = ["# Changes here will be overwritten by Copier; NEVER EDIT MANUALLY"]
    lines += [f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in answers.items()]
    (ROOT / ANSWERS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")


def stale_environment() -> bool:
    """Whether the project's .venv has the template's package installed (uv run does not remove it)."""
    patterns = ("lib/python*/site-packages", "Lib/site-packages")
    return any(any((ROOT / ".venv").glob(f"{pattern}/{TEMPLATE_PACKAGE}-*.dist-info")) for pattern in patterns)


def describe(plan: Plan, new: Names, keep: list[str], dry_run: bool, diff: bool, copier_operation: str | None) -> str:
    """Say what the rename does (or would do); under copier, only the summary and what to do next."""
    verb = "Would rename" if dry_run else "Renamed"
    kept = ", ".join(unit for unit in keep if unit in EXAMPLES)
    lines = [
        f"{verb} {TEMPLATE_DISTRIBUTION} to {new.distribution} (import package {new.package}, CamelCase "
        f"{new.camel}), keeping the examples {kept}:"
    ]
    if copier_operation == "update":  # copier shows the merge itself; the author reviews it with git
        return f"{lines[0].rstrip(':')}."
    if copier_operation == "copy":
        next_steps = "git init && git add -A && git commit -m 'From jumpstarter-driver-template', then uv run pytest"
        return f"{lines[0].rstrip(':')}.\nNext: {next_steps}"
    lines += [f"  delete   {path}" for path in plan.deletes]
    for path, (source, old, text) in sorted(plan.writes.items()):
        if path != source:
            lines.append(f"  move     {source} -> {path}")
        if old != text:
            changed = sum(1 for line in difflib.ndiff(old.splitlines(), text.splitlines()) if line[:1] in "+-")
            lines.append(f"  rewrite  {path} ({changed} lines changed)")
            if diff:
                lines += [
                    "    " + line.rstrip("\n")
                    for line in difflib.unified_diff(
                        old.splitlines(keepends=True), text.splitlines(keepends=True), f"a/{source}", f"b/{path}"
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
            "Later, `uvx copier update --trust` brings in what changed in the template since.",
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
            "Turn jumpstarter-driver-template into jumpstarter-driver-NAME: keep the example units you choose, "
            "rewrite every reference in the files git tracks, rename src/jumpstarter_driver_template, remove the "
            "template-only parts, and write .copier-answers.yml for `copier update`. Run it from inside the copy "
            "it belongs to; it runs once, on a committed tree, and leaves the result uncommitted for you to review."
        ),
        epilog=f"{VALID_NAME} Exit status: 0 done, 1 refused (tree already renamed, uncommitted changes, not a "
        "git work tree, run from outside the tree, template commit not found), 2 invalid name, unit or usage.",
    )
    parser.add_argument("name", help="the driver name, e.g. acme-power-strip (a jumpstarter-driver- prefix is dropped)")
    parser.add_argument(
        "--examples",
        metavar="LIST",
        help=f"comma-separated example units to keep, from: {','.join(EXAMPLES)} (default: all of them)",
    )
    parser.add_argument(
        "--class",
        dest="class_name",
        metavar="ClassName",
        help="the skeleton driver's class name (default: from NAME, acme-power-strip gives AcmePowerStrip); "
        "its client is ClassNameClient",
    )
    parser.add_argument("--author-name", default=DEFAULT_AUTHOR_NAME, help="pyproject.toml's author")
    parser.add_argument("--author-email", default=DEFAULT_AUTHOR_EMAIL, help="pyproject.toml's author email")
    parser.add_argument("--description", help="pyproject.toml's description (default: 'Jumpstarter driver for NAME')")
    parser.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    parser.add_argument("--diff", action="store_true", help="with --dry-run, also print each file's diff")
    parser.add_argument("--force", action="store_true", help="run even if the tree has uncommitted changes")
    parser.add_argument(
        "--template-source",
        default=TEMPLATE_SOURCE,
        help=f"the template's git URL or local clone, recorded for copier update (default: {TEMPLATE_SOURCE})",
    )
    parser.add_argument("--commit", help="the template commit or tag this copy was made from (default: found by tree)")
    parser.add_argument("--copier-operation", choices=["copy", "update"], help=argparse.SUPPRESS)  # copier's task
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the rename; return the exit status."""
    args = parse_args(argv)
    by_copier = args.copier_operation is not None
    note = ""
    try:
        name = validate_name(args.name)
        new = Names.from_name(name, None if args.class_name is None else validate_class(args.class_name))
        keep = select_units(args.examples)
        check_location()
        if not by_copier:
            check_git_tree()
            note = check_tree(args.force, args.dry_run)
        files = project_files(args.copier_operation)
        if args.copier_operation != "update":  # on update the author's own code uses the name already
            check_clashes(new, files, chosen_class=args.class_name is not None)
        answers: dict[str, object] = {
            "author_email": args.author_email,
            "author_name": args.author_name,
            "class_name": new.camel,
            "description": args.description or DEFAULT_DESCRIPTION.format(name=new.name),
            # What the author chose (copier records its answer so), not the units it needs too.
            "examples": [unit for unit in EXAMPLES if unit in chosen_examples(args.examples)],
            "name": new.name,
        }
        # Links to dropped examples name the template commit in full (copier passes its hash as --commit).
        link_commit = args.commit or "main"
        if not by_copier and not args.dry_run:
            # Before anything changes: the tree must still be the template's to be found.
            source = args.template_source
            if Path(source).expanduser().is_dir():
                source = str(Path(source).expanduser().resolve())  # copier resolves a relative path from its cwd
            if args.commit:
                commit = args.commit
            else:
                commit, link_commit = find_template_commit(source)
            answers = {"_commit": commit, "_src_path": source, **answers}
        plan = make_plan(new, keep, files, answers, link_commit)
        if not args.dry_run:
            apply(plan)
            if not by_copier:  # copier writes the answers file itself
                write_answers(answers)
    except RenameError as error:
        print(f"rename.py: {error}", file=sys.stderr)
        return error.status
    print(describe(plan, new, keep, args.dry_run, args.diff, args.copier_operation))
    if note:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
