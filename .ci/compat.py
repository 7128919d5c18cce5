#!/usr/bin/env python3
"""Run the test suite against the newest Jumpstarter, so a break shows up before users hit it.

    python3 .ci/compat.py release   # the newest Jumpstarter release on PyPI, upper bounds lifted
    python3 .ci/compat.py main      # upstream main, built from git
    python3 .ci/compat.py main --source ~/src/jumpstarter --ref my-branch -- -x   # pytest arguments after --

`release` installs the package (editable) and its dev dependency group into a fresh virtual environment,
with a uv overrides file that replaces every jumpstarter* requirement of pyproject.toml by its lower bound
alone (`jumpstarter>=0.9.0,<0.10` becomes `jumpstarter>=0.9.0`), so uv picks the newest release.

`main` clones upstream (tags included: the packages take their versions from them), builds wheels of
hatch-pin-jumpstarter (a build requirement of the others) and of every jumpstarter* package this project
needs, directly or through another jumpstarter* package, then installs like `release`, with those wheels
pinned by overrides.

Either way the tests run with that environment's `jmp` and `j`, and the script exits with pytest's status.
It changes nothing in the repository, and pyproject.toml keeps its ranges: `uv run pytest` and .ci/run stay
on them. It is what .github/workflows/compat.yml runs; standard library only (Python 3.11+), plus uv and git.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = "https://github.com/jumpstarter-dev/jumpstarter"
PACKAGES = "python/packages"  # where the monorepo keeps its Python packages
BUILD_PLUGIN = "hatch-pin-jumpstarter"
# Test modules that say nothing about the newest Jumpstarter, each with the reason.
IGNORED: list[str] = []
# template-only:start
# The rename test renames copies and runs each copy's suite in an environment that `uv sync` makes from the
# copy's pyproject.toml: on the pinned ranges, not on this environment. Here it would test 0.9 again, for
# many minutes.
IGNORED.append("tests/template_test.py")
# template-only:end
NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def normalize(name: str) -> str:
    """A distribution name in its normalized form (PEP 503): Jumpstarter_CLI -> jumpstarter-cli."""
    return re.sub(r"[-_.]+", "-", name).lower()


def split_requirement(requirement: str) -> tuple[str, str, list[str]]:
    """A PEP 508 requirement's normalized name, extras and version clauses (markers are dropped)."""
    match = NAME_RE.match(requirement.split(";", 1)[0])
    if match is None:
        raise SystemExit(f"compat: cannot parse the requirement {requirement!r}")
    name, extras, rest = match.groups()
    clauses = [clause.strip() for clause in rest.strip().strip("()").split(",") if clause.strip()]
    return normalize(name), extras or "", clauses


def jumpstarter_requirements(pyproject: dict[str, Any]) -> dict[str, list[str]]:
    """The jumpstarter* requirements of the project and its dev group: name -> version clauses."""
    requirements = list(pyproject["project"].get("dependencies", []))
    requirements += [r for r in pyproject.get("dependency-groups", {}).get("dev", []) if isinstance(r, str)]
    found: dict[str, list[str]] = {}
    for requirement in requirements:
        name, _, clauses = split_requirement(requirement)
        if name.startswith("jumpstarter"):
            found.setdefault(name, []).extend(clauses)
    return found


def lower_bounds(clauses: list[str]) -> str:
    """The clauses that do not cap the version (>=, >, !=), comma-separated."""
    return ",".join(clause for clause in clauses if re.match(r"(>=|>|!=)", clause))


def run(*args: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None, capture: bool = False) -> str:
    """Run a command, its output shown (or captured and returned); stop the script if it fails."""
    print("+", " ".join(map(str, args)), flush=True)
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, text=True, stdout=subprocess.PIPE if capture else None, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"compat: {args[0]} {args[1] if len(args) > 1 else ''} failed with status {result.returncode}")
    return result.stdout or ""


def uv() -> str:
    """The uv executable; stop with a message if there is none."""
    found = os.environ.get("UV") or shutil.which("uv")
    if found is None:
        raise SystemExit("compat: uv is needed (https://docs.astral.sh/uv/)")
    return found


def release_overrides(requirements: dict[str, list[str]]) -> list[str]:
    """Overrides for `release`: each jumpstarter* requirement without its upper bound."""
    return [f"{name}{lower_bounds(clauses)}" for name, clauses in sorted(requirements.items())]


def upstream_packages(checkout: Path) -> dict[str, tuple[Path, list[str]]]:
    """The monorepo's packages: normalized name -> (directory, the jumpstarter* packages it requires)."""
    packages = {}
    for pyproject_path in sorted((checkout / PACKAGES).glob("*/pyproject.toml")):
        project = tomllib.loads(pyproject_path.read_text())["project"]
        needs = [split_requirement(r)[0] for r in project.get("dependencies", [])]
        jumpstarter = [name for name in needs if name.startswith("jumpstarter")]
        packages[normalize(project["name"])] = (pyproject_path.parent, jumpstarter)
    return packages


