#!/usr/bin/env bash
# Set up what the browser app and its test need (tests/test_viz_browser.py, `marrow-abm viz`):
#
# 1. Solara's front-end files. The Solara server fetches its page assets (the Vuetify app,
#    require.js, Font Awesome) from a public CDN on first use and caches them under
#    <venv>/share/solara/cdn. Machines that reach package registries but not that CDN get a
#    blank page, so the same npm packages are fetched here with npm and unpacked into that cache.
# 2. Debian's chromium, which Playwright drives by path. `playwright install` is never used: it
#    downloads a browser build of its own, which this project's machines cannot fetch.
#
# Idempotent and quiet: when everything is in place it prints nothing and exits 0.
# Usage: scripts/install-browser.sh [PYTHON]   (default PYTHON: .venv/bin/python beside scripts/)
# Exit status: 0 done or already present; 1 something could not be installed (says why).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${1:-${PYTHON:-$HERE/../.venv/bin/python}}"
CHROMIUM="${MARROW_CHROMIUM:-/usr/bin/chromium}"

# -- 1. Solara assets ------------------------------------------------------------------------------
# "npm package@version" -> the versions this Solara asks for (read from the installed Solara).
if [ -x "$PYTHON" ] && "$PYTHON" -c "import solara" 2>/dev/null; then
    read -r CACHE ASSETS < <("$PYTHON" - <<'PY'
import re
from pathlib import Path

import solara.server.settings as s

# The page template names each front-end package as {{cdn}}/<name>@<version>/...
template = Path(s.__file__).with_name("templates") / "solara.html.j2"
pkgs = set(re.findall(r"\{\{cdn\}\}/((?:@[\w.-]+/)?[\w.-]+@[\w.-]+)/", template.read_text()))
pkgs.add(s.assets.fontawesome_path.strip("/").split("/")[0])
print(s.assets.proxy_cache_dir, " ".join(sorted(pkgs)))
PY
)
    missing=()
    for pkg in $ASSETS; do
        [ -f "$CACHE/$pkg/package.json" ] || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        if ! command -v npm >/dev/null 2>&1; then
            echo "install-browser: npm is needed to fetch Solara's front-end (${missing[*]});" >&2
            echo "  install it (apt-get install npm) or give the server access to cdn.jsdelivr.net." >&2
            exit 1
        fi
        work="$(mktemp -d)"
        trap 'rm -rf "$work"' EXIT
        for pkg in "${missing[@]}"; do
            if ! tgz="$(cd "$work" && npm pack --silent "$pkg" 2>"$work/npm.log" | tail -n 1)"; then
                echo "install-browser: npm pack $pkg failed:" >&2
                cat "$work/npm.log" >&2
                exit 1
            fi
            mkdir -p "$work/x" "$CACHE/$pkg"
            tar -xzf "$work/$tgz" -C "$work/x"
            cp -R "$work/x/package/." "$CACHE/$pkg/"
            rm -rf "$work/x"
        done
    fi
fi

# -- 2. Chromium -----------------------------------------------------------------------------------
if [ -x "$CHROMIUM" ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "install-browser: $CHROMIUM is missing and this user cannot install packages" >&2
    echo "  (not root, no passwordless sudo). Ask an administrator for: apt-get install chromium" >&2
    echo "  or set MARROW_SKIP_BROWSER=1 to skip the browser test." >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: $CHROMIUM is missing and apt-get is not available on this system;" >&2
    echo "  install Chromium by hand and set MARROW_CHROMIUM=/path/to/chromium." >&2
    exit 1
fi

echo "install-browser: installing Debian's chromium with apt-get (one-time, ~100 MB) ..." >&2
log="$(mktemp)"
trap 'rm -f "$log"; rm -rf "${work:-}"' EXIT
export DEBIAN_FRONTEND=noninteractive
# fonts-dejavu-core: page text needs at least one font in a minimal image.
if ! { "${SUDO[@]}" apt-get update -qq \
       && "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; \
     } >"$log" 2>&1; then
    echo "install-browser: apt-get failed; its output:" >&2
    tail -n 30 "$log" >&2
    exit 1
fi
if [ ! -x "$CHROMIUM" ]; then
    echo "install-browser: apt-get finished but $CHROMIUM is still missing" >&2
    exit 1
fi
echo "install-browser: $("$CHROMIUM" --version 2>/dev/null || echo chromium) installed" >&2
