#!/usr/bin/env bash
# Install what tests/test_browser.py needs: Debian's chromium and the playwright pip package.
#
#   scripts/install_browser.sh [VENV]      # VENV defaults to .venv
#
# Playwright drives the system chromium (executable_path), so `playwright install` (a browser
# download) is never run. apt-get needs root; without it the chromium step is skipped with a hint.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"

if command -v chromium >/dev/null 2>&1; then
    echo "chromium: already installed at $(command -v chromium)"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
else
    echo "chromium: not installed; run as root: apt-get update && apt-get install -y chromium" >&2
fi

if [ ! -x "$VENV/bin/pip" ]; then
    echo "no virtual environment at $VENV (run: make venv)" >&2
    exit 1
fi
"$VENV/bin/pip" install -q "playwright>=1.45"
"$VENV/bin/python" -c "import playwright.sync_api; print('playwright: importable')"
