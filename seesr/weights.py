"""Where the weights come from, and strict checks that they match the architecture.

Layout of a weights directory (the official file names; ``weights/README.md``)::

    sd-turbo/            stabilityai/sd-turbo (unet, vae, text_encoder, tokenizer, scheduler)
    seesr/               SeeSR release: unet/ and controlnet/
    DAPE.pth             SeeSR's DAPE LoRA for RAM
    ram_swin_large_14m.pth
    ram/                 RAM data files: ram_tag_list.txt, ram_tag_list_chinese.txt,
                         ram_tag_list_threshold.txt; optionally configs/ (RAM config JSONs)

``seesr/manifest.json`` lists every file with its source (a Hugging Face repo file or a URL),
size and sha256 (``null``: not checked). Each file is looked for, in order:

1. an explicit path given by the caller;
2. the weights directory (``$SEESR_WEIGHTS``, else the repository's ``weights/``);
3. the Hugging Face cache (``$HF_HUB_CACHE`` / ``$HF_HOME/hub``), for hub files;
4. a download into the weights directory, only when asked for (``download=True``,
   ``seesr weights download``), never while ``HF_HUB_OFFLINE`` is set.

The folders ``sd-turbo/`` and ``seesr/`` are resolved as a whole: the first location holding every
one of their files wins (a Hugging Face cache hit maps to the snapshot folder). Checksums are
verified after each download and by :func:`verify`; plain resolution only compares sizes (a
mismatch is logged). Functions return data and log; they never print (downloads show tqdm
progress bars on stderr unless ``progress=False``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import socket
import urllib.parse
import urllib.error
import urllib.request
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from seesr.errors import ConfigError, WeightsError

logger = logging.getLogger(__name__)

REPO_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
"""The checkout's ``weights/`` folder (absent when seesr is installed from a wheel)."""
DEFAULT_MANIFEST = Path(__file__).resolve().with_name("manifest.json")
"""Shipped inside the package, so an installed seesr knows its files too."""
DOWNLOAD_COMMAND = "seesr weights download"
DOWNLOAD_HINT = f"run `{DOWNLOAD_COMMAND}` (or see weights/README.md for where each file comes from)"

# Where each Status/VerifyResult was found.
EXPLICIT, WEIGHTS_DIR, HF_CACHE, MISSING = "explicit", "weights_dir", "hf_cache", "missing"
# Checksum states.
OK = "ok"  # sha256 matches the manifest
MISMATCH = "mismatch"  # sha256 differs from the manifest
SIZE_MISMATCH = "size-mismatch"  # size differs from the manifest (sha256 not computed)
NOT_CHECKED = "not-checked"  # the manifest has no sha256 (null): nothing to compare with
NOT_COMPUTED = "not-computed"  # a sha256 is known but was not computed (list_weights without checksums)

FOLDERS = {"sd_turbo": "sd-turbo", "seesr": "seesr"}
"""WeightPaths folder fields -> their folder in the weights directory (= manifest path prefix)."""
FILES = {
    "ram_checkpoint": "ram_swin_large_14m.pth",
    "dape_checkpoint": "DAPE.pth",
    "ram_tag_list": "ram/ram_tag_list.txt",
    "ram_tag_list_chinese": "ram/ram_tag_list_chinese.txt",
    "ram_thresholds": "ram/ram_tag_list_threshold.txt",
}
"""WeightPaths file fields -> manifest entry names."""
RAM_CONFIGS = "ram/configs"
_CHUNK = 1 << 20
LEGACY_NAMES = {
    "diffusion_pytorch_model.safetensors": "diffusion_pytorch_model.bin",
    "model.safetensors": "pytorch_model.bin",
}
"""A local folder may hold the pickle ``.bin`` weights instead of safetensors (the loaders read both)."""


