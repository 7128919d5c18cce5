# mypy: allow-untyped-defs
"""The template's own machinery: scripts/rename.py and copier turn a copy into a working package of another name.

Template-only: the rename deletes this module with the script. Each selection of example units is
renamed in a copy of this repository, as an author would get it, and the copy must pass its own
checks, tests and wheel build; those copies run two at a time, while the other tests here run.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import errno
import functools
import importlib.metadata
import inspect
import json
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
import zipfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Protocol

import pytest
import selfcheck
import yaml
from harness import REPORTED, watch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "rename.py"
PROVENANCE = "Generated from jumpstarter-driver-template"
VALID_NAME_HINT = "lowercase letters, digits and single hyphens, starting with a letter"
STEP_TIMEOUT = 600
SUITE_TIMEOUT = 1200
PARALLEL_COPIES = 2

# Run with the wheel's environment: load each registered driver, then the client class its client() names.
IMPORT_CHECK = """
import importlib, json, sys
from importlib.metadata import distribution

found = {}
for entry_point in distribution(sys.argv[1]).entry_points:
    if entry_point.group == "jumpstarter.drivers":
        driver = entry_point.load()
        module, _, name = driver.client().rpartition(".")
        client = getattr(importlib.import_module(module), name)
        found[entry_point.name] = [entry_point.value, driver.client(), client.__name__]
print(json.dumps(found))
"""

pytestmark = [
    pytest.mark.skipif(not SCRIPT.is_file(), reason="scripts/rename.py is gone: this project was already renamed"),
    pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed"),
    pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout: no committed tree to copy"),
]

rename_script: dict[str, Any] = runpy.run_path(str(SCRIPT)) if SCRIPT.is_file() else {}
EXAMPLES: list[str] = list(rename_script.get("EXAMPLES", {}))
# Each selection is renamed to a name no test uses elsewhere, and runs its copy's own suite.
SELECTIONS = {
    "default": ("acme-power-strip", None),
    **{unit: (f"lab-{unit}-driver", unit) for unit in EXAMPLES},
}
# The skeleton's copy also chooses its class name, so that a copy renamed with --class passes its own checks.
CLASS_NAMES = {"skeleton": "LabSkeletonPDU"}
# What each copy's own suite runs: what a rename can break, which the template's own suite cannot see.
# - Each unit's copy: every in-process test of the renamed package (drivers, clients, the exact `j` output),
#   its text, entry points and dependencies, and one `jmp shell` of the renamed config. Its end-to-end
#   tests run the same code as the template's own, with only the package's name changed: the template runs them.
# - The default copy (every unit): the same but its in-process tests, which the units' copies run one unit
#   at a time; and what people and agents read of every driver.
# - The skeleton's copy is what most authors start from: its whole suite, as its .ci/run runs it, but
#   SKELETON_SAME. Those tests check Jumpstarter's and the harness's own behaviour (hooks that fail,
#   passphrases, an interrupted run): no driver takes part beyond being served, so in the template's own
#   run they run the same lines, the same way.
COPY_TESTS = [
    "tests/selfcheck_test.py",
    "tests/entry_points_test.py",
    "tests/exporter_test.py::test_local_shell_serves_every_driver",
    "tests/exporter_test.py::test_every_driver_has_its_own_help",
]
COPY_ONLY = {
    None: ["-m", "not slow", *COPY_TESTS, "tests/agents_test.py"],
    **{unit: ["-m", "not slow", "src", *COPY_TESTS] for unit in EXAMPLES if unit != "skeleton"},
}
SKELETON_SAME = [
    "tests/harness_test.py::test_figures_reach_the_summary_from_xdist_workers",
    "tests/harness_test.py::test_an_ended_run_leaves_nothing_running",
    "tests/hooks_test.py::test_failing_before_lease_hook",
    "tests/hooks_test.py::test_hook_j_with_a_passphrase_needs_tcp",
    "tests/exporter_test.py::test_wrong_or_missing_passphrase_is_refused",
    "tests/lab_test.py::test_lab_keeps_a_connection_that_pings_while_idle",
]
COPY_ONLY["skeleton"] = [arg for test in SKELETON_SAME for arg in ("--deselect", test)]


SPAWN_ATTEMPTS = 3

_RUNNING: set[subprocess.Popen[str]] = set()
"""The commands of the background copies, ended by `stop_copies` if the session ends before they do."""


def run(args: list[str], cwd: Path, timeout: float = STEP_TIMEOUT, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command in cwd with an environment of its own (its own uv project, no outer pytest settings)."""
    drop = ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST", "PYTHONPATH")
    child_env = {key: value for key, value in os.environ.items() if key not in drop and not key.startswith("JMP_")}
    child_env |= {"TERM": "dumb", "GIT_CONFIG_NOSYSTEM": "1", **env}  # no progress bars from Jumpstarter
    for attempt in range(SPAWN_ATTEMPTS):
        try:
            process = subprocess.Popen(
                args, cwd=cwd, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                start_new_session=True,
            )  # fmt: skip
            break
        except OSError as e:
            # CI's VM once failed execve() of this very interpreter with EFAULT while other threads of this
            # process spawned copies' commands: the kernel's failure to start a program that exists, not the
            # command's. Only that is tried again; the command itself runs once.
            if e.errno != errno.EFAULT or attempt == SPAWN_ATTEMPTS - 1:
                raise
    _RUNNING.add(process)
    watch(process.pid)  # ended by the harness's watchdog if this pytest dies before stop_copies runs
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        _RUNNING.discard(process)
        if process.poll() is None:
            _kill(process)
    return subprocess.CompletedProcess(args, process.returncode, out, err)


def _kill(process: subprocess.Popen[str]) -> None:
    """End a command and everything it started (its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def explain(result: subprocess.CompletedProcess[str]) -> str:
    """The end of a command's output, for an assertion message."""
    command = " ".join(map(str, result.args))
    return (
        f"{command}: exit {result.returncode}\n--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-4000:]}"
    )


