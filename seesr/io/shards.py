"""One folder run split across machines with no coordinator: ``seesr upscale IN -o OUT --shard K/N``.

An input belongs to shard ``sha256(its relative path) mod N`` (:func:`shard_of`; the path is
:attr:`~seesr.io.batch.Job.relative`, written with ``/``), so every machine and every retry that sees
the same inputs splits them the same way, and N workers running ``--shard 0/N`` ... ``--shard
N-1/N`` do each input exactly once. ``--shard auto/N`` (or ``auto``) takes K from the scheduler
that started the worker (:func:`parse_shard`): ``JOB_COMPLETION_INDEX`` (a Kubernetes Indexed
Job) or ``SLURM_ARRAY_TASK_ID`` (a Slurm job array, counted from ``SLURM_ARRAY_TASK_MIN`` in steps
of ``SLURM_ARRAY_TASK_STEP``; N from ``SLURM_ARRAY_TASK_COUNT`` when not given). Inside a shard,
``accelerate launch`` still splits the shard's inputs between its processes. Light: no torch.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import PurePath
from typing import Mapping, Sequence

from seesr.errors import ConfigError
from seesr.io.batch import Job

KUBERNETES_INDEX = "JOB_COMPLETION_INDEX"
"""This pod's index in a Kubernetes Indexed Job (0 .. completions-1)."""
SLURM_TASK_ID, SLURM_TASK_MIN, SLURM_TASK_STEP, SLURM_TASK_COUNT = (
    "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP", "SLURM_ARRAY_TASK_COUNT",
)  # fmt: skip
"""What Slurm tells each task of a job array (``sbatch --array=MIN-MAX[:STEP]``)."""
AUTO = "auto"
USAGE = "give K/N (this worker does shard K of N, K from 0 to N-1), auto/N or auto"


def shard_of(relative: str | PurePath, count: int) -> int:
    """The shard (0 .. count-1) of an input with this relative path: the first 8 bytes of the
    sha256 of its ``/``-separated UTF-8 text, as a big-endian number, modulo ``count``."""
    digest = hashlib.sha256(PurePath(relative).as_posix().encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``; ``source`` says where the index came from (for messages)."""

    index: int
    count: int
    source: str = "--shard"

    def select(self, jobs: Sequence[Job]) -> list[Job]:
        """The jobs of this shard, in their order (each job's relative path decides)."""
        return [job for job in jobs if shard_of(job.relative, self.count) == self.index]

    @property
    def name(self) -> str:
        """``shard2of3``: what this shard's files are named by (its resume records)."""
        return f"shard{self.index}of{self.count}"

    def describe(self) -> str:
        return f"shard {self.index} of {self.count} ({self.source})"


def _whole(name: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a whole number") from None


def _from_scheduler(text: str, environ: Mapping[str, str], count: int | None) -> tuple[int, int | None, str]:
    """(index, count or None, where it came from) from a Kubernetes or Slurm environment; an
    explicit ``count`` wins over Slurm's."""
    if KUBERNETES_INDEX in environ:
        index = _whole(KUBERNETES_INDEX, environ[KUBERNETES_INDEX])
        return index, count, f"{KUBERNETES_INDEX}={index}"
    if SLURM_TASK_ID in environ:
        task = _whole(SLURM_TASK_ID, environ[SLURM_TASK_ID])
        first = _whole(SLURM_TASK_MIN, environ.get(SLURM_TASK_MIN, "0"))
        step = _whole(SLURM_TASK_STEP, environ.get(SLURM_TASK_STEP, "1")) or 1
        if task < first or (task - first) % step:
            raise ConfigError(f"--shard {text!r}: {SLURM_TASK_ID}={task} is not in the array {first}, {first + step}, "
                              "...; give the shard as K/N")  # fmt: skip
        if count is None and SLURM_TASK_COUNT in environ:
            count = _whole(SLURM_TASK_COUNT, environ[SLURM_TASK_COUNT])
        return (task - first) // step, count, f"{SLURM_TASK_ID}={task}"
    raise ConfigError(f"--shard {text!r}: neither {KUBERNETES_INDEX} (a Kubernetes Indexed Job) nor {SLURM_TASK_ID} "
                      "(a Slurm job array) is set; give the shard as K/N")  # fmt: skip


def parse_shard(text: str, environ: Mapping[str, str] | None = None) -> Shard:
    """``K/N``, ``auto/N`` or ``auto`` (see the module) as a :class:`Shard`; a ConfigError in one
    line when it is malformed, out of range, or ``auto`` finds no scheduler's index."""
    environ = os.environ if environ is None else environ
    index_text, slash, count_text = text.strip().partition("/")
    if not index_text or (slash and not count_text):
        raise ConfigError(f"--shard {text!r}: {USAGE}")
    count = _whole(f"--shard {text!r}: N", count_text) if slash else None
    if index_text == AUTO:
        index, count, source = _from_scheduler(text, environ, count)
    elif not slash:
        raise ConfigError(f"--shard {text!r}: {USAGE}")
    else:
        index, source = _whole(f"--shard {text!r}: K", index_text), "--shard"
    if count is None:
        raise ConfigError(f"--shard {text!r}: the number of shards is not known; give it as {AUTO}/N")
    if count < 1:
        raise ConfigError(f"--shard {text!r}: N={count}, the number of shards, must be at least 1")
    if not 0 <= index < count:
        raise ConfigError(f"--shard {text!r}: shard {index} (from {source}) is not one of 0 to {count - 1}")
    return Shard(index, count, source)
