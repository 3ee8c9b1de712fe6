"""Downloading weights: each file's sources tried in order (manifest, then the user's), a mirror
trusted only through the manifest's sha256, resumable HTTP, one error listing every failure.

A download is installed only when it is known to be whole: its size and sha256 match the manifest,
and, for a file the manifest gives neither for (``--trust-unverified``), the transfer's own length
was stated and met (``Content-Length``, a chunked body's end, or on resume a ``Content-Range``
that answers the requested range); a body that just stops is refused as incomplete. Every file
has a size cap (:func:`size_cap`: the manifest's size, else :data:`DOWNLOAD_CEILING_BYTES`, or
:data:`TEXT_CEILING_BYTES` for a text file) and a deadline (:data:`DEADLINE_GRACE_S` plus one
second per :data:`MIN_RATE_BYTES_S` bytes received). URLs are printed without their credentials
(:func:`~seesr.weights.manifest.redact_url`)."""

from __future__ import annotations

import http.client
import logging
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from seesr.errors import MissingWeightsError, WeightsError
from seesr.io.files import checked_file, read_text
from seesr.weights._shared import (
    CHUNK_BYTES, file_size, folder_of, local_file, locate_entry, looked_in, offline_error, where_lines, whole_folder,
)  # fmt: skip
from seesr.weights.checksums import Status, file_status, sha256_of
from seesr.weights.locate import DOWNLOAD_COMMAND, WEIGHTS_DIR, default_weights_dir, offline_mode
from seesr.weights.realesrgan import NCNN_PACKAGE, bundled_instead
from seesr.weights.manifest import Manifest, ManifestEntry, Source, load_manifest, redact, redact_url

logger = logging.getLogger("seesr.weights")

USER_SOURCES_FILE = "sources.txt"
"""In a weights directory: one extra source per line (``#`` comments), like ``$SEESR_WEIGHTS_SOURCES``."""
SOURCES_FILE_MAX_BYTES = 1 << 20
"""A sources list is a few lines; anything larger is refused before reading."""
DOWNLOAD_CEILING_BYTES = 8 * 2**30
"""Most bytes a file the manifest gives no size for may bring (the largest file, RAM's Swin-L, is 5.6 GB)."""
TEXT_CEILING_BYTES = 64 * 2**20
"""The same for a text file (``.json``, ``.txt``: configs, tokenizer files, tag lists are at most a few MB)."""
TEXT_SUFFIXES = (".json", ".txt")
READ_TIMEOUT_S = 60.0
"""Longest wait for the server to answer or to send the next bytes."""
DEADLINE_GRACE_S = 300.0
MIN_RATE_BYTES_S = 16 * 2**10
"""The deadline of each file: a transfer that has run for more than :data:`DEADLINE_GRACE_S` plus one
second per ``MIN_RATE_BYTES_S`` bytes received (an average under 16 KiB/s after the first five
minutes; 4 h for a 230 MB file) stops, keeping what it has for the next run."""
_REDIRECTS = (301, 302, 303, 307, 308)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class _SourceFailed(Exception):
    """One source could not deliver the file; the next one is tried."""


class _Restart(Exception):
    """The server cannot resume the partial file (416, or a Content-Range other than the one asked
    for): it is deleted and the download starts again from byte 0."""


def user_sources(weights_dir: Path) -> list[str]:
    """Sources the user adds, tried after the manifest's: ``$SEESR_WEIGHTS_SOURCES`` (separated by
    spaces or commas), then the lines of ``weights_dir/sources.txt`` (a UTF-8 text file; anything
    else is a :class:`WeightsError`). Each is a base URL (http, https) or a local folder holding
    files in the weights-directory layout."""
    bases = os.environ.get("SEESR_WEIGHTS_SOURCES", "").replace(",", " ").split()
    listing = weights_dir / USER_SOURCES_FILE
    if os.path.lexists(listing):
        for line in read_text(listing, "weights sources list", SOURCES_FILE_MAX_BYTES, WeightsError).splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                bases.append(line)
    return bases


def _user_source(base: str, entry: ManifestEntry) -> Source:
    parts = urllib.parse.urlsplit(base)
    if parts.scheme in ("http", "https"):  # the file's path goes after the base's path, before its query
        path = f"{parts.path.rstrip('/')}/{urllib.parse.quote(entry.name)}"
        return Source(url=urllib.parse.urlunsplit(parts._replace(path=path)))
    folder = Path(base[len("file://"):] if base.startswith("file://") else base).expanduser()
    return Source(folder=folder / entry.name)


