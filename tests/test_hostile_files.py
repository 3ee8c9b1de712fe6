"""Hostile files given to the command line (issue 29): inputs, ``--config`` and ``--model`` files that
are FIFOs, devices, symbolic link loops, folders, giant sparse files or pickles with a payload; file
names with a newline or too long; a run that stops on an unexpected error. Each is one line (and,
under ``--json``, a JSON line for every input), never a hang or a traceback."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import seesr.engines.realesrgan.sources as sources
from seesr.cli import main
from seesr.errors import WeightsError

REPO_ROOT = Path(__file__).resolve().parents[1]
FAST = ["--scale", "2", "--device", "cpu"]


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No SeeSR weights: runs plan or use the bundled Real-ESRGAN."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("SEESR_WEIGHTS", str(tmp_path / "no-weights"))
    monkeypatch.setenv("SEESR_PROCESS_SIZE", "0")


@pytest.fixture()
def photo(lr_image, tmp_path) -> Path:
    path = tmp_path / "photo.png"
    lr_image.crop((0, 0, 12, 8)).save(path)
    return path


def seesr(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The command in a subprocess: a hang is a timeout, a failure of this test."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "seesr.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    (line,) = stderr.splitlines()
    return line


HOSTILE = {
    "fifo": (lambda p: os.mkfifo(p), "is a pipe (FIFO), not a file"),
    "dev-zero": (lambda p: p.symlink_to("/dev/zero"), "is a device, not a file"),
    "symlink-loop": (lambda p: p.symlink_to(p), "is a symbolic link loop"),
    "folder": (lambda p: p.mkdir(), "is a folder, not a file"),
}


@pytest.mark.parametrize("kind", sorted(set(HOSTILE) - {"folder"}))  # a folder input is a folder run
def test_a_hostile_input_is_one_failed_line(kind, tmp_path):
    make, says = HOSTILE[kind]
    make(tmp_path / "in.png")
    done = seesr("upscale", "in.png", "--json", *FAST, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert one_line(done.stderr).startswith(f"in.png: failed: input in.png {says}")
    (record,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert record["status"] == "failed" and record["input"] == "in.png" and says in record["error"]
    assert not (tmp_path / "in_seesr.png").exists()


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_config_file_is_one_line(kind, photo, tmp_path):
    make, says = HOSTILE[kind]
    make(tmp_path / "settings.yaml")
    done = seesr("upscale", photo.name, "--config", "settings.yaml", *FAST, cwd=tmp_path)
    assert done.returncode == 2
    assert one_line(done.stderr).startswith(f"seesr: config file settings.yaml {says}")


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_model_file_is_named_for_what_it_is(kind, photo, tmp_path):
    make, says = HOSTILE[kind]
    make(tmp_path / "net.pth")
    done = seesr("upscale", photo.name, "--model", "net.pth", "--dry-run", *FAST, cwd=tmp_path)
    assert done.returncode == 2
    assert one_line(done.stderr).startswith(f"seesr: invalid settings: model='net.pth' (it {says}")
    with pytest.raises(WeightsError) as refused:
        sources.load_realesrgan(model=str(tmp_path / "net.pth"), device="cpu")
    assert str(refused.value).startswith(f"model file {tmp_path / 'net.pth'} {says}")


# ------------------------------------------------------------------ model files
@pytest.fixture(scope="module")
def compact_state() -> dict[str, torch.Tensor]:
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2)
    return {k: v.contiguous() for k, v in net.state_dict().items()}


def sparse_safetensors(path: Path, key: str, numel: int) -> Path:
    """A valid safetensors header over ``numel`` float32 values the file does not really hold (sparse)."""
    header = json.dumps({key: {"dtype": "F32", "shape": [numel], "data_offsets": [0, 4 * numel]}}).encode()
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(header)) + header)
        handle.truncate(8 + len(header) + 4 * numel)
    return path


def test_the_architecture_is_detected_before_any_tensor_is_read(tmp_path, monkeypatch):
    giant = sparse_safetensors(tmp_path / "giant.safetensors", "body.0.weight", 2**30)  # 4 GiB "of tensors"
    with pytest.raises(WeightsError, match="is 4 GiB, over the 2 GiB limit"):
        sources.load_realesrgan(model=str(giant), device="cpu")
    monkeypatch.setattr(sources, "read_checkpoint", lambda *a, **k: pytest.fail("a tensor was read"))
    big = sparse_safetensors(tmp_path / "big.safetensors", "encoder.weight", 2**28)  # 1 GiB, unknown keys
    unknown = r"not a model spandrel can load: no architecture it knows has these keys \(encoder\.weight\)"
    with pytest.raises(WeightsError, match=unknown):
        sources.load_realesrgan(model=str(big), device="cpu")
    with pytest.raises(WeightsError, match="no architecture it knows"):
        sources.inspect_model_file(big)


def test_a_model_files_format_comes_from_its_bytes(compact_state, tmp_path):
    from safetensors.torch import save_file

    upper = tmp_path / "NET.SAFETENSORS"
    save_file(compact_state, str(upper))
    renamed = tmp_path / "net_pickle.safetensors"  # a PyTorch pickle under a safetensors name
    torch.save({"params_ema": compact_state}, renamed)
    for path in (upper, renamed):
        engine = sources.load_realesrgan(model=str(path), device="cpu")
        assert engine.name == f"{path.name} (RealESRGAN Compact x2)" and engine.scale == 2
        assert sources.inspect_model_file(path).name == engine.name


def test_an_empty_state_dict_says_so(tmp_path):
    from safetensors.torch import save_file

    torch.save({}, tmp_path / "empty.pth")
    save_file({}, str(tmp_path / "empty.safetensors"))
    for name in ("empty.pth", "empty.safetensors"):
        with pytest.raises(WeightsError, match=r"holds no tensors \(an empty state dict\); it is not a model$"):
            sources.load_realesrgan(model=str(tmp_path / name), device="cpu")


class ShellPayload:
    """Unpickling this would run a shell command; torch 2.14 says "unsupported GLOBAL posix.system
    whose module posix is blocked"."""

    marker: Path

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_with_a_payload_is_refused_as_unsafe(compact_state, tmp_path):
    ShellPayload.marker = tmp_path / "payload-ran"
    torch.save({**compact_state, "extra": ShellPayload()}, tmp_path / "net.pth")
    with pytest.raises(WeightsError, match="net.pth cannot be read: refused as unsafe: it holds Python objects") as err:
        sources.load_realesrgan(model=str(tmp_path / "net.pth"), device="cpu")
    assert "weights_only" not in str(err.value) and not ShellPayload.marker.exists()


