#!/bin/sh
# Install driver wheels into an environment that already holds Jumpstarter, keeping its Jumpstarter.
#
#   install-wheel.sh VENV WHEEL...
#
# Every jumpstarter* distribution already in VENV is pinned to its installed version (a uv constraints
# file), so the driver's own third-party dependencies install as usual but Jumpstarter itself never
# moves: a plain `uv pip install driver.whl` would silently upgrade or downgrade the image's
# Jumpstarter whenever the driver's range allowed another version. When the driver's ranges do not
# include the installed Jumpstarter, nothing is installed and the error says which versions are kept.
# The Dockerfile and tests/packaging_test.py both run this script. UV names the uv binary (default: uv).
set -eu

if [ "$#" -lt 2 ]; then
  echo "usage: $0 VENV WHEEL..." >&2
  exit 2
fi
venv=$1
shift
uv=${UV:-uv}
python="$venv/bin/python"
if [ ! -x "$python" ]; then
  echo "install-wheel: $venv is not a virtual environment (no $python)" >&2
  exit 2
fi
for wheel in "$@"; do
  case "$wheel" in
    *.whl) [ -f "$wheel" ] || { echo "install-wheel: no such wheel: $wheel" >&2; exit 2; } ;;
    *) echo "install-wheel: not a wheel: $wheel" >&2; exit 2 ;;
  esac
done

constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT

# The wheels' own names are left out: a driver is usually called jumpstarter-driver-<name>, and an
# older copy of it in VENV must not keep the new one from installing.
"$python" - "$@" >"$constraints" <<'PY'
import importlib.metadata
import os
import re
import sys


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


installing = {normalize(os.path.basename(wheel).split("-")[0]) for wheel in sys.argv[1:]}
pins = {}
for dist in importlib.metadata.distributions():
    name = normalize(dist.metadata["Name"])
    if name.startswith("jumpstarter") and name not in installing:
        pins.setdefault(name, dist.version)
for name, version in sorted(pins.items()):
    print(f"{name}=={version}")
PY

if ! grep -q '^jumpstarter==' "$constraints"; then
  echo "install-wheel: $venv has no jumpstarter package: install Jumpstarter there first" >&2
  exit 1
fi

if ! "$uv" pip install --python "$python" --constraints "$constraints" "$@"; then
  {
    echo "install-wheel: uv installed nothing (its message is above). The jumpstarter* packages of $venv"
    echo "are kept at:"
    sed 's/^/  /' "$constraints"
    echo "If uv found no solution, the wheels' requirements do not fit these versions: widen the driver's"
    echo "jumpstarter* ranges, or build on an image (JUMPSTARTER_VERSION) with a Jumpstarter the driver supports."
  } >&2
  exit 1
fi
