"""Downloading weights: each file's sources tried in order (manifest, then the user's), a mirror
trusted only through the manifest's sha256, resumable HTTP, one error listing every failure."""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from seesr.errors import MissingWeightsError
from seesr.weights.checksums import _CHUNK, Status, _status, sha256_of
from seesr.weights.locate import (
    DOWNLOAD_COMMAND, WEIGHTS_DIR, _folder_of, _local_file, _locate, _looked_in, _offline_error, _size, _where_lines,
    _whole_folder, default_weights_dir, offline_mode,
)  # fmt: skip
from seesr.weights.manifest import Manifest, ManifestEntry, Source, load_manifest

logger = logging.getLogger("seesr.weights")

USER_SOURCES_FILE = "sources.txt"
"""In a weights directory: one extra source per line (``#`` comments), like ``$SEESR_WEIGHTS_SOURCES``."""


class _SourceFailed(Exception):
    """One source could not deliver the file; the next one is tried."""


def user_sources(weights_dir: Path) -> list[str]:
    """Sources the user adds, tried after the manifest's: ``$SEESR_WEIGHTS_SOURCES`` (separated by
    spaces or commas), then the lines of ``weights_dir/sources.txt``. Each is a base URL (http, https)
    or a local folder holding files in the weights-directory layout."""
    bases = os.environ.get("SEESR_WEIGHTS_SOURCES", "").replace(",", " ").split()
    listing = weights_dir / USER_SOURCES_FILE
    if listing.is_file():
        for line in listing.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                bases.append(line)
    return bases


def _user_source(base: str, entry: ManifestEntry) -> Source:
    if urllib.parse.urlparse(base).scheme in ("http", "https"):
        return Source(url=f"{base.rstrip('/')}/{urllib.parse.quote(entry.name)}")
    folder = Path(base[len("file://"):] if base.startswith("file://") else base).expanduser()
    return Source(folder=folder / entry.name)


def _check_download(entry: ManifestEntry, path: Path) -> None:
    """Size and sha256 of a fresh download against the manifest; removes the file on mismatch."""
    size = _size(path)
    problem = None
    if entry.size is not None and size != entry.size:
        problem = f"{size} bytes, expected {entry.size}"
    elif entry.sha256 is not None:
        actual = sha256_of(path)
        if actual != entry.sha256:
            problem = f"wrong checksum: sha256 {actual}, expected {entry.sha256}"
    if problem:
        path.unlink(missing_ok=True)
        raise _SourceFailed(f"{problem} (deleted)")


def _download_hf(entry: ManifestEntry, source: Source, dest: Path, force: bool = False) -> Path:
    import huggingface_hub

    local_dir = dest.parents[len(Path(source.hf_filename).parts) - 1]
    local_dir.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s from %s into %s", entry.name, source.describe(), local_dir)
    try:
        got = huggingface_hub.hf_hub_download(
            source.hf_repo, source.hf_filename, revision=source.revision, repo_type=source.repo_type,
            local_dir=local_dir, force_download=force,
        )
    except Exception as error:  # 404 / gone / gated / network: move on to the next source
        raise _SourceFailed(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__) from error
    got = Path(got)
    if got.resolve() != dest.resolve():  # hf_hub_download(local_dir=...) puts it at local_dir/hf_filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(got, dest)
    _check_download(entry, dest)
    return dest


