"""The start-up benchmark: fresh processes timed until their first work, the record naming the machine."""

from __future__ import annotations

import json

import pytest

from benchmarks import startup
from benchmarks.common import cpu_description


@pytest.mark.slow  # fresh processes
def test_rows_are_timed_and_recorded(tiny_weights_dir, lr_image, tmp_path, capsys):
    image = tmp_path / "in.png"
    lr_image.save(image)
    out = tmp_path / "startup.json"
    only = ["--only", "version", "--only", "dry-run seesr"]
    assert startup.main(["--image", str(image), "--weights", str(tiny_weights_dir), "--repeat", "2", *only,
                         "--json", str(out)]) == 0  # fmt: skip
    record = json.loads(out.read_text())
    assert record["machine"]["cpu"] == cpu_description()[0]
    assert set(record["rows"]) == {"version", "dry-run seesr"}
    for row in record["rows"].values():
        runs = row["runs"]["this"]
        assert len(runs) == 2 and all(0 < seconds < 120 for seconds in runs)
        assert min(runs) <= row["median_seconds"]["this"] <= max(runs)
    printed = capsys.readouterr().out
    assert "dry-run seesr" in printed and "version" in printed


@pytest.mark.parametrize("name", ["candidates", "gpu", "pipeline", "realesrgan", "report", "roofline", "startup",
                                  "training"])  # fmt: skip
def test_each_benchmark_help_has_its_whole_first_paragraph(name, capsys, monkeypatch):
    """``python -m benchmarks.NAME --help`` says what it measures in whole sentences: its module
    docstring's first paragraph, not a line cut mid-sentence."""
    import importlib

    module = importlib.import_module(f"benchmarks.{name}")
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    first = " ".join(module.__doc__.split("\n\n")[0].split())
    assert first.endswith(".") and first in " ".join(capsys.readouterr().out.split())