def size_cap(entry: ManifestEntry) -> int:
    """Most bytes a download of ``entry`` may bring: its size in the manifest, else a ceiling."""
    if entry.size is not None:
        return entry.size
    return TEXT_CEILING_BYTES if entry.name.lower().endswith(TEXT_SUFFIXES) else DOWNLOAD_CEILING_BYTES


def _check_download(entry: ManifestEntry, path: Path) -> None:
    """Size and sha256 of a fresh download against the manifest; removes the file on mismatch."""
    size = file_size(path)
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


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


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
    try:
        checked_file(source.folder, "it", size_cap(entry), WeightsError, shown="")
    except WeightsError as problem:
        raise _SourceFailed(str(problem)) from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    shutil.copyfile(source.folder, partial)
    _check_download(entry, partial)
    os.replace(partial, dest)
    return dest


def _download_url(entry: ManifestEntry, url: str, dest: Path, progress: bool = True) -> Path:
    """Stream ``url`` to ``dest.partial`` (resuming it with a Range request), check it, rename it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    for attempt in range(2):
        offset = file_size(partial) or 0
        if offset > size_cap(entry):
            partial.unlink()
            offset = 0
        try:
            if not (offset and offset == entry.size):  # a partial file of the full size only needs checking
                _transfer(entry, url, partial, offset, progress)
        except _Restart as why:
            partial.unlink(missing_ok=True)
            if attempt == 0:
                logger.warning("%s: %s; downloading it again from the start", entry.name, why)
                continue
            raise _SourceFailed(str(why)) from None
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


def _transfer(entry: ManifestEntry, url: str, partial: Path, offset: int, progress: bool) -> None:
    """One HTTP request appending to ``partial`` from byte ``offset``: :class:`_SourceFailed` unless
    the bytes received are known to be the whole rest of the file (the partial file is kept for a
    resume when the server stated the length, else deleted); :class:`_Restart` when the server
    cannot resume at ``offset``."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise _SourceFailed("only http and https URLs are downloaded")
    headers = {"User-Agent": "seesr-weights"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    logger.info("downloading %s from %s%s", entry.name, redact_url(url),
                f" (resuming at byte {offset})" if offset else "")  # fmt: skip
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=READ_TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            raise _Restart(f"the server cannot resume at byte {offset} (HTTP 416)") from None
        if error.code in _REDIRECTS:
            raise _SourceFailed(f"HTTP {error.code}: a redirect loop (the server keeps redirecting)") from None
        raise _SourceFailed(redact(f"HTTP {error.code} {_one_line(error.reason)}", url)) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as error:
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        raise _SourceFailed(redact(_one_line(reason) or type(error).__name__, url)) from None
    with response:
        offset, total = _expected(entry, response, offset)
        try:
            _receive(entry, response, partial, offset, total, progress)
        except _SourceFailed:
            if total is None:  # a resume could not be checked: start from nothing next time
                partial.unlink(missing_ok=True)
            raise
    received = file_size(partial) or 0
    if total is not None and received != total:
        raise _SourceFailed(f"ended early ({received} of {total} bytes); run `{DOWNLOAD_COMMAND}` again to resume")
    if total is None and not response.chunked and entry.size is None and entry.sha256 is None:
        partial.unlink(missing_ok=True)
        raise _SourceFailed(
            "refused as incomplete: the server did not say how long the file is (no Content-Length) and the manifest "
            "gives no size or sha256, so a transfer cut short cannot be told from a whole file (deleted)"
        )


def _expected(entry: ManifestEntry, response: http.client.HTTPResponse, offset: int) -> tuple[int, int | None]:
    """(the byte the body starts at, the whole file's size when the server states it), checked
    against the request: a 206 must answer the range asked for, with the file's total."""
    status = response.status
    length = response.headers.get("Content-Length")
    length = int(length) if length is not None and length.strip().isdigit() else None
    if offset and status == 206:
        stated = response.headers.get("Content-Range") or ""
        found = _CONTENT_RANGE.fullmatch(stated.strip())
        first, last, total = (int(n) for n in found.groups()) if found else (-1, -1, 0)
        if first != offset or last != total - 1 or (length is not None and length != total - offset):
            stated = repr(_one_line(stated)[:80]) if stated else "no Content-Range"
            raise _Restart(f"the server answered the range bytes={offset}- with {stated}")
    elif status == 200:
        if offset:
            logger.info("%s: the server does not resume downloads; starting again", entry.name)
        offset, total = 0, length
    else:
        raise _SourceFailed(f"unexpected HTTP {status} {_one_line(response.reason)}")
    cap = size_cap(entry)
    if total is not None and total > cap:
        raise _SourceFailed(f"the server offers {total} bytes, over the {cap}-byte limit for this file")
    if total is not None and entry.size is not None and total != entry.size:
        raise _SourceFailed(f"the server offers {total} bytes, expected {entry.size}")
    return offset, total


def _receive(
    entry: ManifestEntry,
    response: http.client.HTTPResponse,
    partial: Path,
    offset: int,
    total: int | None,
    progress: bool,
) -> None:
    """Stream the body into ``partial`` from ``offset``, within the file's size cap and deadline."""
    try:
        from tqdm import tqdm
    except ImportError:  # progress bars are a nicety
        tqdm = None
    cap = size_cap(entry)
    bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=entry.name,
               disable=not progress, leave=False) if tqdm else None  # fmt: skip
    start, received = time.monotonic(), 0
    resume = f"run `{DOWNLOAD_COMMAND}` again to resume" if total is not None else "try again later"
    try:
        with open(partial, "ab" if offset else "wb") as out:
            while chunk := response.read1(CHUNK_BYTES):
                received += len(chunk)
                if offset + received > cap:
                    out.close()
                    partial.unlink(missing_ok=True)
                    raise _SourceFailed(f"the server sent more than the {cap}-byte limit for this file (deleted)")
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
                elapsed = time.monotonic() - start
                if elapsed > DEADLINE_GRACE_S + received / MIN_RATE_BYTES_S:
                    raise _SourceFailed(f"too slow: {received} bytes in {elapsed:.0f} s, under the "
                                        f"{MIN_RATE_BYTES_S // 1024} KiB/s this file needs; {resume}")  # fmt: skip
    except (OSError, http.client.HTTPException, ValueError) as error:  # dropped: keep the partial file to resume
        raise _SourceFailed(f"interrupted ({_one_line(error) or type(error).__name__}); {resume}") from None
    finally:
        if bar is not None:
            bar.close()


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
class Fetched:
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
) -> Fetched:
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
                return Fetched(path, source, tuple(passed_over))
        passed_over.append(f"{source.describe()}: {why}")
    raise _SourceFailed(
        f"{entry.name}: no source could deliver it:\n    " + "\n    ".join(passed_over)
        + f"\n    Place the file by hand at {dest} (see weights/README.md), or add a source in "
        f"$SEESR_WEIGHTS_SOURCES or {weights_dir / USER_SOURCES_FILE}"
    )


