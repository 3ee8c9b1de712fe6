"""Time from command to first work: how long ``seesr upscale`` keeps a user waiting before it
does anything with the image.

    python -m benchmarks.startup --weights tiny_weights --image photo.png
    python -m benchmarks.startup --image photo.png --source before=/tmp/seesr-before --source after=.

Each row runs the command line in a fresh process (``python -c`` calling ``seesr.cli.main``)
and measures, from just before the process starts:

- ``realesrgan``, ``seesr``, ``fallback`` (SeeSR asked for, its weights missing): until the first
  forward of any network (a global forward pre-hook; the process then exits, so only the start
  is timed);
- ``seesr on a terminal``: SeeSR with stderr on a pseudo-terminal, until the first thing is
  shown there (progress, or any message);
- ``dry-run realesrgan``, ``dry-run seesr``: until the plan's line is printed;
- ``version``: until ``seesr --version`` exits.

``--source NAME=DIR`` runs the rows against the ``seesr`` package in DIR (a checkout, e.g.
``git archive <commit> | tar -x -C DIR``); sources are run alternately, so a busy machine slows
them alike. With ``--weights`` a folder of SeeSR weights (the tiny fixtures suffice: only the
start is timed), the ``seesr`` rows run SeeSR.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DRIVER = """
import os, sys, time
if os.environ.get("SEESR_STARTUP_HOOK") == "forward":
    import torch

    def first_forward(module, inputs):
        os.write(2, f"\\nSEESR_FIRST_WORK {time.time()!r}\\n".encode())
        os._exit(0)

    torch.nn.modules.module.register_module_forward_pre_hook(first_forward)
from seesr.cli import main
sys.exit(main(sys.argv[1:]))
"""
MARK = "SEESR_FIRST_WORK "


def rows(image: Path, weights: Path | None, folder: Path) -> dict[str, tuple[list[str], str]]:
    """Row name -> (seesr arguments, what ends the measurement: forward, line or exit); the
    ``fallback`` row's weights are ``folder/no-weights`` (an empty folder the caller makes)."""
    base = ["upscale", str(image), "-o", str(folder / "out.png"), "--overwrite", "--device", "cpu"]
    empty = folder / "no-weights"
    seesr_weights = ["--weights", str(weights)] if weights is not None else []
    return {
        "realesrgan": ([*base, "--engine", "realesrgan", *seesr_weights], "forward"),
        "seesr": ([*base, *seesr_weights], "forward"),
        "fallback": ([*base, "--weights", str(empty)], "forward"),
        "seesr on a terminal": ([*base, *seesr_weights], "terminal"),
        "dry-run realesrgan": ([*base, "--engine", "realesrgan", "--dry-run"], "line"),
        "dry-run seesr": ([*base, "--dry-run", *seesr_weights], "line"),
        "version": (["--version"], "exit"),
    }


def measure(source: Path, arguments: list[str], until: str, timeout: float) -> float:
    """Seconds from process start to the event ``until`` (forward, terminal, line or exit)."""
    if until == "terminal":
        return _first_shown(source, arguments, timeout)
    env = {**os.environ, "PYTHONPATH": str(source), "SEESR_STARTUP_HOOK": until, "SEESR_PROCESS_SIZE": "0",
           "HF_HUB_OFFLINE": "1"}  # fmt: skip
    start = time.time()
    process = subprocess.Popen(
        [sys.executable, "-c", DRIVER, *arguments], env=env, cwd=source, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        if until == "line":
            line = process.stdout.readline()
            seen = time.time()
            process.communicate(timeout=timeout)
            if not line:
                raise RuntimeError(f"no plan printed by {arguments}: {process.stderr}")
            return seen - start
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    if until == "exit":
        return time.time() - start
    for line in stderr.splitlines():
        if line.startswith(MARK):
            return float(line[len(MARK) :]) - start
    raise RuntimeError(f"no network ran for {arguments} (exit {process.returncode}): {stderr[-1500:]}")


def _first_shown(source: Path, arguments: list[str], timeout: float) -> float:
    """Seconds until the command first writes to its terminal (stderr on a pseudo-terminal)."""
    import pty
    import select

    env = {**os.environ, "PYTHONPATH": str(source), "SEESR_PROCESS_SIZE": "0", "HF_HUB_OFFLINE": "1"}
    primary, secondary = pty.openpty()
    start = time.time()
    process = subprocess.Popen([sys.executable, "-c", DRIVER, *arguments], env=env, cwd=source,
                               stdout=subprocess.DEVNULL, stderr=secondary)  # fmt: skip
    os.close(secondary)
    try:
        ready, _, _ = select.select([primary], [], [], timeout)
        if not ready:
            raise RuntimeError(f"nothing shown within {timeout} s by {arguments}")
        return time.time() - start
    finally:
        process.kill()
        process.wait()
        os.close(primary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--image", type=Path, required=True, help="the input image")
    parser.add_argument("--weights", type=Path, help="SeeSR weights folder (the tiny fixtures suffice)")
    parser.add_argument("--source", action="append", default=[], metavar="NAME=DIR",
                        help="a seesr checkout to time (repeatable; default: this one)")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3, help="runs per row and source (the median is reported)")
    names = list(rows(Path("photo.png"), None, Path(".")))
    parser.add_argument("--only", action="append", default=[], choices=names, metavar="ROW",
                        help=f"run only this row (repeatable): {', '.join(names)}")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one run may take")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parents[1]
    sources = dict(item.split("=", 1) for item in args.source) or {"this": str(here)}
    sources = {name: Path(folder).resolve() for name, folder in sources.items()}
    image, weights = args.image.resolve(), args.weights.resolve() if args.weights else None
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        table = rows(image, weights, Path(folder))
        (Path(folder) / "no-weights").mkdir()
        names = [n for n in table if not args.only or n in args.only]
        for name in names:
            arguments, until = table[name]
            for source in sources.values():  # warm-up: file caches, the Real-ESRGAN conversion
                measure(source, arguments, until, args.timeout)
            for _ in range(args.repeat):
                for label, source in sources.items():
                    results.setdefault(name, {}).setdefault(label, []).append(
                        measure(source, arguments, until, args.timeout)
                    )
    labels = list(sources)
    print(f"{'row':20s}" + "".join(f"{label:>14s}" for label in labels) + ("   ratio" if len(labels) == 2 else ""))
    summary = {}
    for name, by_source in results.items():
        medians = {label: statistics.median(by_source[label]) for label in labels}
        summary[name] = {"median_seconds": medians, "runs": by_source}
        ratio = f"   {medians[labels[0]] / medians[labels[1]]:.2f}x" if len(labels) == 2 else ""
        print(f"{name:20s}" + "".join(f"{medians[label]:13.2f}s" for label in labels) + ratio)
    from benchmarks.common import machine_info  # torch in this process only now: the starts are timed

    record = {"machine": machine_info("cpu"), "image": str(image), "weights": str(weights) if weights else None,
              "repeat": args.repeat,
              "sources": {label: str(path) for label, path in sources.items()}, "rows": summary}  # fmt: skip
    print(json.dumps(record))
    if args.json is not None:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
