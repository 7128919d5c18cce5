"""scripts/rename.py turns a copy of the template into a working package of another name.

Template-only: the rename deletes this module with the script.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "rename.py"
NEW_NAME = "acme-power-strip"
NEW_DISTRIBUTION = "jumpstarter-driver-acme-power-strip"
NEW_PACKAGE = "jumpstarter_driver_acme_power_strip"
PROVENANCE = "Generated from jumpstarter-driver-template"
VALID_NAME_HINT = "lowercase letters, digits and single hyphens, starting with a letter"
# A renamed project's own suite may include end-to-end tests that start exporters: be generous.
SUITE_TIMEOUT = 1200
STEP_TIMEOUT = 600

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


def run(args: list[str], cwd: Path, timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a command in cwd with an environment of its own (its own uv project, no outer pytest settings)."""
    drop = ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST", "PYTHONPATH")
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env["TERM"] = "dumb"  # no progress bars from Jumpstarter
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def explain(result: subprocess.CompletedProcess[str]) -> str:
    """The end of a command's output, for an assertion message."""
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"


def git(cwd: Path, *args: str) -> str:
    """Run git in cwd with a fixed identity and no hooks, and return its output."""
    config = ["-c", "user.name=rename test", "-c", "user.email=rename-test@example.invalid"]
    config += ["-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null", "-c", "init.defaultBranch=main"]
    result = run(["git", *config, *args], cwd)
    assert result.returncode == 0, explain(result)
    return result.stdout


def copy_template(dest: Path, commit: bool = True) -> None:
    """Copy the files git tracks here (as they are on disk) to dest, and commit them in a new repository."""
    dest.mkdir(parents=True)
    for path in git(ROOT, "ls-files", "-z").split("\0"):
        source = ROOT / path
        if path and source.is_file():
            (dest / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / path)
    if commit:
        git(dest, "init", "-q")
        git(dest, "add", "-A")
        git(dest, "commit", "-q", "-m", "The template, as committed")


