"""seesr: semantics-aware diffusion super-resolution (SeeSR-Turbo)."""

from seesr.errors import ConfigError, InputError, OutOfMemoryError, SeesrError, WeightsError

__all__ = ["SeesrError", "ConfigError", "WeightsError", "InputError", "OutOfMemoryError"]
__version__ = "0.1.0"
