#!/usr/bin/env bash
# Installs the pinned Ray (ray[serve]) into a cached virtual environment and prints its python.
# Used by the tests; the product itself installs Ray on first use (see README).
set -euo pipefail
RAY_VERSION="${RAY_VERSION:-2.60.0}"
cache="${RAYSERVICE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rayservice}"
venv="$cache/ray-$RAY_VERSION"
if [ -f "$venv/.complete" ] && "$venv/bin/python" -c "import ray, ray.serve" 2>/dev/null; then
  echo "$venv/bin/python"
  exit 0
fi
echo "installing ray[serve]==$RAY_VERSION into $venv ..." >&2
rm -rf "$venv"
mkdir -p "$cache"
"${RAYSERVICE_BOOTSTRAP_PYTHON:-python3}" -m venv "$venv" >&2
"$venv/bin/pip" install --disable-pip-version-check --progress-bar off -q "ray[serve]==$RAY_VERSION" >&2
"$venv/bin/python" -c "import ray, ray.serve; assert ray.__version__ == '$RAY_VERSION', ray.__version__" >&2
touch "$venv/.complete"
echo "$venv/bin/python"