def git(cwd: Path, *args: str) -> str:
    """Run git in cwd with a fixed identity and no hooks, and return its output."""
    config = ["-c", "user.name=template test", "-c", "user.email=template-test@example.invalid"]
    config += ["-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null", "-c", "init.defaultBranch=main"]
    result = run(["git", *config, *args], cwd)
    assert result.returncode == 0, explain(result)
    return result.stdout.strip()


def copy_template(dest: Path, commit: bool = True) -> Path:
    """Copy the files git tracks here (as they are on disk) to dest, and commit them in a new repository.

    This is what "Use this template" gives: the template's files in a repository of its own, one commit.
    """
    dest.mkdir(parents=True)
    for path in git(ROOT, "ls-files", "-z").split("\0"):
        source = ROOT / path
        if path and source.is_file():
            (dest / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / path)
    if commit:
        git(dest, "init", "-q")
        git(dest, "add", "-A")
        git(dest, "commit", "-q", "-m", "Initial commit")
    return dest


def project_files(tree: Path) -> list[str]:
    """The files of a project tree: tracked, plus untracked ones that are not ignored."""
    listed = git(tree, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    return sorted(path for path in set(listed) if path and (tree / path).is_file())


def snapshot(tree: Path) -> dict[str, bytes | str]:
    """Every file under tree (git metadata and caches excluded), plus `git status`."""
    files: dict[str, bytes | str] = {}
    for path in sorted(tree.rglob("*")):
        parts = path.relative_to(tree).parts
        if path.is_file() and not {".git", ".venv", "__pycache__"} & set(parts):
            files["/".join(parts)] = path.read_bytes()
    if (tree / ".git").exists():
        files[":git status"] = git(tree, "status", "--porcelain")
    return files


def rename(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the tree's own copy of the rename script."""
    return run([sys.executable, "scripts/rename.py", *args], tree)


def package(name: str) -> str:
    """The import package of a driver name."""
    return "jumpstarter_driver_" + name.replace("-", "_")


# Renamed copies: every selection, checked as an author would check it


@dataclass
class Copy:
    """A renamed copy of the template, and what its checks printed."""

    name: str
    selection: str | None
    path: Path
    rename_output: str
    checks: dict[str, subprocess.CompletedProcess[str]]
    seconds: dict[str, float]
    """How long each check took (the suite's figures show where a copy's time goes)."""

    def to_json(self) -> str:
        checks = {step: [[str(a) for a in r.args], r.returncode, r.stdout, r.stderr] for step, r in self.checks.items()}
        return json.dumps([self.name, self.selection, str(self.path), self.rename_output, checks, self.seconds])

    @classmethod
    def from_json(cls, text: str) -> Copy:
        name, selection, path, rename_output, checks, seconds = json.loads(text)
        completed = {step: subprocess.CompletedProcess(*result) for step, result in checks.items()}
        return cls(name, selection, Path(path), rename_output, completed, seconds)


class CopyResult(Protocol):
    """A copy being made: a Future here, or a PublishedCopy in an xdist worker."""

    def result(self, timeout: float | None = None) -> Copy: ...


class PublishedCopy:
    """A copy that the xdist controller makes: its result, once the controller has written it to `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def result(self, timeout: float | None = None) -> Copy:
        timeout = 2 * SUITE_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not self.path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no copy at {self.path} after {timeout:g} s")
            time.sleep(0.2)
        text = self.path.read_text()
        if text.startswith("error:"):
            raise RuntimeError(f"making the copy failed in the xdist controller:\n{text}")
        return Copy.from_json(text)


def _publish(path: Path, future: Future[Copy]) -> None:
    """Write a finished copy (or why it failed) where the xdist worker that tests it reads it."""
    try:
        text = future.result().to_json()
    except BaseException as e:
        text = "error: " + "".join(traceback.format_exception(e))
    path.with_suffix(".partial").write_text(text)
    path.with_suffix(".partial").rename(path)  # whole or not at all: the reader polls for `path`


def make_and_check_copy(tmp: Path, name: str, selection: str | None, class_name: str | None = None) -> Copy:
    """Rename a copy, then run what its CI runs: uv sync, ruff, mypy, its own tests, the wheel build and import."""
    path = copy_template(tmp / f"jumpstarter-driver-{name}")
    args = [name, "--commit", "0000000"] + ([] if selection is None else ["--examples", selection])
    args += [] if class_name is None else ["--class", class_name]
    only = COPY_ONLY[selection]
    renamed = rename(path, *args)
    assert renamed.returncode == 0, explain(renamed)
    checks, seconds = {}, {}
    steps = {
        "sync": ["uv", "sync", "--quiet"],
        "ruff check": ["uv", "run", "--no-sync", "ruff", "check", "."],
        "ruff format": ["uv", "run", "--no-sync", "ruff", "format", "--check", "."],
        "mypy": ["uv", "run", "--no-sync", "mypy"],
        # Two workers, whatever the cores: a copy's tests mostly wait (its in-process ones use a fifth of a core).
        "pytest": ["uv", "run", "--no-sync", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", *only],
        "build": ["uv", "build", "--quiet", "--wheel", "--out-dir", str(tmp / "dist")],
    }
    for step, args in steps.items():
        started = time.monotonic()
        checks[step] = result = run(args, path, timeout=SUITE_TIMEOUT if step == "pytest" else STEP_TIMEOUT)
        seconds[step] = time.monotonic() - started
        if result.returncode != 0:
            break
    else:
        (wheel,) = (tmp / "dist").glob(f"{package(name)}-*.whl")
        venv = tmp / "wheel-venv"
        checks["venv"] = run(["uv", "venv", "-q", "--python", sys.executable, str(venv)], tmp)
        checks["install"] = run(["uv", "pip", "install", "-q", "--python", str(venv), str(wheel)], tmp)
        checks["import"] = run([str(venv / "bin" / "python"), "-c", IMPORT_CHECK, f"jumpstarter-driver-{name}"], tmp)
    return Copy(name, selection, path, renamed.stdout, checks, seconds)


_COPIES: dict[str, Any] = {}


def copies_dir() -> Path:
    """The directory the copies are made in (one per session, made when first asked for)."""
    if "tmp" not in _COPIES:
        _COPIES["tmp"] = Path(tempfile.mkdtemp(prefix="template-test-"))
    return _COPIES["tmp"]


def start_copies(publish: bool = False) -> None:
    """Make and check every selection's copy in the background, two at a time.

    tests/conftest.py calls this as soon as the session's tests are collected, so the copies run alongside
    the rest of the suite rather than after it; the `copies` fixture starts them otherwise. Under xdist the
    controller runs them (`publish`: each result is written to copies_dir() for the worker that tests it).
    """
    if "futures" in _COPIES or shutil.which("uv") is None:
        return
    tmp = copies_dir()
    pool = ThreadPoolExecutor(PARALLEL_COPIES)
    futures = {}
    for key, (name, selection) in SELECTIONS.items():
        (tmp / key).mkdir()
        futures[key] = pool.submit(make_and_check_copy, tmp / key, name, selection, CLASS_NAMES.get(key))
        if publish:
            futures[key].add_done_callback(functools.partial(_publish, tmp / f"{key}.json"))
    _COPIES.update(pool=pool, futures=futures)


def start_copies_for(ids: list[str]) -> None:
    """In the xdist controller: start (and publish) the copies if the collected tests include one that uses them."""
    users = {name for name, test in globals().items() if name.startswith("test_") and callable(test)}
    users = {name for name in users if "copies" in inspect.signature(globals()[name]).parameters}
    here = Path(__file__).name
    if any(Path(test.split("::")[0]).name == here and test.split("::")[-1].split("[")[0] in users for test in ids):
        start_copies(publish=True)


def stop_copies() -> None:
    """End the copies' commands that still run, and remove their directory (tests/conftest.py, at session end)."""
    if not _COPIES:
        return
    for future in _COPIES.get("futures", {}).values():
        future.cancel()
    for process in list(_RUNNING):
        _kill(process)
    if "pool" in _COPIES:
        _COPIES["pool"].shutdown(wait=True)
    shutil.rmtree(_COPIES["tmp"], ignore_errors=True)
    _COPIES.clear()


@pytest.fixture(scope="module")
def copies(request: pytest.FixtureRequest) -> dict[str, CopyResult]:
    """Every selection's renamed copy, being made and checked in the background."""
    if shutil.which("uv") is None:
        pytest.skip("uv is not installed")
    published = getattr(request.config, "workerinput", {}).get("template_copies")
    if published:  # an xdist worker: the controller makes them
        return {key: PublishedCopy(Path(published) / f"{key}.json") for key in SELECTIONS}
    start_copies()
    return _COPIES["futures"]


def test_a_spawn_the_kernel_fails_with_efault_is_tried_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A copy's command whose execve() fails with EFAULT (seen once in CI's VM) is started again, and runs once."""
    popen, failures = subprocess.Popen, [OSError(errno.EFAULT, "Bad address")]

    def flaky_popen(*args: Any, **kwargs: Any) -> subprocess.Popen[str]:
        if failures:
            raise failures.pop()
        return popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", flaky_popen)
    result = run(["sh", "-c", "echo ran >> log; cat log"], tmp_path)
    assert (result.returncode, result.stdout) == (0, "ran\n")


def test_the_tests_the_skeleton_copy_leaves_to_the_template_exist():
    """Each test SKELETON_SAME deselects in the skeleton's copy is a test function of the file it names."""
    for test in SKELETON_SAME:
        path, _, name = test.partition("::")
        tree = ast.parse((ROOT / path).read_text())
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert name in functions, f"{test}: no such test in {path}: update SKELETON_SAME"


@pytest.mark.parametrize("selection", list(SELECTIONS))
def test_renamed_copy_passes_its_own_checks(copies: dict[str, CopyResult], selection: str):
    """The renamed copy passes ruff, mypy and its own test suite, and its wheel's drivers and clients import."""
    copy = copies[selection].result(timeout=2 * SUITE_TIMEOUT)
    REPORTED.append(f"copy {selection}: " + ", ".join(f"{step} {s:.0f} s" for step, s in copy.seconds.items()))
    for step, result in copy.checks.items():
        assert result.returncode == 0, f"{selection}: {step} failed\n{explain(result)}"
    assert re.search(r"\d+ passed", copy.checks["pytest"].stdout), explain(copy.checks["pytest"])
    assert "failed" not in copy.checks["pytest"].stdout.splitlines()[-1]
    pyproject = tomllib.loads((copy.path / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"]["jumpstarter.drivers"]
    found = json.loads(copy.checks["import"].stdout)
    assert declared and {name: value[0] for name, value in found.items()} == declared
    # Clients are this package's, or an upstream interface's (ExamplePower's is upstream's PowerClient).
    assert all("template" not in client_path for _, client_path, _ in found.values()), found


@pytest.mark.parametrize("selection", list(SELECTIONS))
def test_renamed_copy_keeps_only_its_units(copies: dict[str, CopyResult], selection: str):
    """A copy has the files and config of the units it kept, none of the others', and no template leftovers."""
    copy = copies[selection].result(timeout=2 * SUITE_TIMEOUT)
    kept = set(EXAMPLES) if copy.selection is None else _closure(copy.selection)
    files = project_files(copy.path)
    for unit, (owned, _) in rename_script["UNITS"].items():
        for path in owned.split():
            renamed = path.replace("jumpstarter_driver_template", package(copy.name))
            present = any(f.startswith(renamed) for f in files) if renamed.endswith("/") else renamed in files
            if unit not in kept and unit in EXAMPLES:
                assert not present, f"{selection}: {renamed} of unit {unit} was kept"
    exported = yaml.safe_load((copy.path / "examples" / "exporter.yaml").read_text())["export"]
    assert exported, f"{selection}: the example exporter exports nothing"
    leftovers = []
    for path in files:
        if path == ".copier-answers.yml":  # names the template it came from, for copier update
            continue
        text = (copy.path / path).read_bytes().decode("utf-8", errors="replace")
        if re.search("template", path, re.IGNORECASE):
            leftovers.append(path)
        for number, line in enumerate(text.splitlines(), start=1):
            # Links to the dropped examples' files name the template's repository and package: they are its files.
            linked = re.sub(re.escape(rename_script["TEMPLATE_SOURCE"]) + r"[^)\s]*", "", line)
            if re.search("template", linked, re.IGNORECASE) and not (path == "README.md" and PROVENANCE in line):
                leftovers.append(f"{path}:{number}: {line}")
            if re.search(r"\b(template-only|renamed-only|(unit|dropped):[a-z_,]+):(start|end)\b", line):
                leftovers.append(f"{path}:{number}: marker left: {line}")
    assert leftovers == []
    if "storage" not in kept:  # the storage unit alone depends on jumpstarter-driver-opendal
        dependencies = tomllib.loads((copy.path / "pyproject.toml").read_text())["project"]["dependencies"]
        assert [d for d in dependencies if "opendal" in d] == []
    if "console" not in kept:  # the console unit alone uses upstream's console client (pyserial is pyvisa's too)
        upstream_console = re.compile(r"jumpstarter[-_]driver[-_]pyserial")
        assert [path for path in files if upstream_console.search((copy.path / path).read_text(errors="replace"))] == []
    assert not (copy.path / "scripts").exists()
    assert not (copy.path / "copier.yml").exists()
    assert not (copy.path / "src" / "jumpstarter_driver_template").exists()
    answers = yaml.safe_load((copy.path / ".copier-answers.yml").read_text())
    assert answers["name"] == copy.name and answers["_commit"] == "0000000"
    assert answers["examples"] == ([u for u in EXAMPLES if u in kept] if copy.selection is None else [copy.selection])


def _closure(unit: str) -> set[str]:
    """An example unit and every example it needs."""
    needs = rename_script["UNITS"][unit][1].split()
    return {unit} | {u for need in needs if need in EXAMPLES for u in _closure(need)}


def test_skeleton_is_named_after_the_driver(copies: dict[str, CopyResult]):
    """The skeleton's class and client carry the class name it chose (--class), its `j` command the driver's name."""
    copy = copies["skeleton"].result(timeout=2 * SUITE_TIMEOUT)
    source = copy.path / "src" / package(copy.name)
    assert "class LabSkeletonPDU(Driver):" in (source / "driver.py").read_text()
    assert "class LabSkeletonPDUClient(BaseClient):" in (source / "client.py").read_text()
    assert list(yaml.safe_load((copy.path / "examples" / "exporter.yaml").read_text())["export"]) == [copy.name]


# What a renamed copy's text names, for every selection, renamed in memory (no copy is written or run)


def renamed_in_memory(
    name: str, selection: str | None, class_name: str | None = None
) -> tuple[dict[str, str], list[str]]:
    """The text files of the copy a rename to `name` keeping `selection` makes, by path; and the units kept."""
    template = selfcheck.tree(ROOT)
    new = rename_script["Names"].from_name(name, class_name)
    keep = rename_script["select_units"](selection)
    answers = {"author_name": "A", "author_email": "a@example.com", "description": "D", "examples": [], "name": name}
    plan = rename_script["make_plan"](new, keep, sorted(template), answers, "0000000")
    moved = {source: final for final, (source, _, _) in plan.writes.items()}
    files = {}
    for path, text in template.items():
        if path not in plan.deletes:
            final = moved.get(path, path)
            files[final] = plan.writes[final][2] if final in plan.writes else text
    return files, keep


@functools.cache
def upstream_words() -> frozenset[str]:
    """Every word of the installed Jumpstarter packages' code: names a copy may use without defining them.

    Their tests are left out: a word only they use (`hello`) is no name of Jumpstarter's.
    """
    words: set[str] = set()
    for file in upstream_files():
        if file.suffix == ".py" and not file.name.endswith("_test.py") and "tests" not in file.parts:
            words.update(re.findall(r"[A-Za-z_]\w*", Path(str(file.locate())).read_text(errors="replace")))
    return frozenset(words)


@functools.cache
def upstream_file_names() -> frozenset[str]:
    """The names of the installed Jumpstarter packages' files (`driver.py`, `client.py`, `common.py`...)."""
    return frozenset(file.name for file in upstream_files())


def upstream_files() -> list[importlib.metadata.PackagePath]:
    """The files of the installed Jumpstarter packages (this package aside)."""
    return [
        file
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"].lower().startswith("jumpstarter") and dist.metadata["Name"] != PROVENANCE.split()[-1]
        for file in dist.files or []
    ]


def foreign_names(
    template: dict[str, str], copy: dict[str, str], keep: list[str], name: str, class_name: str | None
) -> set[str]:
    """What the dropped units define (classes, functions, methods, config keys) that the copy defines nowhere.

    Each in the form the rename gives it too: a copy without the skeleton has no `AcmePowerStrip` either.
    Names upstream Jumpstarter uses as well (`on`, `read`, `connect`...) and Python's builtins are left out:
    a copy may name them without having them.
    """
    new = rename_script["Names"].from_name(name, class_name)
    renamed = rename_script["Substituter"](
        rename_script["name_substitutions"](new) + rename_script["text_substitutions"](new)
    )
    dropped: set[str] = set()
    for path, text in template.items():
        unit = rename_script["owner"](path)
        if unit is not None and unit not in keep and path.endswith(".py"):
            defined = selfcheck.defined_names(text)
            dropped |= defined | {renamed(each) for each in defined}
    kept: set[str] = set()
    for path, text in copy.items():
        if path.endswith(".py"):
            kept |= selfcheck.defined_names(text)
    return dropped - kept - upstream_words() - set(dir(builtins))


def dropped_file_mentions(template: dict[str, str], copy: dict[str, str]) -> list[str]:
    """Lines of the copy that name, by its bare name (`base_client.py`), a file of the template the copy has none of.

    A name after `/` is part of a path (dangling_paths checks those), and a link's text to a URL names the
    file there (the template's, at its commit). Names every upstream driver package has (`client.py`) are
    a convention a copy may name without having them.
    """
    kept = {PurePath(path).name for path in copy} | upstream_file_names()
    gone = sorted({PurePath(path).name for path in template} - kept)
    pattern = re.compile(rf"(?<![\w./-])(?:{'|'.join(map(re.escape, gone))})(?![\w-])")
    found = []
    for path, text in copy.items():
        for number, line in enumerate(text.splitlines(), start=1):
            line = re.sub(r"\[[^\]]*\]\(\w+://[^)]*\)", "", line)
            for match in dict.fromkeys(pattern.findall(line)):
                found.append(f"{path}:{number}: names {match}, which this repository does not have")
    return found


@pytest.mark.parametrize("selection", list(SELECTIONS))
def test_renamed_text_names_only_what_the_copy_has(selection: str):
    """No text of a renamed copy names a file, driver, class, method or config key of a unit it dropped.

    Generic: the units and what each defines come from the rename's manifest and the code, not a word list.
    """
    name, examples = SELECTIONS[selection]
    template = selfcheck.tree(ROOT)
    files, keep = renamed_in_memory(name, examples, CLASS_NAMES.get(selection))
    exports = selfcheck.export_names(template) | {name}
    found = selfcheck.dangling_paths(files)
    found += selfcheck.unused_export_uses(files, exports)
    found += selfcheck.dangling_names(files, foreign_names(template, files, keep, name, CLASS_NAMES.get(selection)))
    found += dropped_file_mentions(template, files)
    found += selfcheck.undeclared_imports(files)
    assert found == [], f"{selection}: " + "\n".join(found)


# The units and their markers


def test_units_are_consistent():
    """Every marker names a known unit, every unit owns something that exists, and copier offers every example."""
    tracked = git(ROOT, "ls-files").splitlines()
    for path in tracked:
        text = (ROOT / path).read_text(errors="replace") if (ROOT / path).is_file() else ""
        for unit_list in re.findall(r"\b(?:unit|dropped):([a-z_,]+):(?:start|end)\b", text):
            assert set(unit_list.split(",")) <= set(rename_script["UNITS"]), f"{path}: unknown unit in {unit_list}"
    for unit, (owned, needs) in rename_script["UNITS"].items():
        assert set(needs.split()) <= set(rename_script["UNITS"]), unit
        missing = [path for path in owned.split() if not (ROOT / path).exists()]
        assert missing == [], f"unit {unit} names files that do not exist: {missing}"
    copier = yaml.safe_load((ROOT / "copier.yml").read_text())
    assert copier["examples"]["choices"] == EXAMPLES == copier["examples"]["default"]
    owners = {}
    for unit, (owned, _) in rename_script["UNITS"].items():
        for path in owned.split():
            assert path not in owners, f"{path} is owned by {owners[path]} and {unit}"
            owners[path] = unit


# Names and units that cannot work


@pytest.fixture(scope="module")
def template_tree() -> Iterator[Path]:
    """A committed copy of the template, shared by tests that must leave it unchanged."""
    with tempfile.TemporaryDirectory(prefix="template-test-") as tmp:
        yield copy_template(Path(tmp) / "template")


@pytest.fixture
def scratch_tree() -> Iterator[Path]:
    """A committed copy of the template that a test may change."""
    with tempfile.TemporaryDirectory(prefix="template-test-") as tmp:
        yield copy_template(Path(tmp) / "template")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Acme", "has uppercase letters"),
        ("acme_power", "has an underscore"),
        ("1acme", "does not start with a letter"),
        ("acme--power", "has a double hyphen"),
        ("acme-", "ends with a hyphen"),
        ("acme.power", "has characters other than"),
        ("template", "the template's own name"),
        ("", "the name is empty"),
        ("jumpstarter-driver-", "only the prefix"),
        ("power", "one of Jumpstarter's own driver packages"),
        ("composite", "one of Jumpstarter's own driver packages"),
        ("pyserial", "one of Jumpstarter's own driver packages"),
        ("jumpstarter-driver-opendal", "one of Jumpstarter's own driver packages"),
        ("custom", "the name of one of the template's example units"),
        ("driver", "the driver class Driver would clash with Driver"),
        ("base", "the driver class Base would clash with BaseClient"),
    ],
)
def test_rejected_name_exits_2_and_changes_nothing(template_tree: Path, name: str, reason: str):
    """A name that cannot work exits 2 with a message saying why and what a valid name looks like; nothing changes."""
    before = snapshot(template_tree)
    result = rename(template_tree, "--", name)
    assert snapshot(template_tree) == before
    assert result.returncode == 2, explain(result)
    assert "invalid driver name" in result.stderr and reason in result.stderr, result.stderr
    assert VALID_NAME_HINT in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("examples", ["skeleton,nope", "", "Power"])
def test_unknown_example_unit_exits_2_and_changes_nothing(template_tree: Path, examples: str):
    """An unknown unit name (or none at all) exits 2, listing the units, and changes nothing."""
    before = snapshot(template_tree)
    result = rename(template_tree, "acme", "--examples", examples)
    assert snapshot(template_tree) == before
    assert result.returncode == 2, explain(result)
    assert f"choose from {', '.join(EXAMPLES)}" in result.stderr


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("Bad_Name", "bad-name"),
        ("acme.power strip", "acme-power-strip"),
        ("jumpstarter-driver-Acme_X", "acme-x"),
        ("Caf\u00e9 Relay", "cafe-relay"),
        ("Power", "my-power"),
        ("42-composite", "my-composite"),
    ],
)
def test_rejected_name_suggests_a_valid_one(name: str, suggestion: str):
    """The name suggested for an invalid one has every rule applied at once, so it is itself accepted."""
    with pytest.raises(rename_script["RenameError"], match=f"; use '{re.escape(suggestion)}'\\.\n") as raised:
        rename_script["validate_name"](name)
    assert raised.value.status == 2
    assert rename_script["validate_name"](suggestion) == suggestion


