"""The page's setting controls, generated from the one :class:`~seesr.settings.declare.Settings` declaration.

Every setting whose scope is ``image`` (:data:`~seesr.settings.fields.Scope`) gets one control named after it,
of the kind its declaration says: a dropdown of its choices, default/on/off for a switch, a text box
for a number or a text; its help text (:func:`~seesr.settings.declare.describe`) says the default, what
presets and models change, and what is allowed. Every control starts at :data:`UNSET` (a box
starts empty), which sends nothing, so the preset, the model, the engine, the server's ``SEESR_*``
environment and ``seesr ui`` flags decide, as for a flag not given on the command line. Values go
to the library as the text a person typed, as flags do: it converts and checks them and reports
every problem in one line. Settings of other scopes (device, precision, output names) are the
server's, not a request's, and have no control.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from seesr.settings import declare

UNSET = "default"
"""What a control shows before a person sets it; it sends nothing (an empty box does the same)."""
SWITCH_CHOICES = (UNSET, "on", "off")
"""The choices of an on/off setting (the library reads ``on`` and ``off`` as it reads a flag)."""


def page_settings() -> tuple[str, ...]:
    """The settings the page has a control for, in declaration order."""
    return declare.settings_in_scope("image")


def setting_control(name: str) -> gr.components.Component:
    """The control of one setting, labelled and explained as the declaration says."""
    info, (kind, _) = declare.setting_info(name), declare.value_kind(name)
    common: dict[str, Any] = dict(label=name.replace("_", " "), info=declare.describe(name), elem_id=f"setting-{name}")
    if info.choices:
        return gr.Dropdown(choices=[UNSET, *info.choices], value=UNSET, **common)
    if kind is bool:
        return gr.Radio(choices=list(SWITCH_CHOICES), value=UNSET, **common)
    return gr.Textbox(value="", placeholder=UNSET, **common)


def setting_arguments(values: dict[str, Any]) -> dict[str, Any]:
    """The settings a person set, by name: controls at :data:`UNSET` or left empty send nothing."""
    return {
        name: value for name, value in values.items() if value is not None and str(value).strip() not in ("", UNSET)
    }
