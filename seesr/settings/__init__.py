"""The settings of a run, declared once: the model table, the declaration, presets, where values
come from and how they are checked. Light: no torch."""