@pytest.mark.parametrize(
    ("class_name", "reason"),
    [
        ("netPdu", "does not start with an uppercase letter"),
        ("Net-Pdu", "is not a Python identifier"),
        ("Net Pdu", "is not a Python identifier"),
        ("Caf\u00e9", "is not a Python identifier"),
        ("9Pdu", "is not a Python identifier"),
        ("None", "is a Python keyword"),
        ("", "the class name is empty"),
        ("NetPduClient", "ends with 'Client'"),
        ("Driver", "the driver class Driver would clash with Driver"),
        ("Base", "the driver class Base would clash with BaseClient"),
    ],
)
def test_rejected_class_name_exits_2_and_changes_nothing(template_tree: Path, class_name: str, reason: str):
    """--class refuses what is not a CapWords identifier, or a name the package's code uses; nothing changes."""
    before = snapshot(template_tree)
    result = rename(template_tree, "net-pdu", f"--class={class_name}")
    assert snapshot(template_tree) == before
    assert result.returncode == 2, explain(result)
    assert "invalid class name" in result.stderr and reason in result.stderr, result.stderr
    assert "A valid class name is a Python identifier in CapWords" in result.stderr
    assert result.stdout == ""


def test_class_option_names_the_skeleton_and_its_client(scratch_tree: Path):
    """--class NetPDU names the skeleton NetPDU and its client NetPDUClient; the `j` command keeps the driver name."""
    result = rename(scratch_tree, "net-pdu", "--class", "NetPDU", "--examples", "skeleton", "--commit", "0000000")
    assert result.returncode == 0, explain(result)
    source = scratch_tree / "src" / "jumpstarter_driver_net_pdu"
    assert "class NetPDU(Driver):" in (source / "driver.py").read_text()
    assert '"jumpstarter_driver_net_pdu.client.NetPDUClient"' in (source / "driver.py").read_text()
    assert "class NetPDUClient(BaseClient):" in (source / "client.py").read_text()
    entry_points = tomllib.loads((scratch_tree / "pyproject.toml").read_text())["project"]["entry-points"]
    assert entry_points["jumpstarter.drivers"] == {"NetPDU": "jumpstarter_driver_net_pdu.driver:NetPDU"}
    exporter = yaml.safe_load((scratch_tree / "examples" / "exporter.yaml").read_text())["export"]
    assert exporter == {"net-pdu": exporter["net-pdu"]}
    assert exporter["net-pdu"]["type"] == "jumpstarter_driver_net_pdu.driver.NetPDU"
    assert "NetPdu" not in "".join(p.read_text(errors="replace") for p in scratch_tree.rglob("*.py"))
    assert yaml.safe_load((scratch_tree / ".copier-answers.yml").read_text())["class_name"] == "NetPDU"


