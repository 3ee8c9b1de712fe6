"""Where the weights come from, how they are checked, and how checkpoints are read.

Layout of a weights directory (the official file names; ``weights/README.md``)::

    sd-turbo/            stabilityai/sd-turbo (unet, vae, text_encoder, tokenizer, scheduler)
    sd-2-base/           optional, the non-turbo model only: SD-2-base vae, text_encoder, tokenizer, scheduler
    seesr/               SeeSR release: unet/ and controlnet/
    DAPE.pth             SeeSR's DAPE LoRA for RAM
    ram_swin_large_14m.pth
    ram/                 RAM data files: ram_tag_list.txt, ram_tag_list_chinese.txt,
                         ram_tag_list_threshold.txt; optionally configs/ (RAM config JSONs)

``seesr/manifest.json`` (:mod:`.manifest`) lists every file with its sources in the order they are
tried (the publisher's, mirrors, then the user's), its size and sha256 (``null``: none published).
Each file is looked for (:mod:`.locate`), in order:

1. an explicit path given by the caller;
2. the weights directory (``$SEESR_WEIGHTS``, else the repository's ``weights/``);
3. the Hugging Face cache (``$HF_HUB_CACHE`` / ``$HF_HOME/hub``), for hub files;
4. a download into the weights directory (:mod:`.fetch`), only when asked for (``download=True``,
   ``seesr weights download``), never while ``HF_HUB_OFFLINE`` is set.

Model folders are resolved as a whole: the first location holding every one of their files wins (a
Hugging Face cache hit maps to the snapshot folder). Checksums (:mod:`.checksums`) are checked after
each download, by :func:`verify`, and at load time (:meth:`WeightPaths.warn_on_checksum_mismatch`).
Checkpoints are read, and their keys reported, by :mod:`.checkpoints`. Functions return data and
log; they never print (downloads show tqdm progress bars on stderr unless ``progress=False``).
"""

from seesr.weights.checkpoints import check_keys as check_state_dict_keys
from seesr.weights.fetch import USER_SOURCES_FILE, DownloadPlan, download, download_plan, user_sources
from seesr.weights.listing import status_table, weights_table
from seesr.weights._shared import MISSING_NAMED, missing_summary
from seesr.weights.realesrgan import RealesrganFile, realesrgan_in_use
from seesr.weights.locate import (
    DOWNLOAD_COMMAND, DOWNLOAD_HINT, EXPLICIT, FILES, FOLDERS, HF_CACHE, MISSING, OPTIONAL, OPTIONAL_FOLDERS,
    RAM_CONFIGS, WEIGHTS_DIR, default_weights_dir, hf_cache_dir, offline_mode,
)  # fmt: skip
from seesr.weights.manifest import DEFAULT_MANIFEST, Manifest, ManifestEntry, Source, default_manifest_path, load_manifest
from seesr.weights.paths import WeightPaths, resolve
from seesr.weights.checksums import (
    MISMATCH, NOT_CHECKED, NOT_COMPUTED, OK, SIZE_MISMATCH, Status, VerifyResult, checksum_cache_path, list_weights,
    sha256_of, verify,
)  # fmt: skip

__all__ = [
    "DEFAULT_MANIFEST", "DOWNLOAD_COMMAND", "DOWNLOAD_HINT", "EXPLICIT", "FILES", "FOLDERS", "HF_CACHE", "MISMATCH",
    "MISSING", "MISSING_NAMED", "NOT_CHECKED", "NOT_COMPUTED", "OK", "OPTIONAL", "OPTIONAL_FOLDERS", "RAM_CONFIGS", "SIZE_MISMATCH",
    "USER_SOURCES_FILE", "WEIGHTS_DIR", "DownloadPlan", "Manifest", "ManifestEntry", "RealesrganFile", "Source", "Status",
    "VerifyResult", "WeightPaths", "check_state_dict_keys", "checksum_cache_path", "default_manifest_path",
    "default_weights_dir", "download", "download_plan", "hf_cache_dir", "list_weights", "load_manifest", "missing_summary", "offline_mode",
    "realesrgan_in_use", "resolve", "sha256_of", "status_table", "user_sources", "verify", "weights_table",
]