def project_files(tree: Path) -> list[str]:
    """The files of a project tree: tracked, plus untracked ones that are not ignored."""
    listed = git(tree, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    return sorted(path for path in set(listed) if path and (tree / path).is_file())


def snapshot(tree: Path) -> dict[str, str]:
    """Hash of every file under tree (git metadata and caches excluded), plus `git status`."""
    hashes = {}
    for path in sorted(tree.rglob("*")):
        parts = path.relative_to(tree).parts
        if path.is_file() and not {".git", ".venv", "__pycache__"} & set(parts):
            hashes["/".join(parts)] = hashlib.sha256(path.read_bytes()).hexdigest()
    hashes[":git status"] = git(tree, "status", "--porcelain")
    return hashes


def rename(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the tree's own copy of the rename script."""
    return run([sys.executable, "scripts/rename.py", *args], tree)


@dataclass
class Renamed:
    """A copy of the template renamed to acme-power-strip, with its environment synced."""

    path: Path
    output: str


@pytest.fixture(scope="module")
def script() -> dict[str, Any]:
    """The rename script's functions, loaded without running it (it is standard library only)."""
    return runpy.run_path(str(SCRIPT))


@pytest.fixture(scope="module")
def renamed() -> Iterator[Renamed]:
    """Rename a copy of the template and sync its environment, once for the module."""
    if shutil.which("uv") is None:
        pytest.skip("uv is not installed")
    with tempfile.TemporaryDirectory(prefix="rename-test-", ignore_cleanup_errors=True) as tmp:
        path = Path(tmp) / NEW_DISTRIBUTION
        copy_template(path)
        result = rename(path, NEW_NAME)
        assert result.returncode == 0, explain(result)
        sync = run(["uv", "sync"], path)  # a venv of the copy's own; packages come from uv's cache
        assert sync.returncode == 0, explain(sync)
        yield Renamed(path=path, output=result.stdout)


@pytest.fixture(scope="module")
def template_tree() -> Iterator[Path]:
    """A committed copy of the template, shared by tests that must leave it unchanged."""
    with tempfile.TemporaryDirectory(prefix="rename-test-") as tmp:
        path = Path(tmp) / "template"
        copy_template(path)
        yield path


@pytest.fixture
def scratch_tree() -> Iterator[Path]:
    """A committed copy of the template that a test may change."""
    with tempfile.TemporaryDirectory(prefix="rename-test-") as tmp:
        path = Path(tmp) / "template"
        copy_template(path)
        yield path


def test_renamed_tree_has_no_template_name_left(renamed: Renamed) -> None:
    """No file or path of the renamed project mentions the template, except the README's provenance line."""
    leftovers = []
    for path in project_files(renamed.path):
        if re.search("template", path, re.IGNORECASE):
            leftovers.append(path)
        text = (renamed.path / path).read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            if re.search("template", line, re.IGNORECASE) and not (path == "README.md" and PROVENANCE in line):
                leftovers.append(f"{path}:{number}: {line}")
    assert leftovers == []
    assert "still mention" not in renamed.output


def test_renamed_tree_drops_template_only_parts(renamed: Renamed) -> None:
    """The script, its test, the README's template sections and every marker are gone; the package moved."""
    assert not (renamed.path / "scripts").exists()
    assert not (renamed.path / "tests" / "rename_test.py").exists()
    assert not (renamed.path / "src" / "jumpstarter_driver_template").exists()
    assert (renamed.path / "src" / NEW_PACKAGE / "driver.py").is_file()
    readme = (renamed.path / "README.md").read_text(encoding="utf-8")
    assert readme.splitlines()[0] == f"# {NEW_DISTRIBUTION}"
    assert readme.count(PROVENANCE) == 1
    assert "scripts/rename.py" not in readme
    for path in project_files(renamed.path):
        text = (renamed.path / path).read_bytes().decode("utf-8", errors="replace")
        assert not re.search(r"(template|renamed)-only:", text), path


def test_renamed_tree_is_ruff_clean(renamed: Renamed) -> None:
    """The renamed project passes `ruff check` and `ruff format --check`."""
    check = run(["uv", "run", "ruff", "check", "."], renamed.path)
    assert check.returncode == 0, explain(check)
    formatted = run(["uv", "run", "ruff", "format", "--check", "."], renamed.path)
    assert formatted.returncode == 0, explain(formatted)


def test_renamed_tree_test_suite_passes(renamed: Renamed) -> None:
    """The renamed project's whole test suite passes in its own environment."""
    result = run(["uv", "run", "pytest", "-q", "-p", "no:cacheprovider"], renamed.path, timeout=SUITE_TIMEOUT)
    assert result.returncode == 0, explain(result)
    assert re.search(r"\d+ passed", result.stdout), explain(result)


def test_renamed_wheel_entry_points_and_client_paths_import(renamed: Renamed) -> None:
    """The renamed wheel registers its drivers under the new package, and they and their clients import."""
    dist = renamed.path / "dist"
    build = run(["uv", "build", "--out-dir", str(dist)], renamed.path)
    assert build.returncode == 0, explain(build)
    (wheel,) = dist.glob(f"{NEW_PACKAGE}-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (entry_points_file,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        entry_points = archive.read(entry_points_file).decode()
    assert all(name.startswith((f"{NEW_PACKAGE}/", f"{NEW_PACKAGE}-")) for name in names), names
    assert "template" not in entry_points

    pyproject = tomllib.loads((renamed.path / "pyproject.toml").read_text(encoding="utf-8"))
    declared = pyproject["project"]["entry-points"]["jumpstarter.drivers"]
    assert declared and all(value.startswith(f"{NEW_PACKAGE}.") for value in declared.values()), declared

    venv = renamed.path.parent / "wheel-venv"
    created = run(["uv", "venv", "-q", "--python", sys.executable, str(venv)], renamed.path.parent)
    assert created.returncode == 0, explain(created)
    installed = run(["uv", "pip", "install", "-q", "--python", str(venv), str(wheel)], renamed.path.parent)
    assert installed.returncode == 0, explain(installed)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    result = run(
        [str(python), "-c", IMPORT_CHECK, NEW_DISTRIBUTION], renamed.path.parent
    )  # not in the copy: only the wheel is importable
    assert result.returncode == 0, explain(result)
    found = json.loads(result.stdout)
    assert {name: value[0] for name, value in found.items()} == declared
    client_paths = [client_path for _, client_path, _ in found.values()]
    assert any(path.startswith(f"{NEW_PACKAGE}.client.") for path in client_paths), client_paths
    assert not any("template" in path for path in client_paths), client_paths


def test_renamed_drivers_are_listed_and_served_under_the_new_module(renamed: Renamed) -> None:
    """`jmp driver list` shows the new module path, and `jmp shell` serves the renamed example exporter."""
    listed = run(["uv", "run", "jmp", "driver", "list"], renamed.path)
    assert listed.returncode == 0, explain(listed)
    assert f"{NEW_PACKAGE}.driver.ExamplePower" in listed.stdout, explain(listed)
    assert "template" not in listed.stdout

    uploads = Path("/tmp") / NEW_DISTRIBUTION  # the example exporter's upload_dir
    existed = uploads.exists()
    try:
        # Local-mode `jmp shell` exits 0 even when the command fails (Jumpstarter 0.9): check the output.
        command = "j power on && j power read -n 1 -i 0"
        shell = ["uv", "run", "jmp", "shell", "--exporter-config", "examples/exporter.yaml", "--", "sh", "-c", command]
        result = run(shell, renamed.path, timeout=120)
    finally:
        if not existed:
            shutil.rmtree(uploads, ignore_errors=True)
    assert "voltage=" in result.stdout, explain(result)


def test_rename_refuses_a_tree_already_renamed(renamed: Renamed) -> None:
    """The script refuses to run again on a renamed project, and changes nothing."""
    scripts = renamed.path / "scripts"
    scripts.mkdir()
    try:
        shutil.copy2(SCRIPT, scripts / "rename.py")
        before = snapshot(renamed.path)
        result = rename(renamed.path, "other-name")
        assert snapshot(renamed.path) == before
    finally:
        shutil.rmtree(scripts)
    assert result.returncode == 1, explain(result)
    assert "not jumpstarter-driver-template anymore" in result.stderr


@pytest.mark.parametrize(
    "name",
    [
        "Acme",
        "acme_power",
        "1acme",
        "acme--power",
        "acme-",
        "-acme",
        "template",
        "",
        "jumpstarter-driver-template",
        "jumpstarter-driver-",
        "acme.power",
    ],
)
def test_rejected_name_exits_2_and_changes_nothing(template_tree: Path, name: str) -> None:
    """An invalid name exits 2 with a message saying what a valid name looks like; the tree is unchanged."""
    before = snapshot(template_tree)
    result = rename(template_tree, "--", name)
    assert snapshot(template_tree) == before
    assert result.returncode == 2, explain(result)
    assert "invalid driver name" in result.stderr
    assert VALID_NAME_HINT in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("Bad_Name", "bad-name"),
        ("Acme", "acme"),
        ("acme_power", "acme-power"),
        ("1acme", "acme"),
        ("42-acme", "acme"),
        ("acme--power", "acme-power"),
        ("-acme-", "acme"),
        ("acme.power strip", "acme-power-strip"),
        ("jumpstarter-driver-Acme_X", "acme-x"),
        ("Caf\u00e9 Relay", "cafe-relay"),
    ],
)
def test_rejected_name_suggests_a_valid_one(script: dict[str, Any], name: str, suggestion: str) -> None:
    """The name suggested for an invalid one has every rule applied at once, so it is itself accepted."""
    with pytest.raises(script["RenameError"], match=f"; use '{re.escape(suggestion)}'\\.\n") as raised:
        script["validate_name"](name)
    assert raised.value.status == 2
    assert script["validate_name"](suggestion) == suggestion


@pytest.mark.parametrize("name", ["", "123", "_", "---", "Template", "my_template", "jumpstarter-driver-"])
def test_rejected_name_without_a_valid_neighbour_suggests_nothing(script: dict[str, Any], name: str) -> None:
    """When applying the rules leaves no valid name, the error explains the rules and suggests nothing."""
    with pytest.raises(script["RenameError"], match="invalid driver name") as raised:
        script["validate_name"](name)
    assert "use '" not in str(raised.value)
    assert VALID_NAME_HINT in str(raised.value)


@pytest.mark.parametrize(
    ("name", "distribution", "package", "camel"),
    [
        (
            "acme-power-strip",
            "jumpstarter-driver-acme-power-strip",
            "jumpstarter_driver_acme_power_strip",
            "AcmePowerStrip",
        ),
        ("jumpstarter-driver-relay", "jumpstarter-driver-relay", "jumpstarter_driver_relay", "Relay"),
        ("usb3-hub", "jumpstarter-driver-usb3-hub", "jumpstarter_driver_usb3_hub", "Usb3Hub"),
    ],
)
def test_dry_run_derives_names_and_changes_nothing(
    template_tree: Path, name: str, distribution: str, package: str, camel: str
) -> None:
    """--dry-run prints the derived names and the planned changes, and changes nothing."""
    before = snapshot(template_tree)
    result = rename(template_tree, "--dry-run", name)
    assert snapshot(template_tree) == before
    assert result.returncode == 0, explain(result)
    assert f"to {distribution} (import package {package}, CamelCase {camel})" in result.stdout
    assert f"move     src/jumpstarter_driver_template -> src/{package}" in result.stdout
    assert "delete   scripts/rename.py" in result.stdout


def test_uncommitted_changes_are_refused_unless_forced(scratch_tree: Path) -> None:
    """A tree with uncommitted changes is refused and left as it is; --force renames it, keeping the change."""
    readme = scratch_tree / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8") + "\nSee jumpstarter_driver_template.driver.\n")
    before = snapshot(scratch_tree)
    refused = rename(scratch_tree, NEW_NAME)
    assert snapshot(scratch_tree) == before
    assert refused.returncode == 1, explain(refused)
    assert "uncommitted changes" in refused.stderr
    assert "README.md" in refused.stderr

    forced = rename(scratch_tree, "--force", NEW_NAME)
    assert forced.returncode == 0, explain(forced)
    assert readme.read_text(encoding="utf-8").endswith(f"\nSee {NEW_PACKAGE}.driver.\n")
    assert (scratch_tree / "src" / NEW_PACKAGE).is_dir()


def test_unbalanced_marker_is_refused_before_any_change(scratch_tree: Path) -> None:
    """A template-only block without its end stops the rename with the file and line, changing nothing."""
    readme = scratch_tree / "README.md"
    lines = readme.read_text(encoding="utf-8").splitlines()
    readme.write_text("\n".join([*lines, "<!-- template-only:start -->", "unfinished"]) + "\n")
    git(scratch_tree, "commit", "-q", "-am", "An unbalanced marker")
    before = snapshot(scratch_tree)
    result = rename(scratch_tree, NEW_NAME)
    assert snapshot(scratch_tree) == before
    assert result.returncode == 1, explain(result)
    assert f"README.md:{len(lines) + 1}: template-only:start without a template-only:end" in result.stderr


def test_run_from_outside_the_tree_is_refused(template_tree: Path) -> None:
    """Called from another directory, the script refuses rather than rename the copy it belongs to."""
    before = snapshot(template_tree)
    result = run([sys.executable, str(template_tree / "scripts" / "rename.py"), NEW_NAME], template_tree.parent)
    assert snapshot(template_tree) == before
    assert result.returncode == 1, explain(result)
    assert f"cd {template_tree.resolve()}" in result.stderr


def test_tree_outside_git_is_refused() -> None:
    """Without git metadata the script cannot tell the project's files, so it refuses and changes nothing."""
    with tempfile.TemporaryDirectory(prefix="rename-test-") as tmp:
        tree = Path(tmp) / "template"
        copy_template(tree, commit=False)
        before = {path: path.read_bytes() for path in tree.rglob("*") if path.is_file()}
        result = rename(tree, NEW_NAME)
        assert {path: path.read_bytes() for path in tree.rglob("*") if path.is_file()} == before
    assert result.returncode == 1, explain(result)
    assert "not a git work tree" in result.stderr


def test_stale_environment_gets_a_uv_sync_hint(scratch_tree: Path) -> None:
    """A .venv that still has the template's package (uv run keeps it) makes the script say to run `uv sync`."""
    site = scratch_tree / ".venv" / "lib" / "python3.11" / "site-packages"
    (site / "jumpstarter_driver_template-0.0.0.dist-info").mkdir(parents=True)
    result = rename(scratch_tree, NEW_NAME)
    assert result.returncode == 0, explain(result)
    assert "run `uv sync`" in result.stdout