def test_board_alone_keeps_the_device_it_needs():
    """Selecting a unit keeps the units it needs, and the support modules of all of them."""
    keep = rename_script["select_units"]("board")
    assert {"board", "device"} <= set(keep)
    assert "power" not in keep and "custom" not in keep


def test_dry_run_changes_nothing(template_tree: Path):
    """--dry-run prints the derived names and the planned changes, and changes nothing."""
    before = snapshot(template_tree)
    result = rename(template_tree, "--dry-run", "usb3-hub", "--examples", "skeleton")
    assert snapshot(template_tree) == before
    assert result.returncode == 0, explain(result)
    assert "to jumpstarter-driver-usb3-hub (import package jumpstarter_driver_usb3_hub, CamelCase Usb3Hub)" in (
        result.stdout
    )
    assert "move     src/jumpstarter_driver_template/driver.py -> src/jumpstarter_driver_usb3_hub/driver.py" in (
        result.stdout
    )
    assert "delete   scripts/rename.py" in result.stdout
    assert "delete   src/jumpstarter_driver_template/custom/driver.py" in result.stdout


def test_uncommitted_changes_are_refused_unless_forced(scratch_tree: Path):
    """A tree with uncommitted changes is refused and left as it is; --force renames it, keeping the change."""
    readme = scratch_tree / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8") + "\nSee jumpstarter_driver_template.driver.\n")
    before = snapshot(scratch_tree)
    refused = rename(scratch_tree, "acme")
    assert snapshot(scratch_tree) == before
    assert refused.returncode == 1, explain(refused)
    assert "uncommitted changes" in refused.stderr and "README.md" in refused.stderr

    forced = rename(scratch_tree, "--force", "acme", "--commit", "0000000")
    assert forced.returncode == 0, explain(forced)
    assert readme.read_text(encoding="utf-8").endswith("\nSee jumpstarter_driver_acme.driver.\n")