def default_weights_dir() -> Path:
    """``$SEESR_WEIGHTS`` if set, else the checkout's ``weights/`` folder, else (an installed
    package) ``$XDG_CACHE_HOME/seesr/weights`` (``~/.cache/seesr/weights``)."""
    if "SEESR_WEIGHTS" in os.environ:
        return Path(os.environ["SEESR_WEIGHTS"])
    if REPO_WEIGHTS_DIR.is_dir():
        return REPO_WEIGHTS_DIR
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "seesr" / "weights"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (``HF_HUB_CACHE``,
    ``HUGGINGFACE_HUB_CACHE``, ``HF_HOME``/hub), else huggingface_hub's default."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.path.expanduser(os.environ[var])))
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.path.expanduser(os.environ["HF_HOME"]))) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def offline_mode() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value, read at call time."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(var)
        if value is not None and value.strip():
            if value.strip().upper() in {"1", "ON", "YES", "TRUE"}:
                return True
    return False


# ============================================================================ the manifest
@dataclass(frozen=True)
class ManifestEntry:
    """One file of ``seesr/manifest.json``. ``name`` is its path in the weights directory."""

    name: str
    group: str
    hf_repo: str | None = None
    hf_filename: str | None = None
    revision: str | None = None
    repo_type: str | None = None
    url: str | None = None
    size: int | None = None
    sha256: str | None = None
    required: bool = True
    source_verified: bool = True
    note: str | None = None

    @property
    def source(self) -> str:
        """Where it is downloaded from, in words."""
        if self.hf_repo:
            return f"Hugging Face {self.hf_repo}: {self.hf_filename}"
        return str(self.url)


@dataclass(frozen=True)
class Manifest:
    entries: tuple[ManifestEntry, ...]
    path: Path | None = None

    def __getitem__(self, name: str) -> ManifestEntry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise ConfigError(f"no weights file named {name!r} in the manifest; known: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def groups(self) -> list[str]:
        return sorted({e.group for e in self.entries})

    def select(self, names: Iterable[str] | None = None) -> list[ManifestEntry]:
        """Entries by name or group (``"all"``: every entry); ``None``: every required entry."""
        if names is None:
            return [e for e in self.entries if e.required]
        if isinstance(names, str):
            names = [names]
        chosen: list[ManifestEntry] = []
        unknown = []
        for name in names:
            if name == "all":
                hits = list(self.entries)
            else:
                hits = [e for e in self.entries if name in (e.name, e.group)]
            if not hits:
                unknown.append(name)
            chosen += [e for e in hits if e not in chosen]
        if unknown:
            raise ConfigError(
                f"unknown weights {', '.join(map(repr, unknown))}; use a group ({', '.join(self.groups())}, all) "
                f"or a file name ({', '.join(self.names())})"
            )
        return chosen


def default_manifest_path() -> Path:
    """``$SEESR_WEIGHTS_MANIFEST`` if set, else the package's ``manifest.json``."""
    return Path(os.environ.get("SEESR_WEIGHTS_MANIFEST", DEFAULT_MANIFEST))


def load_manifest(path: str | Path | Manifest | None = None) -> Manifest:
    """Read and validate a manifest (default: :func:`default_manifest_path`)."""
    if isinstance(path, Manifest):
        return path
    path = Path(path) if path is not None else default_manifest_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise WeightsError(f"cannot read the weights manifest {path}: {error}") from error
    problems: list[str] = []
    entries: list[ManifestEntry] = []
    items = data.get("files") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise WeightsError(f"weights manifest {path}: expected an object with a 'files' list")
    for i, item in enumerate(items):
        where = f"files[{i}]"
        try:
            entry = _parse_entry(item)
        except (KeyError, TypeError, ValueError) as error:
            problems.append(f"{where}: {error}")
            continue
        if entry.name in {e.name for e in entries}:
            problems.append(f"{where}: duplicate path {entry.name!r}")
        entries.append(entry)
    if problems:
        raise WeightsError(f"weights manifest {path} is invalid:\n  " + "\n  ".join(problems))
    return Manifest(tuple(entries), path)


def _parse_entry(item: Any) -> ManifestEntry:
    if not isinstance(item, dict):
        raise TypeError("each file must be an object")
    name = item["path"]
    if not isinstance(name, str) or not name or name.startswith("/") or ".." in name.split("/"):
        raise ValueError(f"path must be relative inside the weights directory, got {name!r}")
    hf_repo, url = item.get("hf_repo"), item.get("url")
    if bool(hf_repo) == bool(url):
        raise ValueError(f"{name}: give exactly one of hf_repo or url")
    hf_filename = item.get("hf_filename")
    if hf_repo and (not hf_filename or not (name == hf_filename or name.endswith("/" + hf_filename))):
        raise ValueError(f"{name}: hf_filename must be given and be the end of path, got {hf_filename!r}")
    size, sha256 = item.get("size"), item.get("sha256")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise ValueError(f"{name}: size must be a byte count or null, got {size!r}")
    if sha256 is not None:
        if not isinstance(sha256, str) or len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"{name}: sha256 must be 64 lowercase hex digits or null, got {sha256!r}")
    return ManifestEntry(
        name=name,
        group=str(item.get("group") or name.split("/")[0]),
        hf_repo=hf_repo,
        hf_filename=hf_filename,
        revision=item.get("revision"),
        repo_type=item.get("repo_type"),
        url=url,
        size=size,
        sha256=sha256,
        required=bool(item.get("required", True)),
        source_verified=bool(item.get("source_verified", True)),
        note=item.get("note"),
    )


