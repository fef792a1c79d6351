#!/usr/bin/env bash
# Create or refresh .venv with marrow_abm (editable) and its test tools, pinned by
# constraints.txt. Re-running is cheap: it reinstalls only when pyproject.toml or
# constraints.txt changed, or when the venv's Python is not >= 3.12.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
stamp="$venv/.marrow-abm-installed"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null \
   && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -z "${PYTHON:-}" ]; then
  exit 0
fi

py="$(bash scripts/find-python.sh)"
echo "marrow_abm: setting up $venv with $py ($("$py" --version 2>&1))" >&2
if [ -n "${PYTHON:-}" ] && [ -x "$venv/bin/python" ] && \
   [ "$("$venv/bin/python" -c 'import sys; print(sys.version_info[:2])')" != "$("$py" -c 'import sys; print(sys.version_info[:2])')" ]; then
  rm -rf "$venv"   # PYTHON= asks for another interpreter: rebuild rather than mix versions
fi
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]" >&2
echo "$want" > "$stamp"
echo "marrow_abm: environment ready ($venv)" >&2
