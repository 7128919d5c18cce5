"""The wheel and sdist hold what they should, and the wheel installs into an image-like Jumpstarter environment.

The install goes through docker/install-wheel.sh, the step the Dockerfile runs, into a virtual environment
laid out like upstream's image: a venv already holding the Jumpstarter release the Dockerfile builds on.
The long description (README.md) renders as PyPI renders it, and links nowhere PyPI cannot follow.
"""

import configparser
import csv
import email.parser
import hashlib
import html.parser
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from base64 import urlsafe_b64encode
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from readme_renderer.markdown import render as render_markdown

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "jumpstarter_driver_template"
INSTALL_SCRIPT = ROOT / "docker" / "install-wheel.sh"
# What upstream's image holds, at the release the Dockerfile builds on (its JUMPSTARTER_VERSION default).
IMAGE_PACKAGES = ["jumpstarter", "jumpstarter-driver-power", "jumpstarter-driver-composite", "jumpstarter-cli"]
TIMEOUT = 600


def _pyproject() -> dict:
    """pyproject.toml, parsed."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _jumpstarter_version() -> str:
    """The Jumpstarter release the Dockerfile builds on (its JUMPSTARTER_VERSION default)."""
    match = re.search(r"^ARG JUMPSTARTER_VERSION=(\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert match, "the Dockerfile must give JUMPSTARTER_VERSION a default"
    return match.group(1)


def _uv() -> str:
    """The uv executable to run; the test fails, naming uv, if there is none."""
    # `uv run` tells its children where it is; otherwise take the one on PATH.
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.fail("the packaging tests need uv (https://docs.astral.sh/uv/) on PATH")
    return uv


def _env() -> dict[str, str]:
    """The environment for child processes: no VIRTUAL_ENV, plain terminal output, and our uv."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    # A wide, plain terminal: rich tables (`jmp driver list`) neither wrap nor colour.
    env.update(TERM="dumb", NO_COLOR="1", COLUMNS="200", UV=_uv())
    return env


def _run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command with a bounded wait; with `check`, fail the test with its output if it fails."""
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=_env(), timeout=TIMEOUT, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def _normalize(name: str) -> str:
    """A distribution name in its normalized form (PEP 503), e.g. Jumpstarter_CLI -> jumpstarter-cli."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed(venv: Path) -> dict[str, str]:
    """Every distribution in `venv`, by normalized name."""
    script = "import importlib.metadata as m, json; print(json.dumps({d.name: d.version for d in m.distributions()}))"
    found = json.loads(_run(venv / "bin" / "python", "-c", script).stdout)
    return {_normalize(name): version for name, version in found.items()}


def _jumpstarter_packages(venv: Path) -> dict[str, str]:
    """The jumpstarter* distributions in `venv`, with their versions."""
    return {name: version for name, version in _installed(venv).items() if name.startswith("jumpstarter")}


def _versions_of(venv: Path, packages: dict[str, str]) -> dict[str, str | None]:
    """The versions `venv` now has of `packages` (None: no longer installed)."""
    installed = _installed(venv)
    return {name: installed.get(name) for name in packages}


def _install(venv: Path, *wheels: Path) -> subprocess.CompletedProcess[str]:
    """Install `wheels` into `venv` with docker/install-wheel.sh, as the Dockerfile does; the result is not checked."""
    return _run("sh", INSTALL_SCRIPT, venv, *wheels, check=False)


def _make_image_venv(path: Path) -> Path:
    """A virtual environment holding the targeted Jumpstarter release, as upstream's image does."""
    _run(_uv(), "venv", "--quiet", "--python", sys.executable, path)
    version = _jumpstarter_version()
    _run(
        _uv(),
        "pip",
        "install",
        "--quiet",
        "--python",
        path / "bin" / "python",
        *(f"{p}=={version}" for p in IMAGE_PACKAGES),
    )
    return path


def _make_wheel(directory: Path, name: str, requires: list[str]) -> Path:
    """Write a minimal pure-Python wheel that only declares `requires`."""
    dist, version = name.replace("-", "_"), "1.0"
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}/__init__.py": "",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: packaging_test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for path, text in files.items():
        digest = urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        writer.writerow([path, f"sha256={digest}", len(text.encode())])
    writer.writerow([f"{info}/RECORD", "", ""])
    wheel = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in {**files, f"{info}/RECORD": record.getvalue()}.items():
            archive.writestr(path, text)
    return wheel