# ============================================================================ results
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

    @property
    def failed(self) -> bool:
        """A wrong file, or a required file that is missing."""
        return self.checksum in (MISMATCH, SIZE_MISMATCH) or (self.location == MISSING and self.required)


@dataclass(frozen=True)
class VerifyResult(Status):
    """A :class:`Status` whose checksum was computed (``actual_sha256``; None when not hashed)."""

    actual_sha256: str | None = None


# ============================================================================ locating files
def _looked_in(entry: ManifestEntry, weights_dir: Path) -> str:
    place = str(weights_dir / entry.name)
    if entry.hf_repo:
        place += f" and the Hugging Face cache ({entry.hf_repo}: {entry.hf_filename})"
    return place


def _from_hf_cache(entry: ManifestEntry) -> Path | None:
    if not entry.hf_repo:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(
            entry.hf_repo, entry.hf_filename, cache_dir=hf_cache_dir(), revision=entry.revision,
            repo_type=entry.repo_type,
        )
    except Exception as error:  # a malformed cache must not stop the other locations
        logger.debug("Hugging Face cache lookup of %s failed: %s", entry.name, error)
        return None
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _local_file(path: Path) -> Path | None:
    """``path`` if it is a file, else its legacy ``.bin`` sibling (:data:`LEGACY_NAMES`) if that is, else None."""
    if path.is_file():
        return path
    legacy = LEGACY_NAMES.get(path.name)
    if legacy is not None and (path.parent / legacy).is_file():
        return path.parent / legacy
    return None


def _locate(
    entry: ManifestEntry, weights_dir: Path, explicit: Mapping[str, str | Path] | None = None
) -> tuple[str, Path | None]:
    """(location, path) of ``entry``: ``explicit[entry.name]`` if given (MISSING if it does not exist),
    else the weights directory, else the Hugging Face cache."""
    if explicit and explicit.get(entry.name) is not None:
        given = Path(explicit[entry.name])
        return (EXPLICIT, given) if given.is_file() else (MISSING, None)
    local = _local_file(weights_dir / entry.name)
    if local is not None:
        return WEIGHTS_DIR, local
    cached = _from_hf_cache(entry)
    if cached is not None:
        return HF_CACHE, cached
    return MISSING, None


def _size(path: Path | None) -> int | None:
    try:
        return path.stat().st_size if path is not None else None
    except OSError:
        return None


