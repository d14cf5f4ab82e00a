#!/usr/bin/env bash
# A real Home Assistant in its own venv, for the HA integration tests (tests/homeassistant.py).
#   scripts/install-homeassistant.sh [DIR]     # DIR defaults to .ha-venv in the repo root
#
# HA 2025.4 needs Python 3.13: taken from $HA_PYTHON, else python3.13 on PATH, else pyenv's
# newest 3.13.x. Installs homeassistant==$HA_VERSION, then the requirements of every
# integration a test HA loads at boot (HA's always-on defaults, http, mqtt, mqtt_statestream
# and every MQTT platform), pinned by HA's own package_constraints.txt, so that HA boots
# offline with --skip-pip. Without home-assistant-frontend HA boots into recovery mode.
# Idempotent: a stamp file in DIR records what was installed; a second run returns at once.
# About 3 minutes and 820 MB on a 2-core machine.
set -euo pipefail

HA_VERSION="${HA_VERSION:-2025.4.4}"
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$REPO_DIR/.ha-venv}"
STAMP="$DIR/.camtrap-ha-installed"
WANT="homeassistant==$HA_VERSION"

if [ -f "$STAMP" ] && [ "$(head -n1 "$STAMP")" = "$WANT" ] && [ -x "$DIR/bin/python" ]; then
  echo "Home Assistant venv $DIR is up to date ($WANT)"
  exit 0
fi

is_py313() { [ -x "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; }

find_python() {
  if [ -n "${HA_PYTHON:-}" ]; then
    is_py313 "$HA_PYTHON" && { echo "$HA_PYTHON"; return; }
    echo "HA_PYTHON=$HA_PYTHON is not a Python 3.13" >&2
    return 1
  fi
  local p
  p="$(command -v python3.13 || true)"
  if [ -n "$p" ] && is_py313 "$p"; then echo "$p"; return; fi
  local root="${PYENV_ROOT:-$HOME/.pyenv}"
  command -v pyenv >/dev/null 2>&1 && root="$(pyenv root)"
  for p in $(ls -d "$root"/versions/3.13.* 2>/dev/null | sort -V -r); do
    if is_py313 "$p/bin/python3"; then echo "$p/bin/python3"; return; fi
  done
  return 1
}

PY="$(find_python)" || {
  echo "No Python 3.13 found (Home Assistant $HA_VERSION needs it)." >&2
  echo "Install one (e.g. 'pyenv install 3.13') or point HA_PYTHON at its python." >&2
  exit 1
}

start=$SECONDS
echo "Installing Home Assistant $HA_VERSION into $DIR with $PY ($("$PY" -V 2>&1))"

if [ -e "$DIR" ] && ! is_py313 "$DIR/bin/python"; then
  # Only ever delete something that is a venv (or an empty dir): DIR may be user input.
  if [ -f "$DIR/pyvenv.cfg" ] || [ -z "$(ls -A "$DIR" 2>/dev/null)" ]; then
    rm -rf "$DIR"
  else
    echo "$DIR exists and is not a Python 3.13 venv: remove it or pick another DIR" >&2
    exit 1
  fi
fi
[ -x "$DIR/bin/python" ] || "$PY" -m venv "$DIR"
rm -f "$STAMP"

# (the grep drops the noise of this machine's pip.conf: file:// indexes without most names)
pip() {
  "$DIR/bin/python" -m pip install -q --disable-pip-version-check "$@" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}
pip "$WANT"

# The requirements of what a test HA sets up, found from the integrations' manifests (with
# their dependencies), so a new HA pin brings its own matching versions.
mapfile -t extra < <("$DIR/bin/python" - <<'EOF'
import json
from pathlib import Path

import homeassistant
from homeassistant import bootstrap
from homeassistant.components.mqtt.const import SUPPORTED_COMPONENTS

components = Path(homeassistant.__file__).parent / "components"
todo = set(bootstrap.CORE_INTEGRATIONS) | set(bootstrap.DEFAULT_INTEGRATIONS)
todo |= set(bootstrap.LOGGING_AND_HTTP_DEPS_INTEGRATIONS) - {"sentry"}
todo |= {"http", "mqtt", "mqtt_statestream", *map(str, SUPPORTED_COMPONENTS)}
seen: set[str] = set()
reqs: set[str] = set()
while todo:
    domain = todo.pop()
    if domain in seen:
        continue
    seen.add(domain)
    manifest = json.loads((components / domain / "manifest.json").read_text())
    todo |= set(manifest.get("dependencies", []))
    reqs |= set(manifest.get("requirements", []))
print("\n".join(sorted(reqs)))
EOF
)
constraints="$("$DIR/bin/python" -c 'import homeassistant, pathlib; print(pathlib.Path(homeassistant.__file__).parent / "package_constraints.txt")')"
echo "Integration requirements: ${extra[*]}"
pip -c "$constraints" "${extra[@]}"

"$DIR/bin/python" - <<'EOF'
import hass_frontend, paho.mqtt  # noqa: F401  (HA boots into recovery mode without the frontend)
from homeassistant.const import __version__
print(f"homeassistant {__version__} imports")
EOF

{ echo "$WANT"; printf '%s\n' "${extra[@]}"; } > "$STAMP"
echo "Home Assistant $HA_VERSION installed in $DIR in $((SECONDS - start)) s"