def test_dry_run_reads_the_model_files_header(compact_state, photo, tmp_path):
    from safetensors.torch import save_file

    save_file(compact_state, str(tmp_path / "net.safetensors"))
    done = seesr("upscale", photo.name, "--model", "net.safetensors", "--dry-run", "--json", *FAST, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (record,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert record["status"] == "planned" and record["model"] == "net.safetensors (RealESRGAN Compact x2)"
    assert record["tiles"].startswith("x2 network; ")  # the scale read from the shapes

    sparse_safetensors(tmp_path / "other.safetensors", "encoder.weight", 16)
    done = seesr("upscale", photo.name, "--model", "other.safetensors", "--dry-run", "--json", *FAST, cwd=tmp_path)
    assert done.returncode == 1
    (record,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert record["status"] == "failed" and "no architecture it knows has these keys" in record["error"]


# ------------------------------------------------------------------ names and run-level failures
def test_a_newline_in_a_file_name_stays_on_one_result_line(photo, tmp_path):
    odd = tmp_path / "two\nlines.png"
    odd.write_bytes(photo.read_bytes())
    done = seesr("upscale", odd.name, "--dry-run", *FAST, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith("two\\nlines.png -> two\\nlines_seesr.png (24x16): engine realesrgan")


def test_a_run_level_failure_still_gives_every_input_its_json_line(photo, tmp_path):
    too_long = "b" * 300 + ".png"
    done = seesr("upscale", photo.name, too_long, "--json", "--dry-run", *FAST, cwd=tmp_path)
    assert done.returncode == 2
    assert one_line(done.stderr).startswith("seesr: File name too long")
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["input"], r["status"]) for r in records] == [(photo.name, "failed"), (too_long, "failed")]
    assert all(r["error"].startswith("File name too long") for r in records)


def test_an_unexpected_error_is_one_line_and_a_json_line_for_every_input(photo, tmp_path, monkeypatch, capsys):
    import seesr.api

    second = tmp_path / "second.png"
    second.write_bytes(photo.read_bytes())
    real, calls = seesr.api.Upscaler.upscale_samples, []

    def breaks_on_the_second(self, image, **arguments):
        calls.append(image)
        if len(calls) == 2:
            raise RuntimeError("something nobody foresaw\non two lines")
        return real(self, image, **arguments)

    monkeypatch.setattr(seesr.api.Upscaler, "upscale_samples", breaks_on_the_second)
    third = tmp_path / "third.png"
    third.write_bytes(photo.read_bytes())
    out = tmp_path / "out"
    assert main(["upscale", str(photo), str(second), str(third), "-o", str(out), "--json", *FAST]) == 1
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [(Path(r["input"]).name, r["status"]) for r in records] == [
        ("photo.png", "done"), ("second.png", "failed"), ("third.png", "failed")]  # fmt: skip
    error = ("unexpected error: RuntimeError: something nobody foresaw on two lines "
             "(a bug in seesr; --verbose shows the traceback)")
    assert records[1]["error"] == records[2]["error"] == error
    assert one_line(captured.err) == f"seesr: {error}"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["photo.png"]
    assert Image.open(out / "photo.png").size == (24, 16)


def test_a_run_log_that_is_not_a_file_is_one_line(photo, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(photo.read_bytes())
    (tmp_path / "out" / ".seesr-batch").mkdir(parents=True)
    os.mkfifo(tmp_path / "out" / ".seesr-batch" / "rank0.jsonl")
    done = seesr("upscale", "in", "-o", "out", "--json", *FAST, cwd=tmp_path)
    assert done.returncode == 2
    assert one_line(done.stderr) == "seesr: run log out/.seesr-batch/rank0.jsonl is a pipe (FIFO), not a file"
    (record,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert (record["input"], record["status"]) == ("in/a.png", "failed") and "is a pipe" in record["error"]
