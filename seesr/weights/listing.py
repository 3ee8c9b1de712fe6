"""``seesr weights list``: every manifest file in a table (file, group, size, status, checksum,
where found), the totals, and the Real-ESRGAN file the ``realesrgan`` engine actually reads."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from seesr.weights.checksums import SIZE_MISMATCH, Status, list_weights
from seesr.weights.locate import EXPLICIT, HF_CACHE, MISSING, WEIGHTS_DIR, default_weights_dir
from seesr.weights.realesrgan import RealesrganFile, bundled_networks, realesrgan_in_use

HEADER = ("file", "group", "size", "status", "checksum", "where found")
PLACES = {WEIGHTS_DIR: "weights dir", HF_CACHE: "HF cache", EXPLICIT: "given path"}
"""How each location is named in the table."""
REALESRGAN_GROUP = "realesrgan"
UNKNOWN_SIZE = "?"


def human_size(size: int | None) -> str:
    """Bytes in decimal units (``5.63 GB``, ``67.0 MB``); ``?`` when unknown."""
    if size is None:
        return UNKNOWN_SIZE
    for unit, factor, digits in (("GB", 1e9, 2), ("MB", 1e6, 1), ("KB", 1e3, 1)):
        if size >= factor:
            return f"{size / factor:.{digits}f} {unit}"
    return f"{size} B"


def listed_size(status: Status) -> int | None:
    """The manifest's size when it declares one, else the size on disk (None: neither is known)."""
    return status.expected_size if status.expected_size is not None else status.size


@dataclass(frozen=True)
class Row:
    """One line of the table; ``present``: the file is on disk; ``required``: seesr needs it (SeeSR)."""

    name: str
    group: str
    size: int | None
    status: str
    checksum: str
    where: str
    present: bool
    required: bool = False

    def cells(self) -> tuple[str, ...]:
        return self.name, self.group, human_size(self.size), self.status, self.checksum, self.where


def _row(status: Status) -> Row:
    if status.location == MISSING:
        text = "missing" if status.required else "missing (optional)"
    else:
        text = "wrong size" if status.checksum == SIZE_MISMATCH else "present"
    where = "-" if status.path is None else f"{PLACES.get(status.location, status.location)}: {status.path}"
    checksum = "unverified" if status.unverified else "sha256"
    present = status.location != MISSING
    return Row(status.name, status.group, listed_size(status), text, checksum, where, present, status.required)


def _realesrgan_rows(rows: list[Row], used: RealesrganFile, weights_dir: Path) -> list[Row]:
    """``rows`` with a bundled model's file in use marked (an official file) or added (the conversion)."""
    if used.path is None:
        return rows
    for i, row in enumerate(rows):
        if row.present and row.where.endswith(str(used.path)):
            rows[i] = dataclasses.replace(row, status=f"{row.status}, in use")
            return rows
    on_disk = used.path.is_file()
    where = f"{'weights dir' if used.path.parent == weights_dir else 'cache'}: {used.path}"
    size = used.path.stat().st_size if on_disk else None
    status = "in use" if on_disk else "made on first use"
    return [*rows, Row(used.path.name, REALESRGAN_GROUP, size, status, "-", where, on_disk)]


def _models_text(models: tuple[str, ...]) -> str:
    """``realesrgan-x4plus``, or one network's models together: ``realesr-animevideov3-x2/-x3/-x4``."""
    if len(models) == 1:
        return models[0]
    stem = models[0].rsplit("-", 1)[0]
    return f"{stem}-" + "/-".join(model.rsplit("-", 1)[1] for model in models)


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Columns two spaces apart, each as wide as its widest cell; the last column is not padded."""
    table = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(header) - 1)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + "  " + cells[-1] for cells in table]


STATUS_HEADER = ("file", "group", "size", "check", "checksum", "where found")
"""The table of ``seesr weights verify`` and ``download``: the columns of ``list``, with the check done
(``ok``, ``mismatch``, ``size-mismatch``, ``not-checked``, ``missing``) for the status."""


def status_table(statuses: Sequence[Status]) -> str:
    """``seesr weights verify`` / ``download``: a header and one row per file, sizes as ``list`` gives
    them (on disk, decimal units), each downloaded file followed by the sources passed over."""
    rows = []
    for status in statuses:
        size = human_size(status.size) if status.size is not None else "-"
        where = f"downloaded from {status.source} into {status.path}" if status.downloaded else _row(status).where
        rows.append((status.name, status.group, size, status.checksum, _row(status).checksum, where))
    header, *lines = format_table(STATUS_HEADER, rows)
    out = [header]
    for status, line in zip(statuses, lines):
        out += [line, *(f"    not from {note}" for note in status.passed_over)]
    return "\n".join(out)


def _total(label: str, rows: Sequence[Row]) -> str:
    """``label: N files (R required), SIZE``; ``at least`` when some sizes are unknown."""
    sizes = [row.size for row in rows]
    unknown = sum(size is None for size in sizes)
    known = human_size(sum(size for size in sizes if size is not None))
    files = f"{len(rows)} file{'' if len(rows) == 1 else 's'} ({sum(row.required for row in rows)} required)"
    if not unknown:
        return f"{label}: {files}, {known}"
    if unknown == len(rows):
        return f"{label}: {files}, size unknown"
    return f"{label}: {files}, at least {known} ({unknown} of unknown size)"


def weights_table(
    weights_dir: str | Path | None = None, names: Iterable[str] | None = None, *, manifest: str | Path | None = None
) -> str:
    """The ``seesr weights list`` text: a header and one row per file (``names``: files or groups,
    default every file), unless filtered out the file each bundled Real-ESRGAN network is read from,
    and the totals."""
    weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    statuses = list_weights(weights_dir, names=names, manifest=manifest)
    rows = [_row(status) for status in statuses]
    used: dict[str, RealesrganFile] = {}
    if names is None or any(s.group == REALESRGAN_GROUP for s in statuses):
        for first, models in bundled_networks().items():
            used[_models_text(models)] = realesrgan_in_use(weights_dir, first)
            rows = _realesrgan_rows(rows, used[_models_text(models)], weights_dir)
    lines = format_table(HEADER, [row.cells() for row in rows])
    lines += [
        "",
        _total("total", rows),
        _total("present", [row for row in rows if row.present]),
        _total("missing", [row for row in rows if not row.present]),
    ]
    if any(s.unverified for s in statuses):
        lines.append("unverified: no published sha256; mirrors are used for these only with --trust-unverified")
    for models, file in used.items():
        lines.append(f"Real-ESRGAN {models}: {file.path or 'none'} ({file.how})")
    return "\n".join(lines)