def _warn_size(entry: ManifestEntry, path: Path) -> None:
    size = _size(path)
    if entry.size is not None and size is not None and size != entry.size:
        logger.warning("%s: %s has %d bytes, the manifest says %d (run `seesr weights verify`)",
                       entry.name, path, size, entry.size)


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _status(entry: ManifestEntry, location: str, path: Path | None, hash_it: bool, cls=Status,
            checked: bool = False, **extra):
    """``checked``: the file was just verified against the manifest (a fresh download)."""
    size = _size(path)
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
    return cls(
        name=entry.name, group=entry.group, required=entry.required, location=location, path=path, size=size,
        expected_size=entry.size, expected_sha256=entry.sha256, checksum=state, source=entry.source, **extra,
    )


# ============================================================================ downloading
def _where_lines(missing: Sequence[tuple[str, str]]) -> str:
    lines = [f"  {name}: looked in {where}" for name, where in missing]
    if any("Hugging Face cache" in where for _, where in missing):
        lines.append(f"  (Hugging Face cache: {hf_cache_dir()})")
    return "\n".join(lines)


def _offline_error(missing: Sequence[tuple[str, str]], weights_dir: Path) -> WeightsError:
    return WeightsError(
        "HF_HUB_OFFLINE is set (offline mode), so seesr did not download anything, and these weights are missing:\n"
        + _where_lines(missing)
        + f"\nUnset HF_HUB_OFFLINE and run `{DOWNLOAD_COMMAND}` (it downloads into {weights_dir}), "
        "or copy the files to the places listed."
    )


def _missing_error(missing: Sequence[tuple[str, str]], weights_dir: Path) -> WeightsError:
    tail = f"\nTo get them, run `{DOWNLOAD_COMMAND}` (downloads into {weights_dir}), or see weights/README.md."
    if offline_mode():
        tail += " Downloads are disabled while HF_HUB_OFFLINE is set."
    return WeightsError("SeeSR weights not found:\n" + _where_lines(missing) + tail)


def _check_download(entry: ManifestEntry, path: Path) -> None:
    """Size and sha256 of a fresh download against the manifest; removes the file on mismatch."""
    size = _size(path)
    problem = None
    if entry.size is not None and size != entry.size:
        problem = f"{size} bytes, expected {entry.size}"
    elif entry.sha256 is not None:
        actual = sha256_of(path)
        if actual != entry.sha256:
            problem = f"sha256 {actual}, expected {entry.sha256}"
    if problem:
        path.unlink(missing_ok=True)
        raise WeightsError(f"download of {entry.name} from {entry.source} is corrupt ({problem}); it was deleted, "
                           f"run `{DOWNLOAD_COMMAND}` again")


def _download_hf(entry: ManifestEntry, dest: Path, force: bool = False) -> Path:
    import huggingface_hub

    local_dir = dest.parents[len(Path(entry.hf_filename).parts) - 1]
    local_dir.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s from %s into %s", entry.name, entry.source, local_dir)
    try:
        got = huggingface_hub.hf_hub_download(
            entry.hf_repo, entry.hf_filename, revision=entry.revision, repo_type=entry.repo_type, local_dir=local_dir,
            force_download=force,
        )
    except Exception as error:
        raise WeightsError(f"cannot download {entry.name} from {entry.source}: {error}") from error
    got = Path(got)
    if got.resolve() != dest.resolve():  # hf_hub_download(local_dir=...) puts it at local_dir/hf_filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(got, dest)
    _check_download(entry, dest)
    return dest


