"""Checking files against the manifest: sizes, sha256 (remembered per file version), and the
status of every file (``seesr weights list`` / ``verify``)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from seesr.weights._shared import CHUNK_BYTES, file_size, locate_entry
from seesr.weights.locate import LEGACY_NAMES, MISSING, default_weights_dir
from seesr.weights.manifest import Manifest, ManifestEntry, load_manifest

logger = logging.getLogger("seesr.weights")

# Checksum states.
OK = "ok"  # sha256 matches the manifest
MISMATCH = "mismatch"  # sha256 differs from the manifest
SIZE_MISMATCH = "size-mismatch"  # size differs from the manifest (sha256 not computed)
NOT_CHECKED = "not-checked"  # the manifest has no sha256 (null): nothing to compare with
NOT_COMPUTED = "not-computed"  # a sha256 is known but was not computed (list_weights without checksums)



@dataclass(frozen=True)
class Status:
    """Where one manifest file is and what is known about it."""

    name: str
    group: str
    required: bool
    location: str  # EXPLICIT | WEIGHTS_DIR | HF_CACHE | MISSING
    path: Path | None
    size: int | None  # bytes on disk
    expected_size: int | None
    expected_sha256: str | None
    checksum: str  # OK | MISMATCH | SIZE_MISMATCH | NOT_CHECKED | NOT_COMPUTED | MISSING
    source: str = ""
    downloaded: bool = False
    passed_over: tuple[str, ...] = ()  # sources tried before the one that delivered, with why

    @property
    def unverified(self) -> bool:
        """No published sha256: mirrors are used for this file only with ``--trust-unverified``."""
        return self.expected_sha256 is None

    @property
    def failed(self) -> bool:
        """A wrong file, or a required file that is missing."""
        return self.checksum in (MISMATCH, SIZE_MISMATCH) or (self.location == MISSING and self.required)


@dataclass(frozen=True)
class VerifyResult(Status):
    """A :class:`Status` whose checksum was computed (``actual_sha256``; None when not hashed)."""

    actual_sha256: str | None = None


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_cache_path() -> Path:
    """Where computed sha256 values are remembered (by path, size and modification time), so a file is
    hashed once per version rather than at every load: ``$XDG_CACHE_HOME/seesr/checksums.json``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "seesr" / "checksums.json"


def _remembered_sha256(path: Path) -> str:
    """sha256 of ``path``, from :func:`checksum_cache_path` when the file is unchanged since last time."""
    stat = path.stat()
    key, stamp = str(path.resolve()), [stat.st_size, stat.st_mtime_ns]
    cache_file = checksum_cache_path()
    try:
        known = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    record = known.get(key) if isinstance(known, dict) else None
    if isinstance(record, dict) and record.get("stamp") == stamp and isinstance(record.get("sha256"), str):
        return record["sha256"]
    digest = sha256_of(path)
    known = known if isinstance(known, dict) else {}
    known[key] = {"stamp": stamp, "sha256": digest}
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        temp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps(known), encoding="utf-8")
        os.replace(temp, cache_file)
    except OSError as error:  # a read-only home: hash again next time
        logger.debug("cannot remember checksums in %s: %s", cache_file, error)
    return digest


def checksum_problem(entry: ManifestEntry, path: Path) -> str | None:
    """How ``path`` differs from the manifest's size / sha256, or None (also when nothing is known)."""
    size = file_size(path)
    if entry.size is not None and size != entry.size:
        return f"has {size} bytes, the manifest says {entry.size}"
    if entry.sha256 is not None:
        actual = _remembered_sha256(path)
        if actual != entry.sha256:
            return f"has sha256 {actual}, the manifest says {entry.sha256}"
    return None


def file_status(entry: ManifestEntry, location: str, path: Path | None, hash_it: bool, cls: type[Status] = Status,
                checked: bool = False, **extra: object) -> Status:
    """The :class:`Status` (or ``cls``) of one manifest file found at ``path``: its size and checksum
    state (sha256 computed only with ``hash_it``; ``checked``: just verified, a fresh download)."""
    size = file_size(path)
    actual = None
    if location == MISSING or path is None:
        state = MISSING
    elif LEGACY_NAMES.get(Path(entry.name).name) == path.name:  # a .bin stand-in: the manifest describes another file
        state = NOT_CHECKED
    elif entry.size is not None and size != entry.size:
        state = SIZE_MISMATCH
    elif entry.sha256 is None:
        state = NOT_CHECKED
    elif checked:
        state = OK
    elif not hash_it:
        state = NOT_COMPUTED
    else:
        actual = sha256_of(path)
        state = OK if actual == entry.sha256 else MISMATCH
    if cls is VerifyResult:
        extra["actual_sha256"] = actual
    extra.setdefault("source", entry.source)
    return cls(
        name=entry.name, group=entry.group, required=entry.required, location=location, path=path, size=size,
        expected_size=entry.size, expected_sha256=entry.sha256, checksum=state, **extra,
    )


def list_weights(
    weights_dir: str | Path | None = None,
    *,
    names: Iterable[str] | None = None,
    checksums: bool = False,
    explicit: Mapping[str, str | Path] | None = None,
    manifest: str | Path | Manifest | None = None,
) -> list[Status]:
    """Every manifest file (``names``: files or groups only): where it was found (explicit path by
    manifest name, weights dir, HF cache or missing), its size and checksum state. Hashing multi-GB
    files is slow, so sha256 is computed only with ``checksums=True``."""
    weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    man = load_manifest(manifest)
    out = []
    for entry in man.select(names) if names is not None else man.entries:
        location, path = locate_entry(entry, weights_dir, explicit)
        out.append(file_status(entry, location, path, hash_it=checksums))
    return out


def verify(
    weights_dir: str | Path | None = None,
    *,
    names: Iterable[str] | None = None,
    explicit: Mapping[str, str | Path] | None = None,
    manifest: str | Path | Manifest | None = None,
) -> list[VerifyResult]:
    """Size and sha256 of each file (``names``: files or groups; default every file) against the
    manifest, wherever it is found. ``result.failed``: wrong file, or required and missing."""
    weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    man = load_manifest(manifest)
    entries = man.select(names) if names is not None else list(man.entries)
    results = []
    for entry in entries:
        location, path = locate_entry(entry, weights_dir, explicit)
        results.append(file_status(entry, location, path, hash_it=True, cls=VerifyResult))
    return results