def test_renamed_tree_is_refused(scratch_tree: Path):
    """The script refuses to run again on a renamed project (copier update is the way to take template changes)."""
    assert rename(scratch_tree, "acme", "--commit", "0000000").returncode == 0
    git(scratch_tree, "add", "-A")
    git(scratch_tree, "commit", "-q", "-m", "Renamed")
    (scratch_tree / "scripts").mkdir()
    shutil.copy2(SCRIPT, scratch_tree / "scripts" / "rename.py")
    git(scratch_tree, "add", "-A")
    git(scratch_tree, "commit", "-q", "-m", "The script again")
    before = snapshot(scratch_tree)
    result = rename(scratch_tree, "other-name")
    assert snapshot(scratch_tree) == before
    assert result.returncode == 1, explain(result)
    assert "not jumpstarter-driver-template anymore" in result.stderr and "copier update" in result.stderr


def test_unbalanced_marker_is_refused_before_any_change(scratch_tree: Path):
    """A block without its end stops the rename with the file and line, changing nothing."""
    readme = scratch_tree / "README.md"
    lines = readme.read_text(encoding="utf-8").splitlines()
    readme.write_text("\n".join([*lines, "<!-- unit:power:start -->", "unfinished"]) + "\n")
    git(scratch_tree, "commit", "-q", "-am", "An unbalanced marker")
    before = snapshot(scratch_tree)
    result = rename(scratch_tree, "acme", "--commit", "0000000")
    assert snapshot(scratch_tree) == before
    assert result.returncode == 1, explain(result)
    assert f"README.md:{len(lines) + 1}: a unit:power block without its end" in result.stderr


