#!/usr/bin/env bash
# Print the path of a Python >= 3.12 interpreter, or explain and exit 1.
# Order: $PYTHON (must be >= 3.12 when set), python3.13/python3.12/python3 on PATH,
# then pyenv, uv and common system locations. A pyenv shim for a version that is not
# active fails when run, so every candidate is tried, not just looked up.
set -u
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }

if [ -n "${PYTHON:-}" ]; then
  if ok "$PYTHON"; then command -v "$PYTHON" || echo "$PYTHON"; exit 0; fi
  echo "PYTHON=$PYTHON is not a Python >= 3.12 interpreter (marrow_abm needs mesa 3.5, which needs 3.12)." >&2
  exit 1
fi

# 3.12 first: constraints.txt was resolved and MESA_NOTES verified on it; newer ones also work.
candidates=(python3.12 python3.13 python3.14 python3)
pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
if command -v pyenv >/dev/null 2>&1; then pyenv_root="$(pyenv root 2>/dev/null || echo "$pyenv_root")"; fi
for d in $(ls -d "$pyenv_root"/versions/3.1[2-9]* 2>/dev/null | sort -V); do candidates+=("$d/bin/python3"); done
for d in $(ls -d "$HOME"/.local/share/uv/python/cpython-3.1[2-9]* 2>/dev/null | sort -V); do candidates+=("$d/bin/python3"); done
for v in 3.12 3.13 3.14; do candidates+=("/usr/local/bin/python$v" "/usr/bin/python$v" "/opt/python$v/bin/python3"); done

for c in "${candidates[@]}"; do
  if ok "$c"; then
    # Resolve shims to the real interpreter so the venv does not depend on pyenv's active version.
    "$c" -c 'import sys; print(sys.executable)'
    exit 0
  fi
done
echo "No Python >= 3.12 found. Install one (e.g. 'pyenv install 3.12') or set PYTHON=/path/to/python3.12." >&2
exit 1