@dataclass(frozen=True)
class DownloadPlan:
    """What a download would fetch, and from where, known before any byte moves (:func:`plan_download`)."""

    entries: tuple[ManifestEntry, ...]
    sources: Mapping[str, tuple[Source, ...]]
    """Each file's sources in the order tried (the manifest's, then the user's)."""
    reachable: Mapping[tuple[str, int], bool]
    """Each source host: whether it accepted a connection just now."""

    def describe(self) -> str:
        """``a download of 20 files (at least 5.63 GB) from huggingface.co``, for a dry run."""
        sizes = [entry.size for entry in self.entries]
        known = sum(size for size in sizes if size is not None)
        size = f"{known / 1e9:.2f} GB" if known else ""
        if None in sizes:
            size = f"at least {size}" if known else "size unknown"
        hosts = [host for (host, _), up in self.reachable.items() if up]
        first = f" from {hosts[0]}" if hosts else ""
        count = len(self.entries)
        return f"a download of {count} file{'s' if count != 1 else ''} ({size}){first}"


def plan_download(entries: Sequence[ManifestEntry], weights_dir: Path, *, checking: bool = False) -> DownloadPlan:
    """The checks :func:`fetch_entries` makes before downloading, and what it would fetch: a
    :class:`MissingWeightsError` (with what was tried; ``checking``: what would be) when it could
    not start: offline mode, an unreadable sources list, or no source host reachable (a TCP
    connection, seconds at most)."""
    names = [entry.name for entry in entries]
    if offline_mode():
        raise offline_error([(e.name, looked_in(e, weights_dir)) for e in entries], weights_dir)
    try:
        extra = user_sources(weights_dir)
    except WeightsError as problem:  # the weights stay missing: the fallback may cover them, naming why
        raise MissingWeightsError(f"cannot download weights: {problem}", names, tried=f"no download: {problem}") from None
    sources = {e.name: (*e.sources, *(_user_source(base, e) for base in extra)) for e in entries}
    addresses = {_address(s) for group in sources.values() for s in group} - {None}
    with ThreadPoolExecutor(max_workers=max(1, len(addresses))) as pool:  # together: one timeout at most, not one per host
        reachable = dict(zip(sorted(addresses), pool.map(_reachable, sorted(addresses))))
    if addresses and not any(reachable.values()) and not any(
        s.folder is not None for group in sources.values() for s in group
    ):
        hosts = ", ".join(f"{host}:{port}" for host, port in sorted(addresses))
        raise MissingWeightsError(
            f"cannot download weights: {hosts} cannot be reached (no network?). Missing:\n"
            + where_lines([(e.name, looked_in(e, weights_dir)) for e in entries]),
            names,
            tried=f"a download {'would be' if checking else 'was'} tried from {len(addresses)} "
            f"source{'s' if len(addresses) != 1 else ''} ({hosts}): none {'can be reached now' if checking else 'could be reached'}",
        )
    return DownloadPlan(tuple(entries), sources, reachable)


