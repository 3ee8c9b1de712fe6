"""Flags shared by the commands: one flag per setting (derived from the declaration) and the flags
that change what is printed."""

from __future__ import annotations

import argparse
from typing import Any

from seesr.progress import RECORD_FIELDS
from seesr.settings.fields import flag_name

REPORT_FLAGS: dict[str, str] = {
    "quiet": "print errors only: no progress, no result lines, no notes (the exit code says how it went)",
    "verbose": "debug logging from seesr on stderr (engine, plan, retries, fallbacks)",
    "json": "one JSON object per input on stdout instead of the result lines: input, output, status "
    f"(done, skipped, failed, planned) and, for a file done, {', '.join(RECORD_FIELDS)}",
}
"""Flags that change what seesr prints, not what it computes (so they are not settings);
``quiet`` and ``verbose`` exclude each other."""
SETTINGS_EPILOG = (
    "Every setting flag --NAME is also the environment variable SEESR_NAME (upper case, underscores) and the key "
    "NAME (underscores) of a --config YAML file. Precedence: flags > environment > config file > the model's "
    "defaults > the preset > defaults; only the winning value is checked."
)


class _Switch(argparse.Action):
    """``--flag`` / ``--no-flag`` (or ``--no-flag`` / ``--flag`` for a setting named ``no_*``) for a
    boolean setting; not given: None, so the environment, config file or preset decide."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        setattr(namespace, self.dest, option_string == self.option_strings[0])


def add_setting_flags(parser: argparse.ArgumentParser, leave_out: frozenset[str] = frozenset()) -> None:
    """One flag per :class:`~seesr.settings.declare.Settings` field (but ``leave_out``), grouped by the
    engines it applies to; values stay text (None when not given):
    :func:`~seesr.settings.resolve.resolve_settings` converts and validates them, reporting every problem at once."""
    from seesr.settings.declare import DECLARED, describe, setting_info, value_kind
    from seesr.settings.models import ENGINES

    groups: dict[tuple[str, ...], Any] = {}
    for name in (n for n in DECLARED if n not in leave_out):
        info, (kind, _) = setting_info(name), value_kind(name)
        flag, help_text = flag_name(name), describe(name).replace("%", "%%")
        if info.engines not in groups:
            every = info.engines == ENGINES
            groups[info.engines] = parser.add_argument_group("settings, every engine" if every else f"settings, {' and '.join(info.engines)}")
        group = groups[info.engines]
        if kind is bool:
            opposite = flag_name(name.removeprefix("no_")) if name.startswith("no_") else f"--no-{flag[2:]}"
            group.add_argument(flag, opposite, dest=name, action=_Switch, default=None, help=help_text)
        else:
            metavar = "{" + ",".join(info.choices) + "}" if info.choices else {int: "N", float: "X"}.get(kind, "TEXT")
            metavar = "NAME|FILE" if info.file_suffixes else metavar
            group.add_argument(*info.extra_flags, flag, dest=name, default=None, metavar=metavar, help=help_text)


def setting_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags, by name (the rest is left to the environment, file and preset)."""
    from seesr.settings.declare import DECLARED

    return {name: getattr(args, name) for name in DECLARED if getattr(args, name, None) is not None}


def add_report_flags(parser: argparse.ArgumentParser) -> None:
    """The :data:`REPORT_FLAGS`, in a group of their own."""
    group = parser.add_argument_group("what is printed")
    exclusive = group.add_mutually_exclusive_group()
    for name, help_text in REPORT_FLAGS.items():
        (exclusive if name in ("quiet", "verbose") else group).add_argument(
            f"--{name}", action="store_true", help=help_text
        )
