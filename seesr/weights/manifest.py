"""The weights manifest (``seesr/manifest.json``): every file seesr reads, its sources in the order
they are tried, its size and sha256, and the evidence for them."""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from seesr.errors import ConfigError, WeightsError
from seesr.io.files import read_text

DEFAULT_MANIFEST = Path(__file__).resolve().parents[1] / "manifest.json"
"""Shipped inside the package, so an installed seesr knows its files too."""
MANIFEST_MAX_BYTES = 16 * 2**20
"""Largest manifest read (the shipped one is a few dozen KiB)."""
REDACTED = "***"
_SECRET_NAME = re.compile(r"token|key|secret|sig|pass|auth|credential|session|code", re.IGNORECASE)
"""Query parameters named like these hold credentials (``?token=``, ``X-Amz-Signature``, ``api_key``)."""
_TOKEN_LIKE = re.compile(r"(?:hf|ghp|gho|ghs|glpat|sk)[_-]\w+|(?=.*\d)(?=.*[A-Za-z])[\w%+/=.~-]{24,}")
"""Values that look like credentials whatever their name: known token prefixes, long strings of
letters and digits."""


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` never to be printed: its user-info (``user:token@``, and the user and the
    password alone) and the values of query parameters named like credentials or shaped like tokens."""
    parts = urllib.parse.urlsplit(url)
    found = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        found += [userinfo, *userinfo.split(":", 1)]
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if value and (_SECRET_NAME.search(name) or _TOKEN_LIKE.fullmatch(value)):
            found.append(value)
    found += [urllib.parse.unquote(secret) for secret in found]
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def redact(text: str, url: str) -> str:
    """``text`` (a message that may quote ``url``) with every secret of ``url`` replaced by ``***``."""
    for secret in url_secrets(url):
        text = text.replace(secret, REDACTED)
    return text


def redact_url(url: str) -> str:
    """``url`` as it may be printed: user-info and credential-like query values replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = "&".join(
        f"{name}={REDACTED}" if value and (_SECRET_NAME.search(name) or _TOKEN_LIKE.fullmatch(value)) else pair
        for pair in parts.query.split("&") if pair
        for name, _, value in [pair.partition("=")]
    )  # fmt: skip
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


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
            hub = f" via {redact_url(self.endpoint)}" if self.endpoint else ""
            return f"Hugging Face {self.hf_repo}{hub}: {self.hf_filename}"
        return redact_url(self.url) if self.url else str(self.folder)

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
    text = read_text(path, "weights manifest", MANIFEST_MAX_BYTES, WeightsError)
    try:
        data = json.loads(text)
    except ValueError as error:
        raise WeightsError(f"weights manifest {path} is not valid JSON: {error}") from None
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