def download_plan(
    names: Iterable[str], weights_dir: str | Path | None = None, manifest: str | Path | Manifest | None = None
) -> DownloadPlan:
    """What a download of these missing manifest files would fetch (:func:`plan_download`), without
    downloading: what ``seesr upscale --download --dry-run`` decides with. A name the manifest does
    not list cannot be downloaded (:class:`MissingWeightsError`)."""
    names = list(names)
    weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    man = load_manifest(manifest)
    unknown = [name for name in names if name not in man.names()]
    if unknown:
        raise MissingWeightsError(f"{', '.join(unknown)}: not in the weights manifest, so not downloadable", names,
                                  tried=f"no download: {', '.join(unknown)} cannot be downloaded")  # fmt: skip
    return plan_download([man[name] for name in names], weights_dir, checking=True)


def fetch_entries(
    entries: Sequence[ManifestEntry],
    weights_dir: Path,
    progress: bool,
    force: bool = False,
    trust_unverified: bool = False,
) -> dict[str, Fetched]:
    """Download ``entries`` into ``weights_dir``; one :class:`MissingWeightsError` lists every failure."""
    if not entries:
        return {}
    plan = plan_download(entries, weights_dir)
    done, failures = {}, []
    for entry in entries:
        try:
            done[entry.name] = _fetch(entry, weights_dir, plan.sources[entry.name], plan.reachable, progress=progress,
                                      force=force, trust_unverified=trust_unverified)
        except _SourceFailed as error:
            failures.append(str(error))
    if failures:
        first = " ".join(line.strip() for line in failures[0].splitlines()[:2])  # the file and its first source
        raise MissingWeightsError(
            "some weights could not be downloaded:\n  " + "\n  ".join(failures),
            [line.split(":", 1)[0] for line in failures],
            tried=f"a download was tried: {len(failures)} of {len(entries)} files could not be downloaded ({first})",
        )
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
            folder = folder_of(entry.name)
            if folder is not None:
                if folder not in whole:
                    whole[folder] = whole_folder(folder, man.folder(folder), weights_dir) is not None
                if not whole[folder] and local_file(weights_dir / entry.name) is None:
                    todo.append(entry)
            elif locate_entry(entry, weights_dir)[1] is None:
                todo.append(entry)
    covered = {e.name: model for e in todo if not e.required and (model := bundled_instead(e.name)) is not None}
    fetched = fetch_entries([e for e in todo if e.name not in covered], weights_dir, progress, force=force,
                            trust_unverified=trust_unverified)  # fmt: skip
    try:
        fetched.update(fetch_entries([e for e in todo if e.name in covered], weights_dir, progress, force=force,
                                     trust_unverified=trust_unverified))  # fmt: skip
    except MissingWeightsError as error:  # optional: the bundled model runs without it
        for name in error.missing:
            logger.warning("%s not downloaded (%s); not needed: %s runs on the model bundled with the %s package",
                           name, error.tried, covered.get(name, "Real-ESRGAN"), NCNN_PACKAGE)  # fmt: skip
    out = []
    for entry in selected:
        if entry.name in fetched:
            got = fetched[entry.name]
            out.append(file_status(entry, WEIGHTS_DIR, got.path, hash_it=False, checked=True, downloaded=True,
                               source=got.source.describe(), passed_over=got.passed_over))
        else:
            location, path = locate_entry(entry, weights_dir)
            out.append(file_status(entry, location, path, hash_it=False))
    return out