def _download_url(entry: ManifestEntry, dest: Path, progress: bool = True, timeout: float = 60.0) -> Path:
    """Stream ``entry.url`` to ``dest.partial`` (resuming it with a Range request), check it, rename it."""
    try:
        from tqdm import tqdm
    except ImportError:  # progress bars are a nicety
        progress, tqdm = False, _NoBar

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
        request = urllib.request.Request(entry.url, headers=headers)
        logger.info("downloading %s from %s%s", entry.name, entry.url,
                    f" (resuming at byte {offset})" if offset else "")
        try:
            # a partial file of the full size only needs checking
            response = None if offset and offset == entry.size else urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            if error.code == 416 and offset:  # nothing left to send: the partial file is complete (or wrong)
                response = None
            else:
                raise WeightsError(
                    f"cannot download {entry.name} from {entry.url}: HTTP {error.code} {error.reason}"
                ) from error
        except (urllib.error.URLError, OSError) as error:
            raise WeightsError(f"cannot download {entry.name} from {entry.url}: {error}") from error
        if response is not None:
            with response:
                status = getattr(response, "status", 200)
                if offset and status != 206:  # the server ignored the Range header: start again
                    logger.info("%s: the server does not resume downloads; starting again", entry.name)
                    offset = 0
                length = response.headers.get("Content-Length")
                total = offset + int(length) if length and length.isdigit() else entry.size
                try:
                    with open(partial, "ab" if offset else "wb") as out, tqdm(
                        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=entry.name, disable=not progress, leave=False,
                    ) as bar:
                        for chunk in iter(lambda: response.read(_CHUNK), b""):
                            out.write(chunk)
                            bar.update(len(chunk))
                except (OSError, http.client.HTTPException) as error:  # dropped: keep the partial file to resume
                    raise WeightsError(f"download of {entry.name} from {entry.url} was interrupted ({error}); "
                                       f"run `{DOWNLOAD_COMMAND}` again to resume") from error
            if length and length.isdigit() and _size(partial) != (offset + int(length)):
                raise WeightsError(f"download of {entry.name} from {entry.url} ended early "
                                   f"({_size(partial)} of {offset + int(length)} bytes); "
                                   f"run `{DOWNLOAD_COMMAND}` again to resume")
        try:
            _check_download(entry, partial)
        except WeightsError:
            if offset and attempt == 0:  # a stale partial file: throw it away and download afresh once
                logger.warning("%s: the resumed download did not match the manifest; downloading it again", entry.name)
                continue
            raise
        os.replace(partial, dest)
        return dest
    raise AssertionError("unreachable")


class _NoBar:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, n: int) -> None:
        pass


def _fetch(entry: ManifestEntry, weights_dir: Path, progress: bool = True, force: bool = False) -> Path:
    dest = weights_dir / entry.name
    if entry.hf_repo:
        return _download_hf(entry, dest, force=force)
    return _download_url(entry, dest, progress=progress)


def _download_address(entry: ManifestEntry) -> tuple[str, int]:
    """(host, port) a file is downloaded from: the Hub endpoint, or the URL's."""
    url = os.environ.get("HF_ENDPOINT", "https://huggingface.co") if entry.hf_repo else (entry.url or "")
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


def _fetch_all(
    entries: Sequence[ManifestEntry], weights_dir: Path, progress: bool, force: bool = False
) -> dict[str, Path]:
    """Download ``entries`` into ``weights_dir``; one WeightsError lists every failure."""
    if not entries:
        return {}
    if offline_mode():
        raise _offline_error([(e.name, _looked_in(e, weights_dir)) for e in entries], weights_dir)
    unreachable = sorted({a for a in map(_download_address, entries) if not _reachable(a)})
    if unreachable:
        hosts = ", ".join(f"{host}:{port}" for host, port in unreachable)
        raise WeightsError(
            f"cannot download weights: {hosts} cannot be reached (no network?). Missing:\n"
            + _where_lines([(e.name, _looked_in(e, weights_dir)) for e in entries])
        )
    done, failures = {}, []
    for entry in entries:
        try:
            done[entry.name] = _fetch(entry, weights_dir, progress=progress, force=force)
        except WeightsError as error:
            failures.append(str(error))
    if failures:
        raise WeightsError("some weights could not be downloaded:\n  " + "\n  ".join(failures))
    return done