def _copy_local(entry: ManifestEntry, source: Source, dest: Path) -> Path:
    if not source.folder.is_file():
        raise _SourceFailed("no such file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    shutil.copyfile(source.folder, partial)
    _check_download(entry, partial)
    os.replace(partial, dest)
    return dest


def _download_url(entry: ManifestEntry, url: str, dest: Path, progress: bool = True, timeout: float = 60.0) -> Path:
    """Stream ``url`` to ``dest.partial`` (resuming it with a Range request), check it, rename it."""
    try:
        from tqdm import tqdm
    except ImportError:  # progress bars are a nicety
        progress, tqdm = False, None

    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    for attempt in range(2):
        offset = _size(partial) or 0
        if entry.size is not None and offset > entry.size:
            partial.unlink()
            offset = 0
        headers = {"User-Agent": "seesr-weights"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        request = urllib.request.Request(url, headers=headers)
        logger.info("downloading %s from %s%s", entry.name, url, f" (resuming at byte {offset})" if offset else "")
        try:
            # a partial file of the full size only needs checking
            response = None if offset and offset == entry.size else urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            if error.code == 416 and offset:  # nothing left to send: the partial file is complete (or wrong)
                response = None
            else:
                raise _SourceFailed(f"HTTP {error.code} {error.reason}") from error
        except (urllib.error.URLError, OSError) as error:
            raise _SourceFailed(str(error)) from error
        if response is not None:
            with response:
                status = getattr(response, "status", 200)
                if offset and status != 206:  # the server ignored the Range header: start again
                    logger.info("%s: the server does not resume downloads; starting again", entry.name)
                    offset = 0
                length = response.headers.get("Content-Length")
                total = offset + int(length) if length and length.isdigit() else entry.size
                bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                           desc=entry.name, disable=not progress, leave=False) if tqdm else None
                try:
                    with open(partial, "ab" if offset else "wb") as out:
                        for chunk in iter(lambda: response.read(_CHUNK), b""):
                            out.write(chunk)
                            if bar is not None:
                                bar.update(len(chunk))
                except (OSError, http.client.HTTPException) as error:  # dropped: keep the partial file to resume
                    raise _SourceFailed(f"interrupted ({error}); run `{DOWNLOAD_COMMAND}` again to resume") from error
                finally:
                    if bar is not None:
                        bar.close()
            if length and length.isdigit() and _size(partial) != (offset + int(length)):
                raise _SourceFailed(f"ended early ({_size(partial)} of {offset + int(length)} bytes); "
                                    f"run `{DOWNLOAD_COMMAND}` again to resume")
        try:
            _check_download(entry, partial)
        except _SourceFailed:
            if offset and attempt == 0:  # a stale partial file: throw it away and download afresh once
                logger.warning("%s: the resumed download did not match the manifest; downloading it again", entry.name)
                continue
            raise
        os.replace(partial, dest)
        return dest
    raise AssertionError("unreachable")


def _address(source: Source) -> tuple[str, int] | None:
    """(host, port) a source is downloaded from (the Hub endpoint, or the URL's); None for a folder."""
    if source.folder is not None:
        return None
    url = source.download_url() or os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parts = urllib.parse.urlparse(url)
    return parts.hostname or "", parts.port or (80 if parts.scheme == "http" else 443)


def _reachable(address: tuple[str, int], timeout: float = 5.0) -> bool:
    """Whether the address resolves and accepts a TCP connection, so that an offline machine
    learns it at once instead of after minutes of retries per file."""
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class _Fetched:
    path: Path
    source: Source
    passed_over: tuple[str, ...]  # "source: why it was not used", in the order tried


def _fetch(
    entry: ManifestEntry,
    weights_dir: Path,
    sources: Sequence[Source],
    reachable: Mapping[tuple[str, int] | None, bool],
    *,
    progress: bool = True,
    force: bool = False,
    trust_unverified: bool = False,
) -> _Fetched:
    """Try ``sources`` in order until one delivers a file that passes the manifest's checks."""
    dest = weights_dir / entry.name
    passed_over: list[str] = []
    for source in sources:
        why = None
        if not source.official and entry.sha256 is None and not trust_unverified:
            why = "skipped: a mirror, and no published sha256 to check its file against (--trust-unverified accepts it)"
        elif not reachable.get(_address(source), True):
            host, port = _address(source)
            why = f"{host}:{port} cannot be reached"
        if why is None:
            try:
                if source.folder is not None:
                    path = _copy_local(entry, source, dest)
                elif source.download_url() is None:
                    path = _download_hf(entry, source, dest, force=force)
                else:
                    path = _download_url(entry, source.download_url(), dest, progress=progress)
            except _SourceFailed as error:
                why = str(error)
            else:
                if passed_over:
                    logger.warning("%s: downloaded from %s after: %s", entry.name, source.describe(), "; ".join(passed_over))
                if entry.sha256 is None:  # only the publisher's copy, or a mirror the user chose to trust
                    logger.log(logging.INFO if source.official else logging.WARNING,
                               "%s: no published sha256; accepted from %s unchecked", entry.name, source.describe())
                return _Fetched(path, source, tuple(passed_over))
        passed_over.append(f"{source.describe()}: {why}")
    raise _SourceFailed(
        f"{entry.name}: no source could deliver it:\n    " + "\n    ".join(passed_over)
        + f"\n    Place the file by hand at {dest} (see weights/README.md), or add a source in "
        f"$SEESR_WEIGHTS_SOURCES or {weights_dir / USER_SOURCES_FILE}"
    )


def _fetch_all(
    entries: Sequence[ManifestEntry],
    weights_dir: Path,
    progress: bool,
    force: bool = False,
    trust_unverified: bool = False,
) -> dict[str, _Fetched]:
    """Download ``entries`` into ``weights_dir``; one :class:`MissingWeightsError` lists every failure."""
    if not entries:
        return {}
    if offline_mode():
        raise _offline_error([(e.name, _looked_in(e, weights_dir)) for e in entries], weights_dir)
    extra = user_sources(weights_dir)
    sources = {e.name: (*e.sources, *(_user_source(base, e) for base in extra)) for e in entries}
    addresses = {_address(s) for group in sources.values() for s in group} - {None}
    reachable = {address: _reachable(address) for address in sorted(addresses)}
    if addresses and not any(reachable.values()) and not any(
        s.folder is not None for group in sources.values() for s in group
    ):
        hosts = ", ".join(f"{host}:{port}" for host, port in sorted(addresses))
        raise MissingWeightsError(
            f"cannot download weights: {hosts} cannot be reached (no network?). Missing:\n"
            + _where_lines([(e.name, _looked_in(e, weights_dir)) for e in entries]),
            [e.name for e in entries],
        )
    done, failures = {}, []
    for entry in entries:
        try:
            done[entry.name] = _fetch(entry, weights_dir, sources[entry.name], reachable, progress=progress,
                                      force=force, trust_unverified=trust_unverified)
        except _SourceFailed as error:
            failures.append(str(error))
    if failures:
        raise MissingWeightsError("some weights could not be downloaded:\n  " + "\n  ".join(failures),
                                  [line.split(":", 1)[0] for line in failures])
    return done


def download(
    names: Iterable[str] | None = None,
    weights_dir: str | Path | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    manifest: str | Path | Manifest | None = None,
    trust_unverified: bool = False,
) -> list[Status]:
    """Download what is missing into ``weights_dir`` and return the status of each selected file.

    ``names``: file names or groups (``sd-turbo``, ``sd2-base``, ``seesr``, ``ram``, ``realesrgan``,
    ``all``); default: every required file. Each file's sources are tried in order (manifest, then
    :func:`user_sources`); a mirror is used only for a file with a published sha256 unless
    ``trust_unverified``; ``Status.passed_over`` says which sources failed and why. Files already in the weights directory or the Hugging Face cache are kept
    (``force=True`` downloads them again into the weights directory). Folders stay whole: if no single
    location holds all of ``sd-turbo/`` (or ``seesr/``), its files missing from the weights directory
    are downloaded there. Raises :class:`WeightsError` (offline mode, network or checksum failure)."""
    weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    man = load_manifest(manifest)
    selected = man.select(names)
    if force:
        todo = list(selected)
    else:
        todo, whole = [], {}
        for entry in selected:
            folder = _folder_of(entry.name)
            if folder is not None:
                if folder not in whole:
                    whole[folder] = _whole_folder(folder, man.folder(folder), weights_dir) is not None
                if not whole[folder] and _local_file(weights_dir / entry.name) is None:
                    todo.append(entry)
            elif _locate(entry, weights_dir)[1] is None:
                todo.append(entry)
    fetched = _fetch_all(todo, weights_dir, progress, force=force, trust_unverified=trust_unverified)
    out = []
    for entry in selected:
        if entry.name in fetched:
            got = fetched[entry.name]
            out.append(_status(entry, WEIGHTS_DIR, got.path, hash_it=False, checked=True, downloaded=True,
                               source=got.source.describe(), passed_over=got.passed_over))
        else:
            location, path = _locate(entry, weights_dir)
            out.append(_status(entry, location, path, hash_it=False))
    return out
