"""Folder runs: resumable, and split across processes or GPUs with accelerate.

    seesr upscale photos/ -o out/                                                          # one process
    accelerate launch --multi_gpu --num_processes 2 -m seesr.cli upscale photos/ -o out/   # one per GPU

Without GPUs the same command runs N CPU processes (gloo). The command line splits the jobs
between processes; this module only runs a share of them. Each process records what it does in
``OUT/.seesr-batch/rank<N>.jsonl`` (``shard<K>of<N>-rank<N>.jsonl`` for a worker of a sharded run,
:mod:`seesr.io.shards`: no two workers write the same log) (JSON lines, no pickle):
``started`` then ``done`` or ``failed`` per file, with a hash of the settings. A re-run skips files
whose output exists (never overwritten without ``--overwrite``) and redoes the rest: outputs are
written atomically, so a file interrupted mid-way has no output and is simply done again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Sequence, TypeVar

from seesr.errors import ConfigError, SeesrError
from seesr.io.files import read_bytes

STATE_DIR = ".seesr-batch"
RUN_LOG_MAX_BYTES = 256 * 2**20
"""Largest run log read (three lines of about 250 bytes per file: some 300,000 files)."""


@dataclass(frozen=True)
class Job:
    """One input, where its output goes, and its ``--compare`` side file (if asked for)."""

    source: Path
    target: Path
    compare: Path | None = None


def settings_hash(settings: Any) -> str:
    """A short hash of everything that changes the output (seed included)."""
    values = asdict(settings) if hasattr(settings, "__dataclass_fields__") else dict(settings)
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


class BatchState:
    """Per-process JSON-lines log of a folder run; reads every process's log to decide what is done."""

    def __init__(self, output_dir: Path, rank: int = 0, shard: str | None = None) -> None:
        self.folder = output_dir / STATE_DIR
        self.log = self.folder / (f"{shard}-rank{rank}.jsonl" if shard else f"rank{rank}.jsonl")
        self.rank = rank

    def finished(self) -> dict[str, str]:
        """Target path -> settings hash of every file recorded done (and not redone since)."""
        done: dict[str, str] = {}
        if not self.folder.is_dir():
            return done
        for log in sorted(self.folder.glob("*rank*.jsonl")):
            text = read_bytes(log, "run log", RUN_LOG_MAX_BYTES, ConfigError).decode(errors="replace")
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                if not isinstance(record, dict) or not isinstance(record.get("target"), str):
                    continue
                if record.get("status") == "done":
                    done[record["target"]] = record["settings"]
                else:
                    done.pop(record["target"], None)
        return done

    def record(self, job: Job, status: str, settings: str, **extra: Any) -> None:
        """Append one line; a log that cannot be written (read-only, disk full) is a ConfigError."""
        entry = {"source": str(job.source), "target": str(job.target), "status": status, "settings": settings,
                 "rank": self.rank, "time": time.time(), **extra}  # fmt: skip
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with self.log.open("a") as handle:
                handle.write(json.dumps(entry) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise ConfigError(f"cannot write the run log {self.log}: {error.strerror or error}") from None


Outcome = TypeVar("Outcome")


class BatchReport(Generic[Outcome]):
    """What a folder run says per file: one line on stdout per file done, one on stderr per file
    skipped or failed. The command line subclasses it for ``--json`` and ``--quiet``."""

    def done(self, job: Job, outcome: Outcome) -> None:
        print(f"{job.target}: {outcome}")

    def skipped(self, job: Job, reason: str) -> None:
        print(f"{job.source}: skipped, {reason}", file=sys.stderr)

    def failed(self, job: Job, error: str) -> None:
        print(f"{job.source}: failed: {error}", file=sys.stderr)


def run_jobs(
    jobs: Sequence[Job],
    process: Callable[[Job], Outcome],
    *,
    settings: str,
    state: BatchState | None,
    overwrite: bool = False,
    report: BatchReport[Outcome] | None = None,
) -> tuple[int, int, int]:
    """Run ``process(job)`` for each job not already done, reporting each file once. Returns
    (done, skipped, failed). A failure of one file does not stop the others."""
    report = report if report is not None else BatchReport()
    finished = state.finished() if state is not None else {}
    done = skipped = failed = 0
    for job in jobs:
        if job.target.exists() and not overwrite:
            earlier = "finished by an earlier run" if finished.get(str(job.target)) == settings else "exists"
            report.skipped(job, f"{job.target} {earlier} (use --overwrite to redo)")
            skipped += 1
            continue
        if state is not None:
            state.record(job, "started", settings)
        try:
            outcome = process(job)
        except SeesrError as error:
            failed += 1
            if state is not None:
                state.record(job, "failed", settings, error=str(error).splitlines()[0])
            report.failed(job, str(error).splitlines()[0])
            continue
        if state is not None:
            state.record(job, "done", settings)
        done += 1
        report.done(job, outcome)
    return done, skipped, failed
