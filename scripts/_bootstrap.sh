# Sourced by scripts/serve and scripts/test: create .venv and install the project with its extras.
# Re-installs only when pyproject.toml or the extras changed since the last install.
#   OYEZ_VENV     where the virtual environment goes (default: .venv in the checkout)
#   OYEZ_EXTRAS   extras to install (set by the caller; empty = the server alone, speech-to-text only, no torch)
#   OYEZ_TORCH_INDEX  where torch comes from when `diarize` is among the extras: `auto` (default: PyTorch's
#                 CPU index unless an NVIDIA GPU is present, PyPI where that index does not answer), a
#                 PyTorch index URL, or empty for PyPI (scripts/install-torch)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${OYEZ_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
EXTRAS="${1-test,bench}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[oyez] creating virtual environment in $VENV" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
stamp="$VENV/.oyez-installed"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)-$EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if [[ ",$EXTRAS," == *",diarize,"* ]] && ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "$ROOT/scripts/install-torch" "$VENV/bin/python" "${OYEZ_TORCH_INDEX-auto}"
  fi
  echo "[oyez] installing oyez${EXTRAS:+[$EXTRAS]} into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT${EXTRAS:+[$EXTRAS]}"
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