# ============================================================================ public API
def resolve(
    name: str,
    explicit: str | Path | None = None,
    weights_dir: str | Path | None = None,
    download: bool = False,
    *,
    manifest: str | Path | Manifest | None = None,
    progress: bool = True,
) -> Path:
    """The path of manifest file ``name`` (e.g. ``"DAPE.pth"``, ``"sd-turbo/unet/config.json"``).

    Order: ``explicit`` (must exist), ``weights_dir/name``, the Hugging Face cache, then a download
    into ``weights_dir`` when ``download`` (checksum verified). Raises :class:`WeightsError`."""
    entry = load_manifest(manifest)[name]
    weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    if explicit is not None:
        explicit = Path(explicit)
        if not explicit.is_file():
            raise WeightsError(f"{name}: the given path {explicit} does not exist")
        return explicit
    path = _locate(entry, weights_dir)[1]
    if path is not None:
        _warn_size(entry, path)
        return path
    if not download:
        raise _missing_error([(name, _looked_in(entry, weights_dir))], weights_dir)
    return _fetch_all([entry], weights_dir, progress)[name]


def list_weights(
    weights_dir: str | Path | None = None,
    *,
    checksums: bool = False,
    explicit: Mapping[str, str | Path] | None = None,
    manifest: str | Path | Manifest | None = None,
) -> list[Status]:
    """Every manifest file: where it was found (explicit path by manifest name, weights dir, HF cache or
    missing), its size and checksum state. Hashing multi-GB files is slow, so sha256 is computed only
    with ``checksums=True``."""
    weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    out = []
    for entry in load_manifest(manifest).entries:
        location, path = _locate(entry, weights_dir, explicit)
        out.append(_status(entry, location, path, hash_it=checksums))
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
        location, path = _locate(entry, weights_dir, explicit)
        results.append(_status(entry, location, path, hash_it=True, cls=VerifyResult))
    return results


