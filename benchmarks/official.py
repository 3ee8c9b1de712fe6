"""The official SeeSR-Turbo pipeline (github.com/cswry/SeeSR), timed by the shared reference harness.

``official_speed.py`` (in ``$SEESR_SHARED/tools``, not part of seesr) builds the official models
at full size with random weights in float32 and runs ``test_seesr_turbo.py``'s call sequence in the
official environment (``REF/venv``, its code exported to ``REF/src``; the tool's README says how to
build it). This module runs it in that environment and reads back the numbers compared with ours.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from benchmarks.common import REPO_ROOT, log

MIB = 2**20
NO_BUDGET_S = 10**6
"""The harness skips runs past its wall-clock budget (870 s by default); here every run is wanted."""


def default_tool() -> Path:
    """``$SEESR_SHARED/tools/official_speed.py`` (default shared folder: next to the repository)."""
    return Path(os.environ.get("SEESR_SHARED", REPO_ROOT.parent / "shared")) / "tools" / "official_speed.py"


def check_reference(ref: Path, tool: Path) -> None:
    """Refuse (SystemExit, one line) an official environment or harness that is not there."""
    problems = [f"{path} is missing" for path in (ref / "venv" / "bin" / "python", ref / "src" / "test_seesr_turbo.py", tool)
                if not path.is_file()]  # fmt: skip
    if problems:
        raise SystemExit(f"official reference not usable: {'; '.join(problems)} (build it as {tool.parent / 'README.md'} says)")


def run_official(ref: Path, lr_size: int, steps: int, runs: int, threads: int, tool: Path | None = None) -> dict:
    """Time the official pipeline at ``lr_size`` x4 with ``steps`` steps (one warm-up, then ``runs``
    timed runs, untiled latent as at this size officially): end to end (min / median), per stage,
    and the process's peak RSS, build included."""
    tool = tool or default_tool()
    check_reference(ref, tool)
    with tempfile.TemporaryDirectory(prefix="seesr-official-") as tmp:
        out = Path(tmp) / "official.json"
        command = [str(ref / "venv" / "bin" / "python"), str(tool), "--src", str(ref / "src"), "--size", str(lr_size),
                   "--steps", str(steps), "--runs", str(runs), "--tile", "0", "--threads", str(threads),
                   "--budget-s", str(NO_BUDGET_S), "--json-out", str(out)]  # fmt: skip
        log(f"official pipeline: {' '.join(command)}")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not out.is_file():
            raise SystemExit(f"the official harness failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
        raw = json.loads(out.read_text())["official"]
    summary = raw["untiled_summary"]
    if not summary:
        raise SystemExit(f"the official harness made no timed run: {'; '.join(raw.get('skipped', [])) or 'no reason given'}")
    return {
        "lr_size": lr_size,
        "steps": steps,
        "runs": summary["n"],
        "end_to_end_s": dict(summary["stages"]["end_to_end_s"]),
        "stages_median_s": {name: stats["median"] for name, stats in summary["stages"].items()},
        "pipeline_median_s": {name: stats["median"] for name, stats in summary["pipeline"].items()},
        "process_peak_rss_bytes": int(raw["process_peak_rss_mib"] * MIB),
        "threads": raw["config"]["threads"],
        "env": raw["env"],
    }
