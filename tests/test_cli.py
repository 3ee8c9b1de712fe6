"""The command line, end to end on the tiny fixture weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seesr.cli import main
from seesr.io.inputs import find_inputs

FAST = ["--scale", "2", "--steps", "1", "--seed", "1", "--device", "cpu"]


@pytest.fixture(autouse=True)
def fast_env(monkeypatch):
    monkeypatch.setenv("SEESR_PROCESS_SIZE", "0")


@pytest.fixture()
def inputs(lr_image, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    lr_image.save(folder / "a.png")
    lr_image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "b.jpg", quality=95)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


def test_folder_run_with_a_corrupt_file(inputs, tmp_path, tiny_weights_dir, capsys):
    out = tmp_path / "out"
    code = main(["upscale", str(inputs), "-o", str(out), "--weights", str(tiny_weights_dir), *FAST])
    captured = capsys.readouterr()
    assert code == 1
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a.png", "b.png"]
    assert "broken.png: failed:" in captured.err and captured.err.count("failed") == 1
    for name in ("a.png", "b.png"):
        image = Image.open(out / name)
        assert image.size == (72, 48) and np.asarray(image).std() > 1
    assert [p.name for p in out.glob(".*")] == [".seesr-batch"]  # no temporary files left behind
    log = (out / ".seesr-batch" / "rank0.jsonl").read_text()
    assert log.count('"status": "done"') == 2 and log.count('"status": "failed"') == 1


def test_existing_output_is_not_overwritten(inputs, tmp_path, tiny_weights_dir, capsys):
    target = tmp_path / "a_x2.png"
    target.write_bytes(b"keep me")
    args = ["upscale", str(inputs / "a.png"), "-o", str(target), "--weights", str(tiny_weights_dir), *FAST]
    assert main(args) == 0
    assert target.read_bytes() == b"keep me"
    assert "exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert Image.open(target).size == (72, 48)


def test_dry_run_prints_the_plan_and_writes_nothing(inputs, tmp_path, tiny_weights_dir, capsys):
    out = tmp_path / "out"
    args = ["upscale", str(inputs / "a.png"), "-o", str(out), "--dry-run", "--latent-tile", "16", *FAST]
    assert main([*args, "--weights", str(tiny_weights_dir)]) == 0
    printed = capsys.readouterr().out
    assert "latent tile 16" in printed and "est. peak" in printed and "72x48" in printed
    assert not out.exists()


def test_dry_run_counts_only_the_steps_at_or_below_start_steps(inputs, tmp_path, tiny_weights_dir, capsys):
    import json

    args = ["upscale", str(inputs / "a.png"), "-o", str(tmp_path / "x.png"), "--weights", str(tiny_weights_dir),
            "--dry-run", "--json", "--scale", "2", "--device", "cpu"]  # fmt: skip
    assert main([*args, "--steps", "4", "--start-steps", "500"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2  # trailing 999, 749, 499, 249: two run
    assert main([*args, "--steps", "1", "--start-steps", "500"]) == 1  # the file failed, with the reason
    record = json.loads(capsys.readouterr().out)
    assert record["status"] == "failed"
    assert record["error"].startswith("start_steps=500 is below every timestep of 1 step (the lowest is 999)")


def test_bad_settings_exit_with_one_clear_line(inputs, tmp_path, capsys):
    code = main(["upscale", str(inputs / "a.png"), "-o", str(tmp_path / "x.png"), "--steps", "0", "--color-fix", "sepia"])
    err = capsys.readouterr().err
    assert code == 2 and "steps=0" in err and "color_fix='sepia'" in err


def test_realesrgan_engine_and_compare(inputs, tmp_path, capsys):
    out = tmp_path / "o.png"
    assert main(["upscale", str(inputs / "a.png"), "-o", str(out), "--engine", "realesrgan", "--compare", *FAST]) == 0
    assert Image.open(out).size == (72, 48)
    compare = Image.open(tmp_path / "o_compare.png")
    assert compare.size[0] == 2 * 72 + 4 and 48 + 10 <= compare.size[1] <= 48 + 40  # halves, divider, labels
    assert "engine realesrgan" in capsys.readouterr().out


def test_find_inputs_files_folders_globs(inputs):
    (inputs / "logo.svg").write_text("<svg/>")
    (inputs / ".DS_Store").write_bytes(b"\0")
    found, skipped = find_inputs([str(inputs)])
    assert [f.path.name for f in found] == ["a.png", "b.jpg", "broken.png"]
    assert [p.name for p in skipped] == ["logo.svg"]
    found, skipped = find_inputs([str(inputs / "*.jpg"), str(inputs / "b.jpg")])
    assert [f.path.name for f in found] == ["b.jpg"] and skipped == []


def test_weights_list(tiny_weights_dir, capsys):
    assert main(["weights", "list", "--weights", str(tiny_weights_dir)]) == 0
    listing = capsys.readouterr().out
    assert "DAPE.pth" in listing and "weights dir: " in listing


def test_rerun_skips_finished_files_and_redoes_the_rest(inputs, tmp_path, tiny_weights_dir, capsys):
    out = tmp_path / "out"
    args = ["upscale", str(inputs / "a.png"), str(inputs / "b.jpg"), "-o", str(out), "--weights", str(tiny_weights_dir), *FAST]
    assert main(args) == 0
    first = (out / "a.png").stat().st_mtime_ns
    (out / "b.png").unlink()  # as if the run had been killed before b was written
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "a.png: skipped" in err and "finished by an earlier run" in err
    assert (out / "a.png").stat().st_mtime_ns == first and (out / "b.png").exists()


@pytest.mark.slow
def test_two_processes_split_the_work(inputs, tmp_path, tiny_weights_dir):
    """`accelerate launch --num_processes 2 -m seesr.cli upscale`: each file is done by exactly one process."""
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    (inputs / "broken.png").unlink()
    Image.open(inputs / "a.png").rotate(90, expand=True).save(inputs / "c.png")
    env = {**os.environ, "SEESR_PROCESS_SIZE": "0", "OMP_NUM_THREADS": "1"}
    accelerate = Path(sys.executable).parent / "accelerate"  # as the README types it
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "-m", "seesr.cli", "upscale", str(inputs),
               "-o", str(out), "--weights", str(tiny_weights_dir), "--scale", "2", "--steps", "1", "--seed", "1"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for log in (out / ".seesr-batch").glob("rank*.jsonl") for line in log.read_text().splitlines()]
    finished = [(r["target"], r["rank"]) for r in records if r["status"] == "done"]
    assert sorted(Path(t).name for t, _ in finished) == ["a.png", "b.png", "c.png"]
    assert {rank for _, rank in finished} == {0, 1}


# ------------------------------------------------------------------ flags derived from the settings
def upscale_help(capsys, monkeypatch) -> str:
    """`seesr upscale --help`, unwrapped."""
    from seesr.cli import build_parser

    monkeypatch.setenv("COLUMNS", "10000")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["upscale", "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_every_setting_has_a_flag_with_its_help(capsys, monkeypatch):
    from seesr.cli import build_parser
    from seesr.cli.flags import setting_arguments
    from seesr.settings.declare import DECLARED, describe, value_kind
    from seesr.settings.fields import flag_name

    parser = build_parser()
    for name in DECLARED:
        kind, _ = value_kind(name)
        given = [flag_name(name)] if kind is bool else [flag_name(name), "7"]
        arguments = setting_arguments(parser.parse_args(["upscale", "x.png", *given]))
        assert arguments == {name: True if kind is bool else "7"}, name
    help_text = upscale_help(capsys, monkeypatch)
    for name in DECLARED:
        assert flag_name(name) in help_text and " ".join(describe(name).split()) in help_text, name
    assert "SEESR_NAME" in help_text and "flags > environment > config file" in help_text
    for flag in ("--process-size", "--conditioning-scale", "--positive-prompt", "--offload", "--model", "--sampler"):
        assert flag in help_text


def test_boolean_settings_have_both_switches():
    from seesr.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["upscale", "x.png"]).offload is None
    assert parse(["upscale", "x.png", "--offload"]).offload is True
    assert parse(["upscale", "x.png", "--no-offload"]).offload is False
    assert parse(["upscale", "x.png", "--no-fallback"]).no_fallback is True
    assert parse(["upscale", "x.png", "--fallback"]).no_fallback is False


@pytest.mark.parametrize("flag", ["--til", "--tile-batch", "--tile-p", "--kds", "--over", "--steps-"])
def test_abbreviations_are_errors(flag, capsys):
    """`--tile-batch 64` is not `--tile-batch-size 64`: prefixes of a flag are refused."""
    from seesr.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["upscale", "x.png", flag, "64"])
    assert exit_info.value.code == 2
    assert f"unrecognized arguments: {flag}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["weights", "list", "--weigh", "w"])


def test_a_flag_beats_a_bad_environment_value(inputs, tmp_path, monkeypatch, capsys):
    """`SEESR_STEPS=99 seesr upscale x.png --steps 2`: the flag wins, so nothing is wrong."""
    monkeypatch.setenv("SEESR_STEPS", "99")
    image = str(inputs / "a.png")
    assert main(["upscale", image, "-o", str(tmp_path / "x.png"), "--dry-run", "--steps", "2", "--device", "cpu"]) == 0
    assert "a.png" in capsys.readouterr().out
    assert main(["upscale", image, "-o", str(tmp_path / "x.png"), "--dry-run", "--device", "cpu"]) == 2
    assert "invalid settings: SEESR_STEPS=99 (allowed: 1 to 8)" in capsys.readouterr().err  # names the variable


def test_bad_flag_values_are_listed_together(inputs, tmp_path, capsys):
    code = main(["upscale", str(inputs / "a.png"), "-o", str(tmp_path / "x.png"), "--scale", "big", "--sampler", "euler",
                 "--model", "seesr", "--steps", "101"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "scale='big' (argument: must be a number)" in err and "sampler='euler'" in err and "steps=101 (allowed: 1 to 100)" in err


def test_batch_is_a_leaf():
    """Folder runs import nothing of seesr but its errors and its bounded file reader (both leaves):
    the command line calls them, never the reverse."""
    import ast

    import seesr.io.batch

    tree = ast.parse(Path(seesr.io.batch.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert {name for name in imported if name.startswith("seesr")} == {"seesr.errors", "seesr.io.files"}
    assert not hasattr(seesr.io.batch, "main")
