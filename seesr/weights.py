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
import shutil
import socket
import urllib.parse
import urllib.error
import urllib.request
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from seesr.errors import ConfigError, MissingWeightsError, WeightsError

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

FOLDERS = {"sd_turbo": "sd-turbo", "seesr": "seesr", "sd2_base": "sd-2-base"}
"""WeightPaths folder fields -> their folder in the weights directory (= manifest path prefix)."""
OPTIONAL_FOLDERS = {"sd2_base"}
"""Folders only one model needs (SD-2-base: the non-turbo SeeSR): used when present, else None."""
OPTIONAL = {"dape_checkpoint", "ram_tag_list_chinese", "ram_configs", *OPTIONAL_FOLDERS}
"""WeightPaths fields that may be None."""
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
class Source:
    """One place a file can be downloaded from: a Hugging Face repo file (through ``endpoint``, a hub
    mirror such as hf-mirror.com, when given), a URL, or a local folder. ``official``: the publisher's
    own copy; any other source is a mirror, trusted only through the manifest's sha256."""

    hf_repo: str | None = None
    hf_filename: str | None = None
    revision: str | None = None
    repo_type: str | None = None
    endpoint: str | None = None
    url: str | None = None
    folder: Path | None = None
    official: bool = False

    def describe(self) -> str:
        """Where, in words (used in messages and ``seesr weights list``)."""
        if self.hf_repo:
            hub = f" via {self.endpoint}" if self.endpoint else ""
            return f"Hugging Face {self.hf_repo}{hub}: {self.hf_filename}"
        return str(self.url or self.folder)

    def download_url(self) -> str | None:
        """The plain URL of this source (None for the default hub, reached with ``hf_hub_download``,
        and for local folders)."""
        if self.hf_repo and self.endpoint:
            return f"{self.endpoint.rstrip('/')}/{self.hf_repo}/resolve/{self.revision or 'main'}/{self.hf_filename}"
        return self.url


@dataclass(frozen=True)
class ManifestEntry:
    """One file of ``seesr/manifest.json``. ``name`` is its path in the weights directory; ``sources``
    are tried in order; ``evidence`` says where ``sha256`` (and the sources) were confirmed."""

    name: str
    group: str
    sources: tuple[Source, ...]
    size: int | None = None
    sha256: str | None = None
    required: bool = True
    evidence: str | None = None
    note: str | None = None

    @property
    def source(self) -> str:
        """The first source, in words."""
        return self.sources[0].describe()

    def hub_sources(self) -> list[Source]:
        """Hugging Face sources on the default hub (the ones a local Hugging Face cache can hold)."""
        return [s for s in self.sources if s.hf_repo and not s.endpoint]


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

    def folder(self, folder: str) -> list[ManifestEntry]:
        """Every entry under ``folder/`` (a model folder is only usable whole)."""
        return [e for e in self.entries if e.name.startswith(folder + "/")]

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
    repositories = data.get("repositories") or {}
    for i, item in enumerate(items):
        where = f"files[{i}]"
        try:
            entry = _parse_entry(item, repositories)
        except (KeyError, TypeError, ValueError) as error:
            problems.append(f"{where}: {error}")
            continue
        if entry.name in {e.name for e in entries}:
            problems.append(f"{where}: duplicate path {entry.name!r}")
        entries.append(entry)
    if problems:
        raise WeightsError(f"weights manifest {path} is invalid:\n  " + "\n  ".join(problems))
    return Manifest(tuple(entries), path)


def _parse_source(item: Any, file: str | None, official: bool = False) -> Source:
    """A source object: ``{"hf_repo", "revision", "repo_type", "endpoint", "official"}`` (the file is
    ``file``, or ``hf_filename``) or ``{"url"}`` (``{file}`` in it is replaced by ``file``)."""
    if not isinstance(item, dict):
        raise TypeError("each source must be an object")
    hf_repo, url = item.get("hf_repo"), item.get("url")
    if bool(hf_repo) == bool(url):
        raise ValueError("a source gives exactly one of hf_repo or url")
    if url and "{file}" in url:
        if file is None:
            raise ValueError(f"{url}: '{{file}}' needs the entry's 'file'")
        url = url.replace("{file}", file)
    hf_filename = item.get("hf_filename", file) if hf_repo else None
    if hf_repo and not hf_filename:
        raise ValueError(f"{hf_repo}: no file name (give 'file' or 'hf_filename')")
    return Source(hf_repo=hf_repo, hf_filename=hf_filename, revision=item.get("revision"),
                  repo_type=item.get("repo_type"), endpoint=item.get("endpoint"), url=url,
                  official=bool(item.get("official", official)))


