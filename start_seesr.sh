#!/usr/bin/env bash
# seesr entry point: ./start_seesr.sh setup | test [pytest args] | python [args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.seesr-setup"

setup() {
    # Idempotent: reinstall only when pyproject.toml or constraints.txt changed.
    local want
    want="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)"
    if [[ -x "$PY" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
        echo "seesr: environment up to date ($VENV)"
        return
    fi
    [[ -x "$PY" ]] || python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[test]"
    echo "$want" > "$STAMP"
    echo "seesr: environment ready ($VENV)"
}

ensure_setup() { [[ -f "$STAMP" ]] || setup; }

cmd="${1:-help}"
shift || true
case "$cmd" in
    setup) setup ;;
    test) ensure_setup; cd "$ROOT"; exec "$PY" -m pytest "$@" ;;
    python) ensure_setup; [[ "${SEESR_DEBUG:-0}" == "1" ]] && export SEESR_LOG_LEVEL=DEBUG; exec "$PY" "$@" ;;
    *) echo "usage: $0 setup | test [pytest args] | python [args]" >&2; exit 2 ;;
esac