def test_run_from_outside_the_tree_is_refused(template_tree: Path):
    """Called from another directory, the script refuses rather than rename the copy it belongs to."""
    before = snapshot(template_tree)
    result = run([sys.executable, str(template_tree / "scripts" / "rename.py"), "acme"], template_tree.parent)
    assert snapshot(template_tree) == before
    assert result.returncode == 1, explain(result)
    assert f"cd {template_tree.resolve()}" in result.stderr


def test_tree_outside_git_is_refused(tmp_path: Path):
    """Without git metadata the script cannot tell the project's files, so it refuses and changes nothing."""
    tree = copy_template(tmp_path / "template", commit=False)
    before = snapshot(tree)
    result = rename(tree, "acme")
    assert snapshot(tree) == before
    assert result.returncode == 1, explain(result)
    assert "not a git work tree" in result.stderr


# copier: generation and updates, from a template repository of two commits


@dataclass
class TemplateRepo:
    """A git repository holding the template as it is (the older commit), then with one change (the newer)."""

    path: Path
    older: str
    newer: str


TEMPLATE_CHANGE = "    # A template change made after the project was generated.\n"


@pytest.fixture(scope="module")
def template_repo() -> Iterator[TemplateRepo]:
    """The template as a repository copier can read: this tree, then a later commit that changes the skeleton."""
    if shutil.which("uvx") is None:
        pytest.skip("uvx is not installed")
    with tempfile.TemporaryDirectory(prefix="template-test-") as tmp:
        repo = copy_template(Path(tmp) / "jumpstarter-driver-template")
        older = git(repo, "rev-parse", "HEAD")
        driver = repo / "src" / "jumpstarter_driver_template" / "driver.py"
        text = driver.read_text()
        driver.write_text(text.replace("    @classmethod\n", TEMPLATE_CHANGE + "    @classmethod\n", 1))
        git(repo, "commit", "-q", "-am", "A template change")
        yield TemplateRepo(repo, older, git(repo, "rev-parse", "HEAD"))


