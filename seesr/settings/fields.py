"""How a setting is declared and how a value given as text becomes its value: the one ``setting()``
helper and the one value parser of every settings declaration (:class:`~seesr.settings.declare.Settings`,
:class:`~seesr.training.settings.TrainSettings`, the training degradation file). Light: no torch."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from seesr.settings.models import ENGINES

Scope = Literal["image", "process", "naming"]
"""What a setting is about: ``image``, how one image is upscaled (chosen per request on every
surface: the web page's controls, its API); ``process``, the machine and how the networks are
held (device, precision, compilation, attention kernel: chosen by whoever starts a server, as
``seesr ui`` flags and ``SEESR_*``, never per request); ``naming``, the files a folder run writes."""
CogInput = Literal["default", "empty"]
"""How a setting is a Cog input: ``default`` (the input's default is the setting's) or ``empty``
(an Optional input whose default, empty, leaves the value to the preset, the model or the
server's ``SEESR_*`` environment)."""


@dataclass(frozen=True)
class Setting:
    """What the surfaces need to know about one setting (a field of :class:`~seesr.settings.declare.Settings`
    or :class:`~seesr.training.settings.TrainSettings`).

    ``feeds``: ``"target"`` or ``"target:keyword"``, the callee the value is passed to (targets:
    ``pipeline`` = ``SeesrPipeline.__call__``, ``load`` = ``SeesrPipeline.from_pretrained``,
    ``plan`` = a :class:`RunPlan` field the user fixes, ``planner`` = ``plan_run``, ``kds`` =
    :class:`KdsConfig`); the keyword defaults to the setting's name. ``extra_flags``: more
    command-line flags for it (the names users of other upscalers know)."""

    help: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    engines: tuple[str, ...] = ENGINES
    cog: CogInput | None = None
    feeds: str | None = None
    extra_flags: tuple[str, ...] = ()
    """More flag names (``-n`` for ``--model``, ``--ext``): names their users know from Real-ESRGAN."""
    aliases: Mapping[str, str] | None = None
    """Other accepted names of choices (alias -> choice)."""
    file_suffixes: tuple[str, ...] | None = None
    """A value ending in one of these is a file path, accepted in place of a choice."""
    scope: Scope = "image"
    """What the setting is about (:data:`Scope`)."""
    cog_range: tuple[float, float] | None = None
    """The Cog input's range where a server allows less than the setting (what one request may cost)."""


def setting(
    default: Any,
    help: str,  # noqa: A002
    *,
    range: tuple[float, float] | None = None,  # noqa: A002
    choices: tuple[str, ...] | None = None,
    engines: tuple[str, ...] = ENGINES,
    cog: CogInput | None = None,
    feeds: str | None = None,
    extra_flags: tuple[str, ...] = (),
    aliases: Mapping[str, str] | None = None,
    file_suffixes: tuple[str, ...] | None = None,
    scope: Scope = "image",
    cog_range: tuple[float, float] | None = None,
) -> Any:
    """A settings field with its :class:`Setting` description as metadata (the one helper both
    declarations use)."""
    described = Setting(help, range, choices, engines, cog, feeds, extra_flags, aliases, file_suffixes, scope, cog_range)
    return dataclasses.field(default=default, metadata={"setting": described})


def setting_of(declared: dataclasses.Field) -> Setting:
    """The :class:`Setting` description of a declared field."""
    return declared.metadata["setting"]


def flag_name(name: str) -> str:
    """The command-line flag of a setting: ``kds_particles`` -> ``--kds-particles``."""
    return "--" + name.replace("_", "-")


def field_kind(declared: dataclasses.Field) -> tuple[type, bool]:
    """A settings field's value type (bool, int, float or str) and whether it may be unset (None)."""
    kind = str(declared.type)
    base = next(t for t in (bool, int, float, str) if kind.startswith(t.__name__))
    return base, "None" in kind


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_value(value: Any, kind: type, optional: bool = False) -> Any:
    """``value`` (text from the environment, a flag or YAML, or a typed value) as ``kind`` (bool,
    int, float or str): the one conversion rule of every settings surface (upscale settings,
    training settings, the degradation YAML). Numbers must be finite; an integer setting takes no
    fraction; text such as ``"none"`` is None where ``optional``. Raises ValueError saying what is
    allowed."""
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        if not optional:
            raise ValueError("may not be empty")
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError("must be true or false")
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be an integer")
        try:
            return int(value)
        except ValueError:
            raise ValueError("must be an integer") from None
    if kind is float:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        try:
            number = float(value)
        except ValueError:
            raise ValueError("must be a number") from None
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        return number
    if not isinstance(value, str):
        raise ValueError("must be text")
    return value


def out_of_range(name: str, value: Any, allowed: tuple[float, float]) -> str:
    """The problem line of a value outside its declared range."""
    return f"{name}={value!r} (allowed: {allowed[0]} to {allowed[1]})"


def problem(name: str, value: Any, info: Setting, allowed: tuple[float, float] | None = None) -> str | None:
    """The problem line of a parsed value outside its setting's choices or range (``allowed``: a
    range that replaces the declared one), else None."""
    allowed = info.range if allowed is None else allowed
    if value is None:
        return None
    if allowed is not None and not allowed[0] <= value <= allowed[1]:
        return out_of_range(name, value, allowed)
    is_file = info.file_suffixes and isinstance(value, str) and value.lower().endswith(info.file_suffixes)
    if info.choices and value not in info.choices and not is_file:
        files = f", or a file ({', '.join(info.file_suffixes)})" if info.file_suffixes else ""
        return f"{name}={value!r} (allowed: {', '.join(info.choices)}{files})"
    return None