def _long_description(metadata: str) -> tuple[str, str]:
    """The content type and text of the long description in a METADATA or PKG-INFO file."""
    message = email.parser.Parser().parsestr(metadata)
    return message.get("Description-Content-Type", ""), message.get_payload()


def _render(text: str, content_type: str = "text/markdown") -> str:
    """The HTML PyPI shows for a long description: readme-renderer, the library PyPI renders with."""
    kind, _, parameters = content_type.partition(";")
    assert kind.strip() == "text/markdown", f"the long description is {content_type!r}, not Markdown"
    variant = re.search(r"variant\s*=\s*(\w+)", parameters)
    rendered = render_markdown(text, variant=variant.group(1) if variant else "GFM")
    assert rendered, "readme-renderer could not render the long description"
    return rendered


class _Links(html.parser.HTMLParser):
    """Collects the targets of links and images in HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"a": "href", "img": "src"}.get(tag)
        self.targets += [value for name, value in attrs if name == wanted and value is not None]


def _relative_links(rendered: str) -> list[str]:
    """Link and image targets that PyPI cannot follow: neither absolute http(s) URLs nor #anchors on the page."""
    links = _Links()
    links.feed(rendered)
    return [target for target in links.targets if not target.startswith(("https://", "http://", "#"))]


@pytest.fixture(scope="module")
def dist() -> Iterator[tuple[Path, Path]]:
    """The wheel and sdist of this checkout; `uv build` builds the wheel from the sdist, so the sdist rebuilds."""
    with tempfile.TemporaryDirectory(prefix="packaging-dist-") as out:
        _run(_uv(), "build", "--quiet", "--out-dir", out, ROOT)
        (wheel,) = Path(out).glob("*.whl")
        (sdist,) = Path(out).glob("*.tar.gz")
        yield wheel, sdist


@pytest.fixture(scope="module")
def installed(dist: tuple[Path, Path]) -> Iterator[tuple[Path, dict[str, str], subprocess.CompletedProcess[str]]]:
    """An image-like environment, its jumpstarter* versions before the install, and the install's result."""
    with tempfile.TemporaryDirectory(prefix="packaging-venv-") as tmp:
        venv = _make_image_venv(Path(tmp) / "venv")
        before = _jumpstarter_packages(venv)
        yield venv, before, _install(venv, dist[0])


@pytest.fixture
def image_venv() -> Iterator[Path]:
    """A fresh image-like environment for one test."""
    with tempfile.TemporaryDirectory(prefix="packaging-venv-") as tmp:
        yield _make_image_venv(Path(tmp) / "venv")