def copier(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run copier as an author would (uvx), without questions."""
    return run(["uvx", "copier", *args, "--trust", "--defaults", "--quiet"], cwd, timeout=STEP_TIMEOUT)


def committed_project(path: Path) -> None:
    """git init and commit a generated project, as its author does."""
    git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "From the template")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ("name=Acme_Relay", "lowercase letters, digits and hyphens"),
        ("examples=[]", "choose at least one"),
        ("class_name=acmeRelay", "a Python identifier in CapWords"),
    ],
)
def test_copier_refuses_malformed_answers_before_copying(template_repo: TemplateRepo, tmp_path: Path, data, problem):
    """copier's own validators refuse a malformed name or no example at once: nothing is generated."""
    answers = ["--vcs-ref", template_repo.newer, "--data", "name=acme-relay", "--data", data]
    made = copier("copy", *answers, str(template_repo.path), "generated", cwd=tmp_path)
    assert made.returncode != 0
    assert problem in made.stderr, explain(made)
    assert not (tmp_path / "generated").exists()


def test_copier_copy_is_the_hand_rename(template_repo: TemplateRepo, tmp_path: Path):
    """`copier copy` asks for the answers and runs the same rename: the same tree as a hand rename, answers aside."""
    data = ["--data", "name=acme-relay", "--data", 'examples=["skeleton","power"]']
    data += ["--data", "author_name=Jane Q. O'Doe", "--data", "description=Relays of the Acme lab"]
    made = copier("copy", "--vcs-ref", template_repo.older, *data, str(template_repo.path), "generated", cwd=tmp_path)
    assert made.returncode == 0, explain(made)
    generated = tmp_path / "generated"
    answers = yaml.safe_load((generated / ".copier-answers.yml").read_text())
    assert answers["_commit"].startswith(template_repo.older[:7]) or answers["_commit"] == template_repo.older[:7]
    assert (answers["name"], answers["examples"]) == ("acme-relay", ["skeleton", "power"])
    pyproject = tomllib.loads((generated / "pyproject.toml").read_text())
    assert pyproject["project"]["authors"] == [{"name": "Jane Q. O'Doe", "email": "you@example.com"}]
    assert pyproject["project"]["description"] == "Relays of the Acme lab"

    by_hand = tmp_path / "by-hand"
    run(["git", "clone", "-q", str(template_repo.path), str(by_hand)], tmp_path)
    git(by_hand, "checkout", "-q", template_repo.older)
    hand = run(
        [sys.executable, "scripts/rename.py", "acme-relay", "--examples", "skeleton,power", "--author-name",
         "Jane Q. O'Doe", "--description", "Relays of the Acme lab", "--template-source", str(template_repo.path)],
        by_hand,
    )  # fmt: skip
    assert hand.returncode == 0, explain(hand)
    ours, theirs = snapshot(generated), snapshot(by_hand)
    for tree in (ours, theirs):
        tree.pop(":git status", None)
        tree.pop(".copier-answers.yml")
    assert ours == theirs
    hand_answers = yaml.safe_load((by_hand / ".copier-answers.yml").read_text())
    assert {k: v for k, v in hand_answers.items() if k != "_commit"} == {
        k: v for k, v in answers.items() if k != "_commit"
    }
    assert hand_answers["_commit"].startswith(template_repo.older[:7])


@pytest.mark.parametrize("way_in", ["copier copy", "use this template"])
def test_copier_update_merges_template_changes(template_repo: TemplateRepo, tmp_path: Path, way_in: str):
    """A project generated from an older template, with an edit of its own, takes a later template change.

    Either way in (copier copy, or "Use this template" and a hand rename, which finds the template commit
    by its tree), `copier update` keeps the author's edit, brings the template's change, shows no conflict
    marker, and merges into the renamed package instead of nesting a new one.
    """
    project = tmp_path / "project"
    if way_in == "copier copy":
        data = ["--data", "name=acme-relay", "--data", 'examples=["skeleton"]']
        made = copier(
            "copy", "--vcs-ref", template_repo.older, *data, str(template_repo.path), str(project), cwd=tmp_path
        )
        assert made.returncode == 0, explain(made)
        committed_project(project)
    else:  # GitHub's "Use this template": a new repository whose first commit has the template's files
        clone = tmp_path / "clone"
        run(["git", "clone", "-q", str(template_repo.path), str(clone)], tmp_path)
        git(clone, "checkout", "-q", template_repo.older)
        shutil.rmtree(clone / ".git")
        shutil.copytree(clone, project)
        committed_project(project)
        renamed = run(
            [sys.executable, "scripts/rename.py", "acme-relay", "--examples", "skeleton",
             "--template-source", str(template_repo.path)],
            project,
        )  # fmt: skip
        assert renamed.returncode == 0, explain(renamed)
        answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
        assert answers["_commit"].startswith(template_repo.older[:7]), answers
        git(project, "add", "-A")
        git(project, "commit", "-q", "-m", "Renamed")

    driver = project / "src" / "jumpstarter_driver_acme_relay" / "driver.py"
    edited = driver.read_text().replace('default="Hello"', 'default="Howdy"')
    assert edited != driver.read_text()
    driver.write_text(edited)
    (project / "src" / "jumpstarter_driver_acme_relay" / "mine.py").write_text('"""A module of the author\'s."""\n')
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "My greeting")

    updated = copier("update", "--vcs-ref", template_repo.newer, cwd=project)
    assert updated.returncode == 0, explain(updated)
    text = driver.read_text()
    assert 'default="Howdy"' in text  # the author's edit stays
    assert TEMPLATE_CHANGE in text  # the template's change arrives
    assert (project / "src" / "jumpstarter_driver_acme_relay" / "mine.py").exists()
    status = git(project, "status", "--porcelain")
    conflicts = [
        f"{path}: {line}"
        for path in project_files(project)
        for line in (project / path).read_text(errors="replace").splitlines()
        if line.startswith(("<<<<<<<", ">>>>>>>"))
    ]
    assert conflicts == [], status
    assert not (project / "src" / "jumpstarter_driver_template").exists()
    assert not (project / "src" / "jumpstarter_driver_acme_relay" / "jumpstarter_driver_acme_relay").exists()
    assert not (project / "scripts").exists()
    assert not list(project.rglob("*.rej"))
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"].startswith(template_repo.newer[:7])
    # What the update changed: the driver (merged) and the answers file; no template-only text came back.
    changed = git(project, "diff", "--name-only", "HEAD").splitlines()
    changed += git(project, "ls-files", "--others", "--exclude-standard").splitlines()
    # docs/writing-drivers.md links the dropped examples' files at the template commit: the newer one now.
    assert sorted(changed) == [
        ".copier-answers.yml",
        "docs/writing-drivers.md",
        "src/jumpstarter_driver_acme_relay/driver.py",
    ], status
    assert f"blob/{template_repo.newer}/" in (project / "docs" / "writing-drivers.md").read_text()