def _parse_entry(item: Any, repositories: Mapping[str, Any]) -> ManifestEntry:
    """A file: ``path`` plus its sources, either ``repository`` (a key of the manifest's
    ``repositories``, whose sources serve ``file``), ``sources`` (a list), or one ``hf_repo`` /
    ``url`` (the publisher's own copy)."""
    if not isinstance(item, dict):
        raise TypeError("each file must be an object")
    name = item["path"]
    if not isinstance(name, str) or not name or name.startswith("/") or ".." in name.split("/"):
        raise ValueError(f"path must be relative inside the weights directory, got {name!r}")
    file = item.get("file")
    evidence = item.get("evidence")
    if item.get("repository") is not None:
        repository = repositories.get(item["repository"])
        if not isinstance(repository, dict):
            raise ValueError(f"{name}: unknown repository {item['repository']!r}")
        sources = tuple(_parse_source(s, file) for s in repository.get("sources", []))
        evidence = "; ".join(e for e in (evidence, repository.get("evidence")) if e) or None
    elif item.get("sources") is not None:
        sources = tuple(_parse_source(s, file) for s in item["sources"])
    else:
        sources = (_parse_source({k: item[k] for k in ("hf_repo", "hf_filename", "revision", "repo_type", "url")
                                  if k in item}, file, official=True),)
    if not sources:
        raise ValueError(f"{name}: no sources")
    for source in sources:
        if source.hf_repo and not (name == source.hf_filename or name.endswith("/" + source.hf_filename)):
            raise ValueError(f"{name}: the hub file {source.hf_filename!r} must be the end of path")
    size, sha256 = item.get("size"), item.get("sha256")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise ValueError(f"{name}: size must be a byte count or null, got {size!r}")
    if sha256 is not None:
        if not isinstance(sha256, str) or len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"{name}: sha256 must be 64 lowercase hex digits or null, got {sha256!r}")
    return ManifestEntry(
        name=name,
        group=str(item.get("group") or name.split("/")[0]),
        sources=sources,
        size=size,
        sha256=sha256,
        required=bool(item.get("required", True)),
        evidence=evidence,
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


# ============================================================================ locating files
def _looked_in(entry: ManifestEntry, weights_dir: Path) -> str:
    place = str(weights_dir / entry.name)
    hub = entry.hub_sources()
    if hub:
        place += " and the Hugging Face cache (" + ", ".join(f"{s.hf_repo}: {s.hf_filename}" for s in hub) + ")"
    if not weights_dir.is_dir():
        place += f" (the weights directory {weights_dir} does not exist)"
    return place


def _from_hf_cache(entry: ManifestEntry) -> Path | None:
    """The file in the local Hugging Face cache, from the first hub source that has it."""
    for source in entry.hub_sources():
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(
                source.hf_repo, source.hf_filename, cache_dir=hf_cache_dir(), revision=source.revision,
                repo_type=source.repo_type,
            )
        except Exception as error:  # a malformed cache must not stop the other locations
            logger.debug("Hugging Face cache lookup of %s failed: %s", entry.name, error)
            continue
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


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


def _checksum_problem(entry: ManifestEntry, path: Path) -> str | None:
    """How ``path`` differs from the manifest's size / sha256, or None (also when nothing is known)."""
    size = _size(path)
    if entry.size is not None and size != entry.size:
        return f"has {size} bytes, the manifest says {entry.size}"
    if entry.sha256 is not None:
        actual = _remembered_sha256(path)
        if actual != entry.sha256:
            return f"has sha256 {actual}, the manifest says {entry.sha256}"
    return None


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
    extra.setdefault("source", entry.source)
    return cls(
        name=entry.name, group=entry.group, required=entry.required, location=location, path=path, size=size,
        expected_size=entry.size, expected_sha256=entry.sha256, checksum=state, **extra,
    )


# ============================================================================ downloading
USER_SOURCES_FILE = "sources.txt"
"""In a weights directory: one extra source per line (``#`` comments), like ``$SEESR_WEIGHTS_SOURCES``."""


class _SourceFailed(Exception):
    """One source could not deliver the file; the next one is tried."""


def _where_lines(missing: Sequence[tuple[str, str]]) -> str:
    lines = [f"  {name}: looked in {where}" for name, where in missing]
    if any("Hugging Face cache" in where for _, where in missing):
        lines.append(f"  (Hugging Face cache: {hf_cache_dir()})")
    return "\n".join(lines)


def _offline_error(missing: Sequence[tuple[str, str]], weights_dir: Path) -> MissingWeightsError:
    return MissingWeightsError(
        "HF_HUB_OFFLINE is set (offline mode), so seesr did not download anything, and these weights are missing:\n"
        + _where_lines(missing)
        + f"\nUnset HF_HUB_OFFLINE and run `{DOWNLOAD_COMMAND}` (it downloads into {weights_dir}), "
        "or copy the files to the places listed.",
        [name for name, _ in missing],
    )


def _missing_error(missing: Sequence[tuple[str, str]], weights_dir: Path) -> MissingWeightsError:
    tail = f"\nTo get them, run `{DOWNLOAD_COMMAND}` (downloads into {weights_dir}), or see weights/README.md."
    if offline_mode():
        tail += " Downloads are disabled while HF_HUB_OFFLINE is set."
    return MissingWeightsError("SeeSR weights not found:\n" + _where_lines(missing) + tail, [name for name, _ in missing])


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
                if entry.sha256 is None:
                    logger.warning("%s: no published sha256; accepted from %s unchecked", entry.name, source.describe())
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


# ============================================================================ public API
def resolve(
    name: str,
    explicit: str | Path | None = None,
    weights_dir: str | Path | None = None,
    download: bool = False,
    *,
    manifest: str | Path | Manifest | None = None,
    progress: bool = True,
    trust_unverified: bool = False,
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
    return _fetch_all([entry], weights_dir, progress, trust_unverified=trust_unverified)[name].path


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


def _folder_of(name: str) -> str | None:
    for folder in FOLDERS.values():
        if name.startswith(folder + "/"):
            return folder
    return None


def _whole_folder(folder: str, members: Sequence[ManifestEntry], weights_dir: Path) -> tuple[str, Path] | None:
    """(location, root) of the first place holding every file of ``folder``, else None."""
    required = list(members)
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
    need: Iterable[str],
    trust_unverified: bool,
) -> "WeightPaths":
    weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    man = load_manifest(manifest)
    given = dict(explicit or {})
    names = {f.name for f in fields(cls)}
    unknown = (set(given) | set(need)) - names
    if unknown:
        raise ConfigError(f"unknown WeightPaths fields {sorted(unknown)}; use {sorted(names)}")
    off = {k for k, v in given.items() if v is None}
    if off - OPTIONAL:
        raise ConfigError(f"only {sorted(OPTIONAL)} can be None, not {sorted(off - OPTIONAL)}")
    explicit = {k: Path(v) for k, v in given.items() if v is not None}
    needed_folders = {f for f in FOLDERS if f not in OPTIONAL_FOLDERS or f in set(need)}

    for attempt in range(2):
        values: dict[str, Path | None] = {}
        missing: list[tuple[str, str]] = []  # (name, where it was looked for), for the message
        to_fetch: list[ManifestEntry] = []
        for field, folder in FOLDERS.items():
            members = man.folder(folder)
            if field in off:
                values[field] = None
                continue
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
            if field not in needed_folders:  # optional model folder, absent: not used
                values[field] = None
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
        _fetch_all(to_fetch, weights_dir, progress, trust_unverified=trust_unverified)
    raise AssertionError("unreachable")


# ============================================================================ WeightPaths
@dataclass(frozen=True)
class WeightPaths:
    """Every file or folder the SeeSR pipeline reads. ``ram_configs`` is optional: without it
    the tagger uses the official full-size Swin-L / BERT configuration. ``sd2_base`` (SD-2-base's
    VAE, text encoder, tokenizer and scheduler) is only read by the non-turbo SeeSR model: None
    when absent, unless asked for (``WeightPaths.resolve(need=["sd2_base"])``)."""

    sd_turbo: Path
    seesr: Path
    ram_checkpoint: Path
    dape_checkpoint: Path | None
    ram_tag_list: Path
    ram_tag_list_chinese: Path | None
    ram_thresholds: Path
    ram_configs: Path | None = None
    sd2_base: Path | None = None

    @classmethod
    def from_dir(cls, root: str | Path | None = None) -> "WeightPaths":
        """The standard layout under ``root`` (default: :func:`default_weights_dir`), nothing else.
        ``ram/configs/`` and ``sd-2-base/`` are used when present."""
        root = Path(root) if root is not None else default_weights_dir()
        values: dict[str, Path | None] = {field: root / folder for field, folder in FOLDERS.items()}
        values.update({field: root / name for field, name in FILES.items()})
        for field in OPTIONAL_FOLDERS:
            values[field] = values[field] if values[field].is_dir() else None
        values["ram_configs"] = root / RAM_CONFIGS if (root / RAM_CONFIGS).is_dir() else None
        return cls(**values)

    @classmethod
    def resolve(
        cls,
        weights_dir: str | Path | None = None,
        download: bool = False,
        *,
        explicit: Mapping[str, str | Path] | None = None,
        manifest: str | Path | Manifest | None = None,
        progress: bool = True,
        need: Iterable[str] = (),
        trust_unverified: bool = False,
    ) -> "WeightPaths":
        """Every path by the resolution order (module docstring): ``explicit`` (by field name, e.g.
        ``{"dape_checkpoint": "/x/DAPE.pth", "sd_turbo": "/x/sd-turbo"}``), ``weights_dir`` (default
        :func:`default_weights_dir`), the Hugging Face cache (a model folder maps to its snapshot
        folder), then, with ``download``, a download into ``weights_dir``. Optional folders
        (``sd2_base``) are required and downloaded only when named in ``need``. Raises one
        :class:`~seesr.errors.MissingWeightsError` naming every missing file, where it was looked
        for and the download command."""
        return _resolve_paths(cls, weights_dir, download, explicit, manifest, progress, need, trust_unverified)

    def files(self, manifest: str | Path | Manifest | None = None) -> dict[str, Path]:
        """Manifest name -> where this WeightPaths expects that file (unused fields are left out)."""
        man = load_manifest(manifest)
        out: dict[str, Path] = {}
        for field, folder in FOLDERS.items():
            root = getattr(self, field)
            if root is not None:
                out.update({e.name: root / Path(e.name).relative_to(folder) for e in man.folder(folder)})
        for field, name in FILES.items():
            if getattr(self, field) is not None:
                out[name] = getattr(self, field)
        return out

    def check(self) -> "WeightPaths":
        """Raise one :class:`~seesr.errors.MissingWeightsError` naming every missing file, else return self."""
        missing = [(name, path) for name, path in self.files().items() if _local_file(path) is None]
        if self.ram_configs is not None and not self.ram_configs.is_dir():
            missing.append(("ram/configs", self.ram_configs))
        if missing:
            raise MissingWeightsError(
                "SeeSR weights not found:\n" + "\n".join(f"  {name}: {path}" for name, path in missing)
                + f"\nTo get them, {DOWNLOAD_HINT}.",
                [name for name, _ in missing],
            )
        return self

    def warn_on_checksum_mismatch(self, manifest: str | Path | Manifest | None = None) -> None:
        """Log one warning per file whose size or sha256 differs from the manifest (sha256 computed
        once per file version and remembered in :func:`checksum_cache_path`)."""
        man = load_manifest(manifest)
        for name, path in self.files(man).items():
            entry, found = man[name], _local_file(path)
            if found is None or found != path:  # absent, or a .bin stand-in the manifest does not describe
                continue
            problem = _checksum_problem(entry, found)
            if problem:
                logger.warning("%s (%s) %s: it may be damaged or another release; run `seesr weights verify` "
                               "and download it again if it is wrong", name, found, problem)


from seesr.checkpoints import check_keys as check_state_dict_keys  # noqa: E402 - re-exported for callers
