"""Resolving every path the pipeline reads (:class:`WeightPaths`) and single files (:func:`resolve`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Mapping

from seesr.errors import ConfigError, MissingWeightsError, WeightsError
from seesr.settings.models import MODELS
from seesr.weights._shared import (
    local_file, locate_entry, looked_in, missing_error, offline_error, warn_size, whole_folder,
)  # fmt: skip
from seesr.weights.checksums import checksum_problem
from seesr.weights.fetch import fetch_entries
from seesr.weights.locate import (
    DOWNLOAD_HINT, FILES, FOLDERS, OPTIONAL, OPTIONAL_FOLDERS, RAM_CONFIGS, default_weights_dir, offline_mode,
)  # fmt: skip
from seesr.weights.manifest import Manifest, ManifestEntry, load_manifest

logger = logging.getLogger("seesr.weights")


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
    path = locate_entry(entry, weights_dir)[1]
    if path is not None:
        warn_size(entry, path)
        return path
    if not download:
        raise missing_error([(name, looked_in(entry, weights_dir))], weights_dir)
    return fetch_entries([entry], weights_dir, progress, trust_unverified=trust_unverified)[name].path


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
        _folders(man, weights_dir, off, explicit, needed_folders, values, missing, to_fetch)
        _files(man, weights_dir, off, explicit, values, missing, to_fetch)
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
                raise offline_error(missing, weights_dir)
            raise missing_error(missing, weights_dir)
        fetch_entries(to_fetch, weights_dir, progress, trust_unverified=trust_unverified)
    raise AssertionError("unreachable")


def _folders(
    man: Manifest, weights_dir: Path, off: set[str], explicit: Mapping[str, Path], needed: set[str],
    values: dict[str, Path | None], missing: list[tuple[str, str]], to_fetch: list[ManifestEntry],
) -> None:  # fmt: skip
    """The model folders of :class:`WeightPaths` into ``values``: explicit, else the first place holding
    the whole folder, else (needed ones) the weights directory, their absent files into ``missing``
    (and, but for explicit folders, ``to_fetch``)."""
    for field, folder in FOLDERS.items():
        members = man.folder(folder)
        if field in off:
            values[field] = None
            continue
        if field in explicit:
            root = explicit[field]
            values[field] = root
            missing += [(e.name, str(root / Path(e.name).relative_to(folder)))
                        for e in members if local_file(root / Path(e.name).relative_to(folder)) is None]
            continue
        found = whole_folder(folder, members, weights_dir)
        if found is not None:
            values[field] = found[1]
            logger.debug("%s: using %s (%s)", folder, found[1], found[0])
            continue
        if field not in needed:  # optional model folder, absent: not used
            values[field] = None
            continue
        values[field] = weights_dir / folder
        for entry in members:
            if local_file(weights_dir / entry.name) is None:
                missing.append((entry.name, looked_in(entry, weights_dir)))
                to_fetch.append(entry)


def _files(
    man: Manifest, weights_dir: Path, off: set[str], explicit: Mapping[str, Path],
    values: dict[str, Path | None], missing: list[tuple[str, str]], to_fetch: list[ManifestEntry],
) -> None:  # fmt: skip
    """The single files of :class:`WeightPaths` into ``values``, as :func:`_folders` does folders."""
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
        _, path = locate_entry(entry, weights_dir)
        if path is None:
            values[field] = weights_dir / name
            missing.append((name, looked_in(entry, weights_dir)))
            to_fetch.append(entry)
        else:  # a wrong size is said once, when the pipeline loads it (warn_on_checksum_mismatch)
            values[field] = path


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
        missing = [(name, path) for name, path in self.files().items() if local_file(path) is None]
        if self.ram_configs is not None and not self.ram_configs.is_dir():
            missing.append(("ram/configs", self.ram_configs))
        if missing:
            raise MissingWeightsError(
                "SeeSR weights not found:\n" + "\n".join(f"  {name}: {path}" for name, path in missing)
                + f"\nTo get them, {DOWNLOAD_HINT}.",
                [name for name, _ in missing],
            )
        return self

    def base_folder(self, model: str) -> Path:
        """The folder of ``model``'s base (VAE, text encoder, tokenizer, scheduler: sd-turbo or SD-2-base);
        a :class:`~seesr.errors.MissingWeightsError` when it is absent. Whether SeeSR can run: the
        pipeline's loader and the engine's check (the dry run) ask this, so they decide alike."""
        base = getattr(self, MODELS[model].base)
        if base is None or not (base / "scheduler" / "scheduler_config.json").is_file():
            raise MissingWeightsError(
                f"model {model!r} needs its base model folder (diffusers layout: vae/, text_encoder/, "
                f"tokenizer/, scheduler/) in {base or 'weights/sd-2-base/'}; {DOWNLOAD_HINT}."
            )
        return base

    def warn_on_checksum_mismatch(self, manifest: str | Path | Manifest | None = None) -> None:
        """Log one warning per file whose size or sha256 differs from the manifest (sha256 computed
        once per file version and remembered in :func:`checksum_cache_path`)."""
        man = load_manifest(manifest)
        for name, path in self.files(man).items():
            entry, found = man[name], local_file(path)
            if found is None or found != path:  # absent, or a .bin stand-in the manifest does not describe
                continue
            problem = checksum_problem(entry, found)
            if problem:
                logger.warning("%s (%s) %s: it may be damaged or another release; run `seesr weights verify` "
                               "and download it again if it is wrong", name, found, problem)