def test_wheel_of_a_copy_holds_only_its_package(copies: dict[str, CopyResult]):
    """The renamed wheel holds the new package only."""
    copy = copies["default"].result(timeout=2 * SUITE_TIMEOUT)
    failed = [step for step, result in copy.checks.items() if result.returncode != 0]
    assert "build" in copy.checks and not failed, f"the copy's wheel was not built: {failed} failed first"
    (wheel,) = (copy.path.parent / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert all(name.startswith((f"{package(copy.name)}/", f"{package(copy.name)}-")) for name in names), names


@pytest.mark.parametrize("unit", [unit for unit in EXAMPLES if unit != "skeleton"])
def test_each_example_doc_says_how_to_drop_it(unit: str):
    """An example's doc lists everything its unit owns, so an author can drop it by hand after the rename."""
    section = (ROOT / "docs" / f"{unit}.md").read_text().partition("## Dropping this example")[2]
    assert section, f"docs/{unit}.md has no 'Dropping this example' section"
    text = " ".join(section.split())
    owned = [path for path in rename_script["UNITS"][unit][0].split() if (ROOT / path).exists()]
    missing = [path for path in owned if path != f"docs/{unit}.md" and f"`{path}`" not in text]
    block = rf"unit:(?:[a-z_]+,)*{unit}(?:,[a-z_]+)*:start(.*?)unit:(?:[a-z_,]+):end"
    pyproject = "".join(re.findall(block, (ROOT / "pyproject.toml").read_text(), re.S))
    missing += [name for name in re.findall(r"^(\w+) = ", pyproject, re.M) if f"`{name}`" not in text]
    exporter = "".join(re.findall(block, (ROOT / "examples" / "exporter.yaml").read_text(), re.S))
    missing += [f"{key}:" for key in re.findall(r"^  (\w[\w-]*):", exporter, re.M) if f"`{key}:`" not in text]
    marked = git(ROOT, "grep", "-l", "-E", rf"unit:([a-z_]+,)*{unit}(,[a-z_]+)*:start").splitlines()
    missing += [path for path in marked if path != "tests/template_test.py" and f"`{path}`" not in text]
    assert missing == [], f"docs/{unit}.md does not say to remove {missing}"
