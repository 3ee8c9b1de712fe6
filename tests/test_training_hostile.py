"""Fault injection and hostile input for `seesr train` (issue 29): an output that is its own base
weights, links in the run folder, kills and full disks while saving, damaged, stray, foreign and
malicious checkpoints, a damaged tag cache, out-of-range settings and degradation files, a loss
that turns NaN, Ctrl-C. Each case asserts what a user sees (the exit code, one line, no traceback)
and that nothing read is changed and no weights, checkpoint or history line is lost or repeated."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from seesr.cli import main
from seesr.errors import ConfigError, WeightsError
from seesr.training.degradation import DEFAULT_CONFIG_FILE, KERNEL_RULES, RULES, DegradationConfig
from seesr.training.run_folder import MANIFEST, checkpoint_problem, find_checkpoint, restart_history
from seesr.settings.fields import setting_of
from seesr.training.settings import TrainSettings
from test_hostile import assert_one_line, cli_env, file_size_limit
from test_training import hr_dir  # noqa: F401 - the fixture: four small HR images

FAST = ["--crop-size", "64", "--num-workers", "0", "--lr-schedule", "constant", "--lr", "1e-3"]


def train_args(hr_dir: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    return ["train", str(hr_dir), "-o", str(out), "--weights", str(weights), *FAST, *extra]


@pytest.fixture(scope="module")
def run2(hr_dir, tiny_weights_dir, tmp_path_factory) -> Path:
    """A run folder after 2 steps with checkpoint-1 and checkpoint-2 (copy it before changing it)."""
    out = tmp_path_factory.mktemp("run2") / "run"
    assert main(train_args(hr_dir, out, tiny_weights_dir, "--max-steps", "2", "--checkpoint-every", "1",
                           "--keep-checkpoints", "5")) == 0  # fmt: skip
    return out


@pytest.fixture()
def run_copy(run2, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run2, out, symlinks=True)
    return out


def history_steps(out: Path) -> list[int]:
    """The steps of history.jsonl, read strictly (NaN or Infinity is not JSON)."""
    def refuse(name: str) -> None:
        raise ValueError(name)

    return [json.loads(line, parse_constant=refuse)["step"] for line in (out / "history.jsonl").read_text().splitlines()]


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (through links), by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture()
def private_weights(tiny, tmp_path) -> tuple[Path, Path]:
    """(weights folder in the documented layout: links to every file, the files those links point at),
    so that a write through a link could only hurt this copy."""
    from tiny_layout import lay_out_tiny_weights

    source = tmp_path / "tiny-copy"
    shutil.copytree(tiny, source)
    return lay_out_tiny_weights(source, tmp_path / "weights"), source


# ------------------------------------------------------------------------ item 1: what is written
def test_an_output_that_is_the_base_weights_is_refused_before_any_work(hr_dir, private_weights, capsys):
    weights, source = private_weights
    before, layout = digests(source), sorted(str(p) for p in weights.rglob("*"))
    for out in (weights, weights / "sd-turbo", weights / "seesr" / "unet", hr_dir):
        assert main(train_args(hr_dir, out, weights, "--max-steps", "1")) == 2
        line = assert_one_line(capsys.readouterr().err, "choose an output folder outside what training reads")
        assert "the base weights" in line or "the training data" in line
    assert digests(source) == before and sorted(str(p) for p in weights.rglob("*")) == layout
    assert sorted(p.name for p in hr_dir.iterdir()) == ["0.png", "1.png", "2.png", "3.png"]


def test_no_write_goes_through_a_link_into_the_linked_source(hr_dir, private_weights, tmp_path, capsys):
    weights, source = private_weights
    before = digests(source)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    for place in ("seesr", "checkpoints", "history.jsonl", "ram"):
        out = tmp_path / f"out-{place.replace('.', '-')}"
        out.mkdir()
        (out / place).symlink_to(elsewhere / "keep.txt" if "." in place else elsewhere)
        assert main(train_args(hr_dir, out, weights, "--max-steps", "1")) == 2
        assert_one_line(capsys.readouterr().err, f"{out / place} is a symbolic link", "never through a link")
    assert [p.name for p in elsewhere.iterdir()] == ["keep.txt"] and (elsewhere / "keep.txt").read_text() == "mine"

    # a file link inside a real folder (config.json -> the base's) is replaced by the new file, never written through
    out = tmp_path / "run"
    (out / "seesr" / "unet").mkdir(parents=True)
    (out / "seesr" / "unet" / "config.json").symlink_to(weights / "seesr" / "unet" / "config.json")
    assert main(train_args(hr_dir, out, weights, "--max-steps", "1")) == 0
    assert not (out / "seesr" / "unet" / "config.json").is_symlink()
    # the documented layout: the run's links to the base stay links, and resuming writes nothing through them
    assert (out / "sd-turbo").is_symlink() and (out / "DAPE.pth").is_symlink()
    assert main(train_args(hr_dir, out, weights, "--max-steps", "2", "--resume", "latest")) == 0
    assert (out / "sd-turbo").is_symlink() and (out / "ram" / "ram_tag_list.txt").is_symlink()
    assert digests(source) == before and history_steps(out) == [1, 2]


def test_a_new_run_never_replaces_the_checkpoints_of_another(run_copy, hr_dir, tiny_weights_dir, capsys):
    assert main(train_args(hr_dir, run_copy, tiny_weights_dir, "--max-steps", "3")) == 2
    assert_one_line(capsys.readouterr().err, "already holds a training run (newest: checkpoint-2)", "--resume latest")
    assert history_steps(run_copy) == [1, 2] and checkpoint_problem(run_copy / "checkpoints" / "checkpoint-2") is None


# ------------------------------------------------------------------ items 2, 10, 14: kills, disks, checkpoints
DYING_SAVE = textwrap.dedent("""
    import os, signal, sys, torch
    real_save = torch.save
    def dying_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        if str(f).endswith(os.path.join("checkpoint-3.partial", "optimizer.bin")):
            with open(f, "r+b") as half:
                half.truncate(os.path.getsize(f) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    torch.save = dying_save
    from seesr.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.slow
def test_a_kill_while_saving_leaves_the_previous_checkpoint_and_resume_skips_the_half_one(
    hr_dir, tiny_weights_dir, tmp_path, capsys
):
    out = tmp_path / "run"
    common = ("--max-steps", "4", "--checkpoint-every", "1", "--keep-checkpoints", "5")
    killed = subprocess.run([sys.executable, "-c", DYING_SAVE, *train_args(hr_dir, out, tiny_weights_dir, *common)],
                            env=cli_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-1", "checkpoint-2", "checkpoint-3.partial"]
    assert history_steps(out) == [1, 2, 3]  # step 3 ran, its checkpoint did not finish

    assert main(train_args(hr_dir, out, tiny_weights_dir, *common, "--resume", "latest")) == 0
    err = capsys.readouterr().err
    assert "resume latest: using checkpoint-2; skipped checkpoint-3.partial (its save did not finish)" in err, err
    assert history_steps(out) == [1, 2, 3, 4]  # step 3 once, from the resumed run
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"checkpoint-{n}" for n in (1, 2, 3, 4)]
    assert all(checkpoint_problem(p) is None for p in (out / "checkpoints").iterdir())
    assert not list(out.rglob(".*.tmp")) and not list(out.rglob(".export-*"))


@pytest.mark.slow
def test_a_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(run_copy, hr_dir, tiny_weights_dir, capsys):
    exported = digests(run_copy / "seesr")
    args = train_args(hr_dir, run_copy, tiny_weights_dir, "--max-steps", "3", "--checkpoint-every", "1", "--resume", "latest")
    full = subprocess.run([sys.executable, "-m", "seesr.cli", *args], env=cli_env(), capture_output=True, text=True,
                          timeout=300, preexec_fn=file_size_limit(2 << 20))  # fmt: skip  # optimizer.bin is 3 MB
    assert full.returncode == 2, full.stderr[-3000:]
    assert_one_line(full.stderr, "cannot save checkpoint-3", "checkpoint-2 is kept")
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == ["checkpoint-1", "checkpoint-2"]
    assert checkpoint_problem(run_copy / "checkpoints" / "checkpoint-2") is None
    assert digests(run_copy / "seesr") == exported  # the weights of step 2, whole

    assert main(args) == 0
    assert history_steps(run_copy) == [1, 2, 3] and checkpoint_problem(run_copy / "checkpoints" / "checkpoint-3") is None


def damage(folder: Path, name: str, data: bytes, *, relist: bool) -> None:
    """Replace a checkpoint file; ``relist``: also fix its manifest (as someone forging it would)."""
    (folder / name).write_bytes(data)
    if relist:
        manifest = json.loads((folder / MANIFEST).read_text())
        manifest["files"][name] = len(data)
        (folder / MANIFEST).write_text(json.dumps(manifest))


class Payload:
    """Unpickling this would create a marker file (a weights-only load must refuse it)."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_damaged_stray_foreign_and_unsafe_checkpoints_are_one_line(run_copy, hr_dir, tiny_weights_dir, tmp_path, capsys):
    checkpoints = run_copy / "checkpoints"
    shutil.copytree(checkpoints / "checkpoint-2", checkpoints / "checkpoint-2.bak")  # stray copies: ignored
    (checkpoints / "checkpoint-x").write_text("note")
    (checkpoints / "checkpoint-9.partial").mkdir()  # a save that was killed
    third, fourth, fifth = (checkpoints / f"checkpoint-{n}" for n in (3, 4, 5))
    shutil.copytree(checkpoints / "checkpoint-2", third)
    optimizer = (third / "optimizer.bin").read_bytes()
    damage(third, "optimizer.bin", optimizer[: len(optimizer) // 3], relist=False)  # truncated in place
    fourth.mkdir()
    (fourth / "model.safetensors").write_bytes(os.urandom(2048))  # another program's folder
    shutil.copytree(checkpoints / "checkpoint-2", fifth)
    os.unlink(fifth / "scheduler.bin")
    os.mkfifo(fifth / "scheduler.bin")  # a pipe would block a reader forever
    args = train_args(hr_dir, run_copy, tiny_weights_dir, "--max-steps", "3", "--checkpoint-every", "1")

    for folder, words in ((third, f"optimizer.bin is {len(optimizer) // 3} bytes, not the {len(optimizer)}"),
                          (fourth, f"it has no {MANIFEST}"), (fifth, "is a pipe (FIFO), not a file")):  # fmt: skip
        assert main([*args, "--resume", str(folder)]) == 2
        assert_one_line(capsys.readouterr().err, f"checkpoint {folder} cannot be resumed", words)
    assert main([*args, "--resume", "latest"]) == 0
    err = capsys.readouterr().err
    assert "using checkpoint-2; skipped checkpoint-9.partial (its save did not finish); checkpoint-5 (" in err, err
    assert "checkpoint-4 (it has no" in err and not (checkpoints / "checkpoint-9.partial").exists()
    assert "checkpoint-3 (optimizer.bin is" in err and ".bak" not in err and "Traceback" not in err
    assert history_steps(run_copy) == [1, 2, 3] and checkpoint_problem(third) is None  # step 3 saved again, whole
    assert (checkpoints / "checkpoint-2.bak").is_dir() and (checkpoints / "checkpoint-x").is_file()

    second = checkpoints / "checkpoint-2"
    foreign = tmp_path / "foreign" / "checkpoint-2"
    shutil.copytree(second, foreign)
    unet, controlnet = (foreign / "model.safetensors").read_bytes(), (foreign / "model_1.safetensors").read_bytes()
    damage(foreign, "model.safetensors", controlnet, relist=True)  # the ControlNet's state where the UNet's belongs
    damage(foreign, "model_1.safetensors", unet, relist=True)
    assert main([*args, "--resume", str(foreign)]) == 2
    assert_one_line(capsys.readouterr().err, "cannot be resumed: it does not fit this model and optimizer")

    Payload.marker = tmp_path / "payload-ran"
    unsafe = tmp_path / "unsafe" / "checkpoint-2"
    shutil.copytree(second, unsafe)
    torch.save({"state": Payload(), "param_groups": []}, tmp_path / "payload.bin")
    damage(unsafe, "optimizer.bin", (tmp_path / "payload.bin").read_bytes(), relist=True)
    assert main([*args, "--resume", str(unsafe)]) == 2
    line = assert_one_line(capsys.readouterr().err, "optimizer.bin", "refused as unsafe")
    assert "weights_only" not in line and not Payload.marker.exists()


def test_resume_latest_with_nothing_complete_names_what_it_skipped(tmp_path):
    partial = tmp_path / "checkpoints" / "checkpoint-7.partial"
    partial.mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"no complete checkpoint .* \(skipped checkpoint-7.partial \(its save did not finish\)\)"):
        find_checkpoint(tmp_path, "latest")
    with pytest.raises(WeightsError, match="its save did not finish"):
        find_checkpoint(tmp_path, str(partial))


def test_ctrl_c_prints_the_resume_command_and_it_continues_without_repeating_history(
    hr_dir, tiny_weights_dir, tmp_path, monkeypatch, capsys
):
    import seesr.training.loop as loop

    real_loss, calls = loop.training_loss, []

    def interrupted_at(call: int):
        def loss(*args, **kwargs):
            calls.append(1)
            if len(calls) == call:
                raise KeyboardInterrupt
            return real_loss(*args, **kwargs)

        return loss

    out = tmp_path / "run"
    monkeypatch.setattr(loop, "training_loss", interrupted_at(1))
    assert main(train_args(hr_dir, out, tiny_weights_dir, "--max-steps", "4", "--checkpoint-every", "2")) == 130
    assert_one_line(capsys.readouterr().err, "interrupted before the first checkpoint (every 2 steps)", "start again with")

    calls.clear()
    monkeypatch.setattr(loop, "training_loss", interrupted_at(4))  # during step 4, after checkpoint-2
    assert main(train_args(hr_dir, out, tiny_weights_dir, "--max-steps", "4", "--checkpoint-every", "2")) == 130
    line = assert_one_line(capsys.readouterr().err, "interrupted; continue from checkpoint-2 with: seesr train ")
    assert "run the same command again" not in line and history_steps(out) == [1, 2, 3]
    command = shlex.split(line.split(" with: ", 1)[1])
    assert command[:2] == ["seesr", "train"] and command[-2:] == ["--resume", "latest"]

    monkeypatch.setattr(loop, "training_loss", real_loss)
    assert main(command[1:]) == 0  # the printed command, as typed
    assert history_steps(out) == [1, 2, 3, 4]


def test_history_keeps_each_step_once_up_to_the_start(tmp_path):
    lines = [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}, {"step": 2, "loss": 0.4}, {"step": 3, "loss": 0.3}]
    text = "".join(json.dumps(line) + "\n" for line in lines) + '{"step": 4, "loss": NaN}\n[1]\n{"step": 5, "lo'
    (tmp_path / "history.jsonl").write_text(text)
    restart_history(tmp_path, 3)
    assert history_steps(tmp_path) == [1, 2, 3]
    restart_history(tmp_path, 0)
    assert (tmp_path / "history.jsonl").read_text() == ""


# ------------------------------------------------------------------------ item 11: the tag cache
def test_a_damaged_tag_cache_is_computed_again_and_a_pipe_is_refused(run_copy, hr_dir, tiny_weights_dir, capsys):
    tags = run_copy / "tags.json"
    good = json.loads(tags.read_text())
    args = train_args(hr_dir, run_copy, tiny_weights_dir, "--checkpoint-every", "1", "--resume", "latest")
    for step, damaged in ((3, tags.read_text()[:40]), (4, "[1, 2]")):
        tags.write_text(damaged)
        assert main([*args, "--max-steps", str(step)]) == 0
        assert "tags.json is damaged" in capsys.readouterr().err
        assert json.loads(tags.read_text()) == good  # computed again: the same tags
    tags.unlink()
    os.mkfifo(tags)
    assert main([*args, "--max-steps", "5"]) == 2
    assert_one_line(capsys.readouterr().err, f"tags file {tags} is a pipe (FIFO), not a file")
    assert history_steps(run_copy) == [1, 2, 3, 4]


# ------------------------------------------------------------------------ items 8, 9: settings
def test_every_training_setting_is_bounded_and_all_problems_are_one_line(hr_dir, tmp_path, capsys):
    out = tmp_path / "out"
    bad = ["--lr", "nan", "--crop-size", "100000", "--batch-size", "100000", "--null-text-ratio", "inf",
           "--max-steps", "0", "--seed", "-1", "--mixed-precision", "fp8"]  # fmt: skip
    assert main(["train", str(hr_dir), "-o", str(out), *bad]) == 2
    assert_one_line(
        capsys.readouterr().err, "lr='nan' (argument: must be a finite number)", "crop_size=100000 (allowed: 32 to 2048)",
        "batch_size=100000 (allowed: 1 to 256)", "null_text_ratio='inf' (argument: must be a finite number)",
        "max_steps=0 (allowed: 1 to", "seed=-1 (allowed: 0 to", "mixed_precision='fp8' (allowed: no, fp16, bf16)",
    )  # fmt: skip
    config = tmp_path / "train.yaml"
    config.write_text("lr: 1.0e+308\nnull_text_ratio: .nan\nweight_decay: -1\nkeep_checkpoints: 2.5\n")
    assert main(["train", str(hr_dir), "-o", str(out), "--config", str(config)]) == 2
    assert_one_line(capsys.readouterr().err, "lr=1e+308 (allowed: 0.0 to 0.1)",
                    "null_text_ratio=nan (config file: must be a finite number)", "weight_decay=-1.0 (allowed",
                    "keep_checkpoints=2.5 (config file: must be an integer)")  # fmt: skip
    assert not out.exists()
    with pytest.raises(ConfigError, match=r"lr=inf \(must be a finite number\)"):
        TrainSettings(lr=float("inf"))
    assert all(setting_of(f).range or setting_of(f).choices or f.type in ("bool", "str | None") for f in fields(TrainSettings))


@pytest.mark.parametrize(
    "yaml_text, words",
    [
        ("scale: 0", "scale=0 (allowed: 1 to 8)"),
        ("scale: -4", "scale=-4 (allowed: 1 to 8)"),
        ("gaussian_noise_prob: -0.5", "gaussian_noise_prob=-0.5 (allowed: 0 to 1)"),
        ("gray_noise_prob2: .nan", "gray_noise_prob2=nan (must be a finite number)"),
        ("kernel_info:\n  blur_sigma: [0, 0]", "kernel_info.blur_sigma=[0, 0] (allowed: 0.1 to 10)"),
        ('kernel_info: "str"', "kernel_info='str' (a mapping of blur kernel settings)"),
        ("noise_range: [1]", "noise_range=[1] (a list of 2 numbers)"),
        ("jpeg_range: [60, 200]", "jpeg_range=[60, 200] (allowed: 0 to 100)"),
        ("jpeg_range2: [-50, 90]", "jpeg_range2=[-50, 90] (allowed: 0 to 100)"),
        ("noise_range2: [12, 1]", "noise_range2=[12, 1] (the first value is the lower bound"),
        ("resize_prob: [0, 0, 0]", "resize_prob=[0, 0, 0] (relative probabilities: at least one above 0)"),
        ("kernel_info:\n  kernel_list2: [iso]", "kernel_info.kernel_prob2=[0.45, 0.25, 0.12, 0.03, 0.12, 0.03] (a list of 1 numbers, one per kernel_list2)"),
        ("kernel_info:\n  kernel_list: [iso, circle]\n  kernel_prob: [0.5, 0.5]", "kernel_info.kernel_list=['iso', 'circle'] (allowed: iso,"),
        ("scale: true", "scale=True (must be an integer)"),
        ("color_jitter_prob: 0.3", "colour jitter is off in SeeSR training and not implemented"),
        ("noise_rnage: [2, 3]", "unknown key 'noise_rnage'"),
    ],
)  # fmt: skip
def test_a_bad_degradation_value_is_one_line_naming_it(tmp_path, yaml_text, words):
    path = tmp_path / "degradation.yml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(ConfigError) as raised:
        DegradationConfig.load(path)
    message = str(raised.value)
    assert words in message and message.startswith(f"invalid degradation settings in {path}: ") and "\n" not in message


def test_degradation_problems_are_one_line_together_before_any_work(hr_dir, tiny_weights_dir, tmp_path, capsys):
    path = tmp_path / "degradation.yml"
    path.write_text("scale: 0\nnoise_range: [1]\nkernel_info:\n  sinc_prob: 2\n")
    out = tmp_path / "out"
    assert main(train_args(hr_dir, out, tiny_weights_dir, "--degradation", str(path))) == 2
    assert_one_line(capsys.readouterr().err, "scale=0", "noise_range=[1]", "kernel_info.sinc_prob=2")
    assert not out.exists()


def test_the_degradation_rules_cover_every_key_and_the_defaults_pass():
    defaults = DegradationConfig.load()
    assert set(RULES) == {f.name for f in fields(DegradationConfig)} - {"kernel_info"}
    assert set(KERNEL_RULES) == set(defaults.kernel_info)
    import yaml

    written = yaml.safe_load(DEFAULT_CONFIG_FILE.read_text())
    assert set(written) - {"kernel_info"} == set(RULES) and set(written["kernel_info"]) == set(KERNEL_RULES)


@pytest.mark.parametrize("flag", ["--config", "--degradation"])
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_pipe_or_device_as_a_training_file_is_one_line_not_a_hang(hr_dir, tiny_weights_dir, tmp_path, flag, kind):
    path = tmp_path / "settings.yml"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    args = train_args(hr_dir, tmp_path / "out", tiny_weights_dir, "--max-steps", "1", flag, str(path))
    done = subprocess.run([sys.executable, "-m", "seesr.cli", *args], env=cli_env(), capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert_one_line(done.stderr, f"config file {path} is", "a pipe (FIFO)" if kind == "fifo" else "a device")


# ------------------------------------------------------------------------ item 9: a loss that turns NaN
@pytest.mark.parametrize("where", ["loss", "gradients"])
def test_a_non_finite_step_stops_training_with_one_line_and_exports_nothing(
    hr_dir, tiny_weights_dir, tmp_path, monkeypatch, capsys, where
):
    import seesr.training.loop as loop

    real_loss, calls = loop.training_loss, []

    def loss_that_breaks_at_step_2(models, *args, **kwargs):
        loss = real_loss(models, *args, **kwargs)
        calls.append(1)
        if len(calls) < 2:
            return loss
        if where == "loss":
            return loss * float("nan")
        weight = next(kwargs["controlnet"].parameters())
        return loss + (weight.sum() * 0).sqrt()  # the value stays finite, its gradient is NaN

    monkeypatch.setattr(loop, "training_loss", loss_that_breaks_at_step_2)
    out = tmp_path / "run"
    assert main(train_args(hr_dir, out, tiny_weights_dir, "--max-steps", "3")) == 2
    words = "the loss is nan" if where == "loss" else "the gradient norm is not finite"
    assert_one_line(capsys.readouterr().err, "training diverged at step 2: " + words, "nothing was exported", "--lr")
    assert history_steps(out) == [1]
    assert not (out / "seesr").exists() and not (out / "checkpoints").exists()
