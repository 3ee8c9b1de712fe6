"""Defaults taken from the official SeeSR scripts, named once (light: no torch, no diffusers)."""

DEFAULT_POSITIVE_PROMPT = "clean, high-resolution, 8k"
"""Official ``--added_prompt`` default, appended after the tags and the user prompt."""
DEFAULT_NEGATIVE_PROMPT = "dotted, noise, blur, lowres, smooth"
"""Official ``--negative_prompt`` default (used only when guidance_scale > 1)."""
DEFAULT_PROCESS_SIZE = 512
"""Official ``--process_size``: inputs whose short side is below process_size/scale are enlarged first."""
MAX_DENOISE_STRENGTH = 30.0
"""Strongest non-local-means pre-filter (:func:`seesr.imaging.prefilter.denoise`); beyond it flat areas are painted."""

COLOR_FIX_METHODS: tuple[str, ...] = ("wavelet", "adain", "none")
"""Colour fixes (:mod:`seesr.imaging.colorfix`): the official wavelet and AdaIN, or none."""