def download(
    names: Iterable[str] | None = None,
    weights_dir: str | Path | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    manifest: str | Path | Manifest | None = None,
) -> list[Status]:
    """Download what is missing into ``weights_dir`` and return the status of each selected file.

    ``names``: file names or groups (``sd-turbo``, ``seesr``, ``ram``, ``realesrgan``, ``all``); default:
    every required file. Files already in the weights directory or the Hugging Face cache are kept
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
                    members = [e for e in man.entries if e.name.startswith(folder + "/")]
                    whole[folder] = _whole_folder(folder, members, weights_dir) is not None
                if not whole[folder] and _local_file(weights_dir / entry.name) is None:
                    todo.append(entry)
            elif _locate(entry, weights_dir)[1] is None:
                todo.append(entry)
    fetched = _fetch_all(todo, weights_dir, progress, force=force)
    out = []
    for entry in selected:
        if entry.name in fetched:
            out.append(_status(entry, WEIGHTS_DIR, fetched[entry.name], hash_it=False, checked=True, downloaded=True))
        else:
            location, path = _locate(entry, weights_dir)
            out.append(_status(entry, location, path, hash_it=False))
    return out


def _folder_of(name: str) -> str | None:
    for folder in FOLDERS.values():
        if name.startswith(folder + "/"):
            return folder
    return None


def _whole_folder(folder: str, members: Sequence[ManifestEntry], weights_dir: Path) -> tuple[str, Path] | None:
    """(location, root) of the first place holding every required file of ``folder``, else None."""
    required = [e for e in members if e.required]
    root = weights_dir / folder
    if all(_local_file(weights_dir / e.name) is not None for e in required):
        return WEIGHTS_DIR, root
    roots = set()
    for entry in required:
        cached = _from_hf_cache(entry)
        if cached is None:
            return None
        roots.add(cached.parents[len(Path(entry.name).relative_to(folder).parts) - 1])
    return (HF_CACHE, roots.pop()) if len(roots) == 1 else None


def _resolve_paths(
    cls: type["WeightPaths"],
    weights_dir: str | Path | None,
    download: bool,
    explicit: Mapping[str, str | Path] | None,
    manifest: str | Path | Manifest | None,
    progress: bool,
) -> "WeightPaths":
    weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    man = load_manifest(manifest)
    given = dict(explicit or {})
    unknown = set(given) - {f.name for f in fields(cls)}
    if unknown:
        raise ConfigError(f"unknown WeightPaths fields {sorted(unknown)}; use {[f.name for f in fields(cls)]}")
    optional = {"dape_checkpoint", "ram_tag_list_chinese", "ram_configs"}
    off = {k for k, v in given.items() if v is None}
    if off - optional:
        raise ConfigError(f"only {sorted(optional)} can be None, not {sorted(off - optional)}")
    explicit = {k: Path(v) for k, v in given.items() if v is not None}

    for attempt in range(2):
        values: dict[str, Path | None] = {}
        missing: list[tuple[str, str]] = []  # (name, where it was looked for), for the message
        to_fetch: list[ManifestEntry] = []
        for field, folder in FOLDERS.items():
            members = [e for e in man.entries if e.name.startswith(folder + "/") and e.required]
            if field in explicit:
                root = explicit[field]
                values[field] = root
                missing += [(e.name, str(root / Path(e.name).relative_to(folder)))
                            for e in members if _local_file(root / Path(e.name).relative_to(folder)) is None]
                continue
            found = _whole_folder(folder, members, weights_dir)
            if found is not None:
                values[field] = found[1]
                logger.debug("%s: using %s (%s)", folder, found[1], found[0])
                continue
            values[field] = weights_dir / folder
            for entry in members:
                if _local_file(weights_dir / entry.name) is None:
                    missing.append((entry.name, _looked_in(entry, weights_dir)))
                    to_fetch.append(entry)
        for field, name in FILES.items():
            entry = man[name]
            if field in off:  # explicitly None: not used
                values[field] = None
                continue
            if field in explicit:
                values[field] = explicit[field]
                if not explicit[field].is_file():
                    missing.append((name, str(explicit[field])))
                continue
            location, path = _locate(entry, weights_dir)
            if path is None:
                values[field] = weights_dir / name
                missing.append((name, _looked_in(entry, weights_dir)))
                to_fetch.append(entry)
            else:
                _warn_size(entry, path)
                values[field] = path
        if "ram_configs" in given:
            values["ram_configs"] = explicit.get("ram_configs")
        elif (weights_dir / RAM_CONFIGS).is_dir():
            values["ram_configs"] = weights_dir / RAM_CONFIGS
        else:
            values["ram_configs"] = None
        if not missing:
            return cls(**values).check()
        fetchable = {e.name for e in to_fetch}
        if not download or attempt == 1 or any(name not in fetchable for name, _ in missing):
            if download and offline_mode():
                raise _offline_error(missing, weights_dir)
            raise _missing_error(missing, weights_dir)
        _fetch_all(to_fetch, weights_dir, progress)
    raise AssertionError("unreachable")


# ============================================================================ WeightPaths
@dataclass(frozen=True)
class WeightPaths:
    """Every file or folder the SeeSR pipeline reads. ``ram_configs`` is optional: without it
    the tagger uses the official full-size Swin-L / BERT configuration."""

    sd_turbo: Path
    seesr: Path
    ram_checkpoint: Path
    dape_checkpoint: Path | None
    ram_tag_list: Path
    ram_tag_list_chinese: Path | None
    ram_thresholds: Path
    ram_configs: Path | None = None
    sd2_base: Path | None = None
    """Stable Diffusion 2 base (diffusers layout, ``weights/sd-2-base/``): only for ``model="seesr"``."""

    @classmethod
    def from_dir(cls, root: str | Path | None = None) -> "WeightPaths":
        """The standard layout under ``root`` (default: :func:`default_weights_dir`), nothing else.
        ``ram/configs/`` is used when present."""
        root = Path(root) if root is not None else default_weights_dir()
        data = root / "ram"
        return cls(
            sd_turbo=root / "sd-turbo",
            seesr=root / "seesr",
            ram_checkpoint=root / "ram_swin_large_14m.pth",
            dape_checkpoint=root / "DAPE.pth",
            ram_tag_list=data / "ram_tag_list.txt",
            ram_tag_list_chinese=data / "ram_tag_list_chinese.txt",
            ram_thresholds=data / "ram_tag_list_threshold.txt",
            ram_configs=root / RAM_CONFIGS if (root / RAM_CONFIGS).is_dir() else None,
        )

    @classmethod
    def resolve(
        cls,
        weights_dir: str | Path | None = None,
        download: bool = False,
        *,
        explicit: Mapping[str, str | Path] | None = None,
        manifest: str | Path | Manifest | None = None,
        progress: bool = True,
    ) -> "WeightPaths":
        """Every path by the resolution order (module docstring): ``explicit`` (by field name, e.g.
        ``{"dape_checkpoint": "/x/DAPE.pth", "sd_turbo": "/x/sd-turbo"}``), ``weights_dir`` (default
        :func:`default_weights_dir`), the Hugging Face cache (sd-turbo maps to its snapshot folder),
        then, with ``download``, a download into ``weights_dir``. Raises one :class:`WeightsError`
        naming every missing file, where it was looked for and the download command."""
        return _resolve_paths(cls, weights_dir, download, explicit, manifest, progress)

    def required(self) -> dict[str, Path]:
        """Each required file, by field name (folders are checked by their config file)."""
        needed = {
            "sd_turbo": self.sd_turbo / "unet" / "config.json",
            "sd_turbo vae": self.sd_turbo / "vae" / "config.json",
            "sd_turbo text_encoder": self.sd_turbo / "text_encoder" / "config.json",
            "sd_turbo tokenizer": self.sd_turbo / "tokenizer",
            "sd_turbo scheduler": self.sd_turbo / "scheduler" / "scheduler_config.json",
            "seesr unet": self.seesr / "unet" / "config.json",
            "seesr controlnet": self.seesr / "controlnet" / "config.json",
        }
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name not in ("sd_turbo", "seesr") and value is not None:
                needed[field.name] = value
        return needed

    def check(self) -> "WeightPaths":
        """Raise one :class:`WeightsError` naming every missing file, else return self."""
        missing = [f"  {name}: {path}" for name, path in self.required().items() if not path.exists()]
        if missing:
            raise WeightsError("SeeSR weights not found:\n" + "\n".join(missing) + f"\nTo get them, {DOWNLOAD_HINT}.")
        return self


def check_state_dict_keys(
    what: str, missing: Iterable[str], unexpected: Iterable[str], allowed_missing: Iterable[str] = ()
) -> None:
    """Raise :class:`WeightsError` listing keys that differ from the architecture.

    Loading a checkpoint that lacks weights would silently leave random values in the model and
    produce garbage, so any difference is fatal, except keys named in ``allowed_missing``."""
    allowed = set(allowed_missing)
    missing = sorted(set(missing) - allowed)
    unexpected = sorted(set(unexpected))
    if not missing and not unexpected:
        return
    lines = [f"{what}: the checkpoint does not match the architecture."]
    if missing:
        lines.append(f"missing keys ({len(missing)}): " + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
    if unexpected:
        lines.append(
            f"unexpected keys ({len(unexpected)}): " + ", ".join(unexpected[:20]) + (" ..." if len(unexpected) > 20 else "")
        )
    lines.append(f"The file is incomplete or for another model; {DOWNLOAD_HINT}.")
    raise WeightsError("\n".join(lines))
