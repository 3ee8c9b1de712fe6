#!/usr/bin/env bash
# seesr entry point: ./start_seesr.sh COMMAND [ARGS]
#   setup                 create .venv and install seesr with its pinned dependencies (idempotent)
#   test [pytest args]    run the test suite
#   upscale ARGS          seesr upscale --download ARGS (fetches missing weights; offline: Real-ESRGAN, says why)
#   predict IMAGE [ARGS]  the Cog prediction path without Docker (writes IMAGE_seesr.png)
#   benchmark [ARGS]      full-size speed/memory benchmark (python -m benchmarks.pipeline)
#   python ARGS           python in the venv (SEESR_DEBUG=1: debug logging)
#   help                  this text
#   any other seesr command is passed through: ./start_seesr.sh CMD ARGS runs seesr CMD ARGS
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.seesr-setup"

say() { echo "seesr: $*"; }

setup() {
    install_browser
    # Reinstall only when pyproject.toml or constraints.txt changed.
    local want pins quiet=()
    want="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)"
    if [[ -x "$PY" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
        say "environment up to date ($VENV)"
        return
    fi
    [[ -t 1 ]] || quiet=(--progress-bar off)
    if [[ ! -x "$PY" ]]; then
        say "creating $VENV ($(python3 --version))"
        python3 -m venv "$VENV"
    fi
    say "updating pip, setuptools and wheel"
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet -c "$ROOT/constraints.txt" setuptools wheel  # the wheel-build test needs both
    pins="$(grep -c '==' "$ROOT/constraints.txt")"
    say "installing seesr and its $pins pinned packages (constraints.txt): about 6.5 GB in .venv, most of it"
    say "torch $(sed -n 's/^torch==//p' "$ROOT/constraints.txt") with its CUDA libraries (the nvidia-* packages, ~3 GB),"
    say "also on a machine without a GPU; a few minutes when pip has to download them (pip names each package below)"
    "$PY" -m pip install "${quiet[@]}" -c "$ROOT/constraints.txt" -e "$ROOT[test]"
    say "installing Gradio for the web page (seesr ui), with its pinned requirements"
    install_ui
    echo "$want" > "$STAMP"
    say "environment ready ($VENV)"
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
    say "pip's note that gradio requires pillow<13 is expected: seesr is tested with the Pillow of constraints.txt (docs/web-page.md)"
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

usage() {
    sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"
    if [[ -x "$PY" ]]; then
        echo
        echo "seesr commands (./start_seesr.sh CMD --help, or seesr CMD --help in the activated .venv):"
        "$PY" -c 'from seesr.cli import command_lines; print(command_lines())'
    else
        echo "(./start_seesr.sh setup, then ./start_seesr.sh help lists the seesr commands)"
    fi
}

cmd="${1:-}"
shift || true
[[ "${SEESR_DEBUG:-0}" == "1" ]] && export SEESR_LOG_LEVEL=DEBUG
case "$cmd" in
    help | -h | --help) usage ;;
    "") usage >&2; exit 2 ;;
    setup) setup ;;
    test) ensure_setup; cd "$ROOT"; exec "$PY" -m pytest "$@" ;;
    upscale) ensure_setup; exec "$PY" -m seesr.cli upscale --download "$@" ;;
    predict) ensure_setup; exec "$PY" "$ROOT/predict.py" "$@" ;;
    benchmark) ensure_setup; cd "$ROOT"; exec "$PY" -m benchmarks.pipeline "$@" ;;
    python) ensure_setup; exec "$PY" "$@" ;;
    *) ensure_setup; exec "$PY" -m seesr.cli "$cmd" "$@" ;;
esac
