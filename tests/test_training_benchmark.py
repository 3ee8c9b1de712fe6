"""The training benchmark on the tiny fixtures: every variant measured, JSON and table."""

from __future__ import annotations

import json

from benchmarks import training as bench
from benchmarks.common import cpu_description


def test_smoke_measures_every_variant(tiny_weights_dir, tmp_path, capsys):
    out = tmp_path / "train.json"
    assert bench.main(["--weights", str(tiny_weights_dir), "--crop", "64", "--steps", "1", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["machine"]["cpu_flags"] == cpu_description()[1] and record["settings"]["crop"] == 64
    rows = record["rows"]
    assert [(r["dtype"], r["gradient_checkpointing"]) for r in rows] == bench.VARIANTS
    for row in rows:
        assert row["images_per_s"] > 0 and row["peak_memory_gib"] > 0 and row["trainable_params"] > 0
        assert 0 < row["loss"] < 100
    assert len({r["trainable_params"] for r in rows}) == 1
    captured = capsys.readouterr()
    table = captured.out
    progress = captured.err.splitlines()  # each variant, its steps and its result, as they happen
    assert [line for line in progress if line.startswith("[")] == [
        f"[{i}/4] {dtype}, gradient checkpointing {'on' if on else 'off'}" for i, (dtype, on) in enumerate(bench.VARIANTS, 1)
    ]
    assert sum(line.startswith("  warm-up step: ") for line in progress) == 4
    assert sum(line.startswith("  step 1/1: ") for line in progress) == 4
    assert sum(line.endswith(f"s/step, peak {r['peak_memory_gib']:.2f} GiB") for line, r in zip(
        [line for line in progress if "s/step" in line], rows)) == 4
    assert table.splitlines()[0].startswith(cpu_description()[0])
    rows_shown = [line for line in table.splitlines() if line.startswith(("| float32 |", "| bfloat16 |"))]
    assert len(rows_shown) == 4 and "| bfloat16 | on |" in table