def test_wheel_holds_modules_typing_marker_and_entry_points_but_no_tests(dist: tuple[Path, Path]) -> None:
    """The wheel ships every package module, py.typed and the driver entry points, and no test module."""
    with zipfile.ZipFile(dist[0]) as archive:
        names = set(archive.namelist())
        (entry_points_txt,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry_points = configparser.ConfigParser(delimiters=["="])
        entry_points.optionxform = str  # type: ignore[assignment,method-assign]
        entry_points.read_string(archive.read(entry_points_txt).decode())

    sources = {f"{PACKAGE}/{p.name}" for p in (ROOT / "src" / PACKAGE).glob("*.py") if not p.name.endswith("_test.py")}
    assert sources <= names
    assert f"{PACKAGE}/py.typed" in names
    assert not [n for n in names if n.endswith("_test.py") or n.endswith("conftest.py") or n.startswith("tests/")]
    assert dict(entry_points["jumpstarter.drivers"]) == _pyproject()["project"]["entry-points"]["jumpstarter.drivers"]


def test_sdist_holds_what_rebuilds_and_tests_the_package(dist: tuple[Path, Path]) -> None:
    """The sdist carries the sources, tests, test settings, examples and the install script, at the wheel's version."""
    wheel, sdist = dist
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    needed = {"pyproject.toml", "README.md", "conftest.py", "Dockerfile", "docker/install-wheel.sh"}
    needed |= {
        str(p.relative_to(ROOT)) for p in (ROOT / "src").rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    needed |= {str(p.relative_to(ROOT)) for d in ("tests", "examples") for p in (ROOT / d).glob("*") if p.is_file()}
    assert needed <= names, sorted(needed - names)
    assert wheel.name.split("-")[1] == sdist.name.removesuffix(".tar.gz").rsplit("-", 1)[1]


def test_long_description_renders_on_pypi(dist: tuple[Path, Path]) -> None:
    """The wheel's and the sdist's long description is README.md, as Markdown that PyPI's renderer renders."""
    wheel, sdist = dist
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = (n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        wheel_metadata = archive.read(metadata).decode()
    with tarfile.open(sdist) as archive:
        (pkg_info,) = (m for m in archive.getmembers() if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO"))
        file = archive.extractfile(pkg_info)
        assert file is not None
        sdist_metadata = file.read().decode()
    readme = (ROOT / "README.md").read_text()
    for metadata in (wheel_metadata, sdist_metadata):
        content_type, text = _long_description(metadata)
        assert text.strip() == readme.strip()
        rendered = _render(text, content_type)
        assert "<h1" in rendered, rendered[:500]  # the title is shown: the HTML comments hide no more than they should


def test_readme_has_no_relative_links() -> None:
    """Every link and image of README.md is an absolute URL or an anchor: PyPI resolves nothing against the repo."""
    assert _relative_links(_render((ROOT / "README.md").read_text())) == []


def test_relative_links_are_found() -> None:
    """The link check sees relative links and images in Markdown and in HTML, and leaves code and comments alone."""
    text = (
        '# Title\n\nSee [the guide](docs/guide.md), ![diagram](docs/a.png), <a href="LICENSE">license</a>, '
        "[home](https://jumpstarter.dev) and [below](#title).\n\n`[code](not-a-link.md)`\n\n<!-- [hidden](x.md) -->\n"
    )
    assert _relative_links(_render(text)) == ["docs/guide.md", "docs/a.png", "LICENSE"]


def test_dockerfile_builds_on_the_tested_release_with_the_tested_script() -> None:
    """The image starts from a pinned upstream release the package accepts and installs with the script tested here."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    version = _jumpstarter_version()
    assert version != "latest"
    for dependency in map(Requirement, _pyproject()["project"]["dependencies"]):
        if dependency.name.startswith("jumpstarter"):
            assert dependency.specifier.contains(version), f"{dependency} does not accept the image's {version}"
    (final_from,) = re.findall(r"^FROM (quay\.io/jumpstarter-dev/jumpstarter\S*)", dockerfile, re.MULTILINE)
    assert final_from == "quay.io/jumpstarter-dev/jumpstarter:${JUMPSTARTER_VERSION}"
    mount = re.search(r"source=docker/install-wheel\.sh,target=(\S+)", dockerfile)
    assert mount, "the Dockerfile must install with docker/install-wheel.sh"
    assert re.search(rf"^\s+\S.* sh {re.escape(mount.group(1))} ", dockerfile, re.MULTILINE)


def test_install_keeps_the_images_jumpstarter(
    installed: tuple[Path, dict[str, str], subprocess.CompletedProcess[str]], dist: tuple[Path, Path]
) -> None:
    """Installing the wheel changes no jumpstarter* package of the environment and installs the built version."""
    venv, before, result = installed
    assert result.returncode == 0, result.stderr
    assert before["jumpstarter"] == _jumpstarter_version()
    assert _versions_of(venv, before) == before
    assert _installed(venv)["jumpstarter-driver-template"] == dist[0].name.split("-")[1]


def test_jmp_driver_list_shows_both_drivers(
    installed: tuple[Path, dict[str, str], subprocess.CompletedProcess[str]],
) -> None:
    """`jmp driver list` in the environment lists every driver this package registers, by import path."""
    venv, _, result = installed
    assert result.returncode == 0, result.stderr
    listing = _run(venv / "bin" / "jmp", "driver", "list").stdout
    for name, target in _pyproject()["project"]["entry-points"]["jumpstarter.drivers"].items():
        assert re.search(rf"^{name}\s+{re.escape(target.replace(':', '.'))}\s*$", listing, re.MULTILINE), listing


def test_every_entry_point_and_client_path_imports(
    installed: tuple[Path, dict[str, str], subprocess.CompletedProcess[str]],
) -> None:
    """Each registered driver class loads, and the client class its client() names imports."""
    venv, _, result = installed
    assert result.returncode == 0, result.stderr
    script = """
import importlib, importlib.metadata, json
found = {}
for ep in importlib.metadata.entry_points(group="jumpstarter.drivers"):
    if ep.value.startswith("jumpstarter_driver_template."):
        driver = ep.load()
        module, _, name = driver.client().rpartition(".")
        client = getattr(importlib.import_module(module), name)
        found[ep.name] = [driver.__name__, driver.client(), f"{client.__module__}.{client.__qualname__}"]
print(json.dumps(found))
"""
    found = json.loads(_run(venv / "bin" / "python", "-c", script).stdout)
    declared = _pyproject()["project"]["entry-points"]["jumpstarter.drivers"]
    assert found.keys() == declared.keys()
    for name, (driver, client_path, client) in found.items():
        assert declared[name].endswith(f":{driver}")
        assert client == client_path


def test_client_modules_do_not_import_driver_modules(
    installed: tuple[Path, dict[str, str], subprocess.CompletedProcess[str]],
) -> None:
    """Importing a client leaves every driver module unloaded: clients install where exporter deps are missing."""
    venv, _, result = installed
    assert result.returncode == 0, result.stderr
    script = f"""
import importlib, importlib.metadata, json, sys
clients = set()
for ep in importlib.metadata.entry_points(group="jumpstarter.drivers"):
    if ep.value.startswith("{PACKAGE}."):
        clients.add(ep.load().client().rpartition(".")[0])
drivers = {{
    ep.value.partition(":")[0]
    for ep in importlib.metadata.entry_points(group="jumpstarter.drivers")
    if ep.value.startswith("{PACKAGE}.")
}}
found = {{}}
for client in sorted(c for c in clients if c.startswith("{PACKAGE}.")):
    for module in [m for m in sys.modules if m.startswith("{PACKAGE}")]:
        del sys.modules[module]
    importlib.import_module(client)
    found[client] = sorted(d for d in drivers if d in sys.modules)
print(json.dumps(found))
"""
    found = json.loads(_run(venv / "bin" / "python", "-c", script).stdout)
    if not found:
        pytest.skip("every driver of this package uses an upstream interface's client")
    assert found == {client: [] for client in found}


def test_install_installs_third_party_dependencies(image_venv: Path, tmp_path: Path) -> None:
    """Only jumpstarter* packages are held: a driver's other dependencies are installed."""
    assert "iniconfig" not in _installed(image_venv)
    before = _jumpstarter_packages(image_venv)
    wheel = _make_wheel(tmp_path, "jumpstarter-driver-needs-iniconfig", ["jumpstarter>=0.9,<0.10", "iniconfig"])

    result = _install(image_venv, wheel)

    assert result.returncode == 0, result.stderr
    assert {"iniconfig", "jumpstarter-driver-needs-iniconfig"} <= _installed(image_venv).keys()
    assert _versions_of(image_venv, before) == before


def test_incompatible_jumpstarter_range_fails_clearly_and_changes_nothing(image_venv: Path, tmp_path: Path) -> None:
    """A wheel needing another released Jumpstarter is refused, naming the kept versions; nothing is installed."""
    before = _installed(image_venv)
    wheel = _make_wheel(tmp_path, "jumpstarter-driver-needs-older", ["jumpstarter<0.9"])

    result = _install(image_venv, wheel)

    assert result.returncode == 1
    assert "install-wheel: uv installed nothing" in result.stderr
    assert f"jumpstarter=={_jumpstarter_version()}" in result.stderr
    assert _installed(image_venv) == before


def test_environment_without_jumpstarter_is_refused(tmp_path: Path) -> None:
    """Installing into an environment with no Jumpstarter fails and names the problem."""
    venv = tmp_path / "venv"
    _run(_uv(), "venv", "--quiet", "--python", sys.executable, venv)
    wheel = _make_wheel(tmp_path, "jumpstarter-driver-any", [])

    result = _install(venv, wheel)

    assert result.returncode == 1
    assert "has no jumpstarter package" in result.stderr
    assert "jumpstarter-driver-any" not in _installed(venv)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "usage:"),
        (["{tmp}", "{tmp}/missing.whl"], "is not a virtual environment"),
        (["{venv}", "{tmp}/missing.whl"], "no such wheel"),
        (["{venv}", "{tmp}/package.tar.gz"], "not a wheel"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    """Missing or wrong arguments stop the script before it touches anything."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)

    result = _run("sh", INSTALL_SCRIPT, *(a.format(tmp=tmp_path, venv=venv) for a in args), check=False)

    assert result.returncode == 2
    assert message in result.stderr
