#!/usr/bin/env bash
# seesr entry point. Commands:
#   setup                 create .venv and install seesr with pinned dependencies (idempotent)
#   test [pytest args]    run the test suite
#   upscale ARGS          seesr upscale (downloads missing weights; offline: Real-ESRGAN, says why)
#   predict IMAGE [ARGS]  the Cog prediction path without Docker (writes IMAGE_seesr.png)
#   benchmark [ARGS]      full-size speed/memory benchmark (python -m benchmarks.pipeline)
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
    install_browser
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
    install_ui
    echo "$want" > "$STAMP"
    echo "seesr: environment ready ($VENV)"
}

install_ui() {
    # The web page's Gradio declares pillow<13 while seesr is tested with the Pillow of constraints.txt:
    # Gradio is installed without its dependency list, then each of its other requirements, pinned.
    "$PY" -m pip install --quiet --no-deps -c "$ROOT/constraints.txt" gradio
    local requirements
    requirements="$("$PY" -c '
from importlib.metadata import requires
from packaging.requirements import Requirement
for text in requires("gradio"):
    requirement = Requirement(text)
    if requirement.name.lower() != "pillow" and (requirement.marker is None or requirement.marker.evaluate({"extra": ""})):
        print(requirement.name + str(requirement.specifier))
')"
    # shellcheck disable=SC2086 # one requirement a word
    "$PY" -m pip install --quiet -c "$ROOT/constraints.txt" $requirements
}

install_browser() {
    # The browser tests drive Debian's Chromium; as root (CI) it is installed when missing.
    command -v chromium >/dev/null && return
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        echo "seesr: installing chromium for the browser tests" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "seesr: the browser tests need Chromium: apt-get install chromium chromium-driver" >&2
    fi
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
    benchmark) ensure_setup; cd "$ROOT"; exec "$PY" -m benchmarks.pipeline "$@" ;;
    train) ensure_setup; exec "$PY" -m seesr.cli train "$@" ;;
    evaluate) ensure_setup; exec "$PY" -m seesr.cli evaluate "$@" ;;
    ui) ensure_setup; exec "$PY" -m seesr.cli ui "$@" ;;
    python) ensure_setup; exec "$PY" "$@" ;;
    *) sed -n '2,/^set /p' "$0" | sed -n 's/^# \{0,1\}//p' >&2; exit 2 ;;
esac
