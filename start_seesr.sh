#!/usr/bin/env bash
# seesr entry point. Commands:
#   setup                 create .venv and install seesr with pinned dependencies (idempotent)
#   test [pytest args]    run the test suite
#   upscale ARGS          seesr upscale (downloads missing weights; offline: Real-ESRGAN, says why)
#   predict IMAGE [ARGS]  the Cog prediction path without Docker (writes IMAGE_seesr.png)
#   benchmark [ARGS]      full-size speed/memory benchmark (python -m seesr.benchmarks.pipeline)
#   train HR_DIR -o OUT   fine-tune SeeSR on a folder of HR images (seesr train; --help for flags)
#   evaluate SR_DIR HR_DIR  PSNR/SSIM/LPIPS/... table, paired by name (seesr evaluate; --run to upscale first)
#   ui [--port 7860]      the web page on http://127.0.0.1:7860 (seesr ui; --help for flags)
#   python ARGS           python in the venv (SEESR_DEBUG=1: debug logging)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.seesr-setup"

setup() {
    # Reinstall only when pyproject.toml or constraints.txt changed.
    local want
    want="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)"
    if [[ -x "$PY" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
        echo "seesr: environment up to date ($VENV)"
        return
    fi
    [[ -x "$PY" ]] || python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet -c "$ROOT/constraints.txt" setuptools wheel  # the wheel-build test needs both
    "$PY" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[test]"
    echo "$want" > "$STAMP"
    echo "seesr: environment ready ($VENV)"
}

ensure_setup() { [[ -f "$STAMP" ]] || setup >&2; }

cmd="${1:-help}"
shift || true
[[ "${SEESR_DEBUG:-0}" == "1" ]] && export SEESR_LOG_LEVEL=DEBUG
case "$cmd" in
    setup) setup ;;
    test) ensure_setup; cd "$ROOT"; exec "$PY" -m pytest "$@" ;;
    upscale) ensure_setup; exec "$PY" -m seesr.cli upscale --download "$@" ;;
    predict) ensure_setup; exec "$PY" "$ROOT/predict.py" "$@" ;;
    benchmark) ensure_setup; cd "$ROOT"; exec "$PY" -m seesr.benchmarks.pipeline "$@" ;;
    train) ensure_setup; exec "$PY" -m seesr.cli train "$@" ;;
    evaluate) ensure_setup; exec "$PY" -m seesr.cli evaluate "$@" ;;
    ui) ensure_setup; exec "$PY" -m seesr.cli ui "$@" ;;
    python) ensure_setup; exec "$PY" "$@" ;;
    *) sed -n '2,/^set /p' "$0" | sed -n 's/^# \{0,1\}//p' >&2; exit 2 ;;
esac