def needed(roots: list[str], packages: dict[str, tuple[Path, list[str]]]) -> list[str]:
    """`roots` and every jumpstarter* package they require, directly or not."""
    found: list[str] = []
    pending = list(roots)
    while pending:
        name = pending.pop(0)
        if name in found:
            continue
        if name not in packages:
            raise SystemExit(f"compat: upstream has no package {name} under {PACKAGES}")
        found.append(name)
        pending += packages[name][1]
    return sorted(found)


def main_overrides(requirements: dict[str, list[str]], work: Path, source: str, ref: str) -> tuple[list[str], Path]:
    """Build upstream's wheels at `ref`; return overrides pinning each to the built version, and the wheel directory."""
    checkout, wheels = work / "jumpstarter", work / "wheels"
    # A blobless clone: every commit and tag (hatch-vcs derives the versions from them), contents on demand.
    source_url = Path(source).expanduser().resolve().as_uri() if Path(source).expanduser().is_dir() else source
    run("git", "clone", "--quiet", "--filter=blob:none", "--no-checkout", source_url, checkout)
    run("git", "-C", checkout, "checkout", "--quiet", "--detach", ref)
    print(run("git", "-C", checkout, "log", "-1", "--format=upstream %H (%cd) %s", capture=True).strip())
    run(uv(), "build", "--quiet", "--wheel", "--out-dir", wheels, checkout / PACKAGES / BUILD_PLUGIN)
    packages = upstream_packages(checkout)
    env = dict(os.environ, UV_FIND_LINKS=str(wheels))  # the build requirement comes from the wheel just built
    overrides = []
    for name in needed(sorted(requirements), packages):
        built = set(wheels.glob("*.whl"))
        run(uv(), "build", "--quiet", "--wheel", "--out-dir", wheels, packages[name][0], env=env)
        (wheel,) = set(wheels.glob("*.whl")) - built
        overrides.append(f"{name}=={wheel.name.split('-')[1]}")
    return overrides, wheels


def installed_jumpstarter(python: Path) -> dict[str, str]:
    """The jumpstarter* distributions of an environment, with their versions."""
    listing = json.loads(run(uv(), "pip", "list", "--python", python, "--format", "json", capture=True))
    return {p["name"]: p["version"] for p in listing if normalize(p["name"]).startswith("jumpstarter")}


def summarize(target: str, versions: dict[str, str], status: int) -> None:
    """Print what was tested, and add it to the GitHub job summary when there is one."""
    verdict = "passed" if status == 0 else f"FAILED (pytest exit status {status})"
    lines = [f"### Tests on the newest Jumpstarter ({target}): {verdict}", "", "| package | version |", "| --- | --- |"]
    lines += [f"| {name} | {version} |" for name, version in sorted(versions.items())]
    print("\n".join(lines))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as file:
            file.write("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=["release", "main"], help="the newest release, or upstream main")
    parser.add_argument("--source", default=UPSTREAM, help="main: the upstream repository, URL or local clone")
    parser.add_argument("--ref", default="main", help="main: the branch, tag or commit to build")
    parser.add_argument("--python", default=sys.executable, help="the Python of the test environment")
    parser.add_argument("--workdir", type=Path, help="keep the environment, clone and wheels here (default: removed)")
    parser.epilog = "Arguments after -- go to pytest."
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, pytest_args = parser.parse_args(argv[:split]), argv[split + 1 :]

    requirements = jumpstarter_requirements(tomllib.loads((ROOT / "pyproject.toml").read_text()))
    with tempfile.TemporaryDirectory(prefix="compat-") as tmp:
        work = args.workdir.resolve() if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        install = [uv(), "pip", "install", "--quiet"]
        if args.target == "release":
            overrides = release_overrides(requirements)
        else:
            overrides, wheels = main_overrides(requirements, work, args.source, args.ref)
            install += ["--find-links", str(wheels)]
        (work / "overrides.txt").write_text("\n".join(overrides) + "\n")
        print("overrides:", ", ".join(overrides))

        venv = work / "venv"
        python = venv / "bin" / "python"
        run(uv(), "venv", "--quiet", "--clear", "--python", args.python, venv)
        # Editable, with the dev group (pytest, jumpstarter-cli, -testing...): run from the root, whose
        # pyproject.toml `--group` reads. No lock file: uv resolves the newest versions the overrides allow.
        run(*install, "--python", python, "--overrides", work / "overrides.txt", "-e", ".", "--group", "dev")
        versions = installed_jumpstarter(python)

        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env["UV"] = uv()  # tests/packaging_test.py builds with it
        pytest = [python, "-m", "pytest", "-p", "no:cacheprovider", *(f"--ignore={path}" for path in IGNORED)]
        print("+", " ".join(map(str, [*pytest, *pytest_args])), flush=True)
        status = subprocess.run([*pytest, *pytest_args], cwd=ROOT, env=env, check=False).returncode
        summarize(args.target, versions, status)
        return status


if __name__ == "__main__":
    sys.exit(main())
