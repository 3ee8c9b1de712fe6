"""seesr: semantics-aware diffusion super-resolution (SeeSR-Turbo).

``seesr.upscale(image, preset=..., scale=...)`` for one image, ``seesr.Upscaler`` to serve many,
``seesr.SeesrPipeline`` for every step of the flow, ``seesr.train`` to fine-tune, ``seesr.evaluate``
(the module) to score outputs.
"""

from seesr.errors import ConfigError, InputError, OutOfMemoryError, SeesrError, WeightsError

__all__ = [
    "upscale",
    "train",
    "evaluate",
    "Upscaler",
    "Result",
    "SeesrPipeline",
    "Settings",
    "PRESETS",
    "SeesrError",
    "ConfigError",
    "WeightsError",
    "InputError",
    "OutOfMemoryError",
]


def __getattr__(name: str):
    """Import the heavy parts (torch, diffusers) only when they are used; ``__version__`` is the
    installed package's (pyproject.toml's ``version``)."""
    if name == "__version__":
        from importlib.metadata import version

        return version("seesr")
    if name in ("upscale", "Upscaler", "Result"):
        from seesr import api

        return getattr(api, name)
    if name == "train":
        from seesr.training.loop import train

        return train
    if name == "evaluate":
        import seesr.evaluate

        return seesr.evaluate
    if name == "SeesrPipeline":
        from seesr.engines.seesr.pipeline import SeesrPipeline

        return SeesrPipeline
    if name == "Settings":
        from seesr.settings.declare import Settings

        return Settings
    if name == "PRESETS":
        from seesr.settings.presets import PRESETS

        return PRESETS
    raise AttributeError(f"module 'seesr' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public surface too (its names are imported on first use), for ``dir(seesr)`` and completion."""
    return sorted({*globals(), *__all__, "__version__"})
