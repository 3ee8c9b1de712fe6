"""`seesr train` on the tiny official fixtures (CPU): the official loss, what trains and what does not,
accumulation, mixed precision, over-fitting, resume, the exported weights and the commands as typed."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from tiny_layout import lay_out_tiny_sd2_base, lay_out_tiny_weights

from seesr.progress import TrainingLines, training_every
from seesr.training.data import DataFolder, TrainingSamples
from seesr.training.loop import StepNoise, TrainingModels, train, training_loss
from seesr.training.settings import TrainSettings

REPO = Path(__file__).resolve().parents[1]
CROP = 64
FAST = dict(crop_size=CROP, num_workers=0, checkpoint_every=1000)
WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory) -> Path:
    """Four small HR images cut from the shared RealSR photos."""
    from conftest import SHARED

    folder = tmp_path_factory.mktemp("hr")
    for i, name in enumerate(sorted((SHARED / "data" / "realsr" / "hr").iterdir())[:4]):
        Image.open(name).convert("RGB").crop((0, 0, 96, 80)).save(folder / f"{i}.png")
    return folder


@pytest.fixture
def models(tiny_weights) -> TrainingModels:
    models = TrainingModels.load(tiny_weights)
    models.set_trainable()
    return models


def make_batch(hr_dir: Path, indices: list[int], prompt: str = "a photo,") -> dict:
    dataset = TrainingSamples(DataFolder.open(hr_dir), {}, crop_size=CROP, null_text_ratio=0.0, seed=3)
    samples = [dataset[i] for i in indices]
    batch = {k: torch.stack([s[k] for s in samples]) for k in ("hr", "condition", "ram")}
    return {**batch, "prompt": [prompt] * len(indices), "index": torch.tensor(indices)}


def test_loss_is_the_official_formula(models, hr_dir):
    """Same batch, noise and timesteps: our loss == the official train_seesr.py formula written out."""
    batch = make_batch(hr_dir, [0, 1])
    generator = torch.Generator().manual_seed(7)
    draws = StepNoise.draw((2, 4, CROP // 8, CROP // 8), 1000, generator)
    ours = training_loss(models, batch, draws=draws)

    with torch.no_grad():
        posterior = models.vae.encode(batch["hr"] * 2 - 1).latent_dist
        latents = (posterior.mean + posterior.std * draws.latent_eps) * 0.18215
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
        alpha_bar = torch.cumprod(1 - betas, 0)[draws.timesteps].view(-1, 1, 1, 1)
        noisy = alpha_bar.sqrt() * latents + (1 - alpha_bar).sqrt() * draws.noise
        ids = models.tokenizer(["a photo,"] * 2, max_length=77, padding="max_length", truncation=True,
                               return_tensors="pt").input_ids
        text = models.text_encoder(ids)[0]
        lr_at_384 = F.interpolate(batch["condition"], size=(384, 384), mode="bicubic").clamp(0, 1)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        ram = models.tagger.image_proj(models.tagger.visual_encoder((lr_at_384 - mean) / std))
        down, mid = models.controlnet(noisy, draws.timesteps, encoder_hidden_states=text, return_dict=False,
                                      controlnet_cond=batch["condition"], image_encoder_hidden_states=ram)
        eps = models.unet(noisy, draws.timesteps, encoder_hidden_states=text, down_block_additional_residuals=down,
                          mid_block_additional_residual=mid, image_encoder_hidden_states=ram).sample
        official = F.mse_loss(eps.float(), draws.noise.float())
    assert ours.item() == pytest.approx(official.item(), rel=1e-5)
    assert 0.1 < official.item() < 10  # a real loss, not a degenerate zero


def test_only_controlnet_and_image_attention_get_gradients(models, hr_dir):
    loss = training_loss(models, make_batch(hr_dir, [0]), seed=1)
    loss.backward()
    for name, p in models.unet.named_parameters():
        assert (p.grad is not None) == ("image_attentions" in name), name
    assert all(p.grad is not None for p in models.controlnet.parameters())
    for model in (models.vae, models.text_encoder, models.tagger):
        assert all(p.grad is None and not p.requires_grad for p in model.parameters())


def test_accumulating_four_micro_batches_equals_one_batch_of_four(models, hr_dir):
    """Per-sample draws make the two groupings see the same numbers; the gradients agree to float
    summation order (rtol 1e-4 of the largest gradient)."""
    params = [p for p in models.controlnet.parameters()] + [p for p in models.unet.parameters() if p.requires_grad]
    training_loss(models, make_batch(hr_dir, [0, 1, 2, 3]), seed=5).backward()
    whole = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    for i in range(4):
        (training_loss(models, make_batch(hr_dir, [i]), seed=5) / 4).backward()
    for a, b in zip(whole, (p.grad for p in params)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * max(g.abs().max().item() for g in whole))


def test_accumulation_in_the_loop_gives_the_update_of_one_batch(hr_dir, tiny_weights_dir, tmp_path):
    """One step of batch 4 vs batch 1 x 4 accumulated: the same samples and draws, the same loss (rel
    1e-5); every weight within 0.1 lr and 99.9 % within 0.01 lr (AdamW's first step is ~lr * sign(g),
    so gradients that differ in the last bits and sit near zero can move a few weights differently)."""
    lr = 1e-3
    common = dict(weights=str(tiny_weights_dir), max_steps=1, lr=lr, **FAST)
    whole = train(hr_dir, tmp_path / "whole", batch_size=4, **common)
    accumulated = train(hr_dir, tmp_path / "acc", batch_size=1, gradient_accumulation_steps=4, **common)
    assert accumulated.losses[0] == pytest.approx(whole.losses[0], rel=1e-5)
    for part in ("unet", "controlnet"):
        a = load_file(str(tmp_path / "whole" / "seesr" / part / "diffusion_pytorch_model.safetensors"))
        b = load_file(str(tmp_path / "acc" / "seesr" / part / "diffusion_pytorch_model.safetensors"))
        diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
        assert diff.max() <= 0.1 * lr and (diff > 0.01 * lr).float().mean() < 1e-3


def test_bf16_autocast_loss_is_close_to_float32(models, hr_dir):
    batch = make_batch(hr_dir, [0, 1])
    fp32 = training_loss(models, batch, seed=2).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = training_loss(models, batch, seed=2).item()
    assert bf16 == pytest.approx(fp32, rel=0.03)


@pytest.fixture(scope="module")
def two_step_run(hr_dir, tiny_weights_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    train(hr_dir, out, weights=str(tiny_weights_dir), max_steps=2, lr=1e-3, validate_every=2, **FAST)
    return out


def test_frozen_weights_stay_bit_identical(two_step_run, tiny):
    trained = load_file(str(two_step_run / "seesr" / "unet" / "diffusion_pytorch_model.safetensors"))
    base = load_file(str(tiny / "sd_turbo" / "unet" / "diffusion_pytorch_model.safetensors"))
    seesr = load_file(str(tiny / "seesr" / "unet" / "diffusion_pytorch_model.safetensors"))
    frozen = [k for k in trained if "image_attentions" not in k]
    assert frozen and all(torch.equal(trained[k], base[k]) for k in frozen)
    image = [k for k in trained if "image_attentions" in k and k.endswith("weight")]
    assert image and sum(not torch.equal(trained[k], seesr[k]) for k in image) > len(image) // 2


def test_run_writes_history_validation_and_checkpoint(two_step_run):
    history = [json.loads(line) for line in (two_step_run / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2] and all(np.isfinite(h["loss"]) for h in history)
    metrics = json.loads((two_step_run / "validation" / "step-2" / "metrics.json").read_text())
    assert 5 < metrics["psnr"] < 60 and -1 <= metrics["ssim"] <= 1
    panel = Image.open(two_step_run / "validation" / "step-2" / "00.png")
    assert panel.size == (3 * CROP, CROP)  # bicubic | SeeSR | HR
    assert [p.name for p in (two_step_run / "checkpoints").iterdir()] == ["checkpoint-2"]
    assert "tags" in next(iter(json.loads((two_step_run / "tags.json").read_text()).values()))


def test_saved_weights_load_in_the_pipeline_and_change_its_output(two_step_run, tiny_weights, tiny_pipe):
    import dataclasses

    from seesr.engines.seesr.pipeline import SeesrPipeline

    trained_weights = dataclasses.replace(tiny_weights, seesr=two_step_run / "seesr")
    trained = SeesrPipeline.from_pretrained(trained_weights, device="cpu")
    image = Image.open(tiny_weights.sd_turbo.parent / "inputs" / "pipeline_input.png").convert("RGB")
    before = tiny_pipe(image, scale=2, seed=0, process_size=0, output_type="pt").images
    after = trained(image, scale=2, seed=0, process_size=0, output_type="pt").images
    assert before.shape == after.shape and (before - after).abs().max() > 1e-3


@pytest.mark.slow
def test_loss_falls_when_overfitting_two_images(hr_dir, tiny_weights_dir, tmp_path):
    pair = tmp_path / "two"
    pair.mkdir()
    for name in ("0.png", "1.png"):
        (pair / name).write_bytes((hr_dir / name).read_bytes())
    result = train(pair, tmp_path / "out", weights=str(tiny_weights_dir), max_steps=50, lr=2e-3, batch_size=2,
                   null_text_ratio=0.0, **{**FAST, "checkpoint_every": 50})
    first, last = np.mean(result.losses[:10]), np.mean(result.losses[-10:])
    assert last < 0.8 * first, (first, last)


def test_resume_continues_bit_identically(hr_dir, tiny_weights_dir, tmp_path):
    common = dict(weights=str(tiny_weights_dir), lr=1e-3, **{**FAST, "checkpoint_every": 2})
    whole = train(hr_dir, tmp_path / "whole", max_steps=4, keep_checkpoints=1, **common)
    assert [p.name for p in (tmp_path / "whole" / "checkpoints").iterdir()] == ["checkpoint-4"]  # older pruned
    train(hr_dir, tmp_path / "split", max_steps=2, **common)
    resumed = train(hr_dir, tmp_path / "split", max_steps=4, resume="latest", **common)
    assert resumed.losses == whole.losses[2:]
    for part in ("unet", "controlnet"):
        a = load_file(str(tmp_path / "whole" / "seesr" / part / "diffusion_pytorch_model.safetensors"))
        b = load_file(str(tmp_path / "split" / "seesr" / part / "diffusion_pytorch_model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_process_accelerate_launch(hr_dir, tiny_weights_dir, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "seesr.cli", "train",
               str(hr_dir), "-o", str(out), "--weights", str(tiny_weights_dir), "--max-steps", "2",
               "--crop-size", str(CROP), "--num-workers", "0"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["checkpoint-2"]
    assert len((out / "history.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_start_script_train_then_upscale_with_its_output(hr_dir, tiny_weights_dir, tmp_path):
    """The README's commands as typed: train, then upscale with the run folder as --weights."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(REPO / "start_seesr.sh"), "train", str(hr_dir), "-o", str(out), "--max-steps", "2",
                           "--weights", str(tiny_weights_dir), "--crop-size", str(CROP), "--num-workers", "0"],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().startswith("trained 2 steps, final loss ")
    lines = [line for line in done.stderr.splitlines() if line.startswith("train: ")]  # stderr is no terminal
    assert [line.split(",")[0] for line in lines] == ["train: step 1/2", "train: step 2/2"], done.stderr[-3000:]
    assert re.fullmatch(r"train: step 2/2, loss \d+\.\d{4}, lr \d\.\d\de-\d\d, \d+\.\d\d steps/s, ETA 0:00", lines[1])
    for part in ("unet", "controlnet"):
        assert (out / "seesr" / part / "diffusion_pytorch_model.safetensors").is_file()
        assert json.loads((out / "seesr" / part / "config.json").read_text())["use_image_cross_attention"] is True
    upscaled = tmp_path / "x.png"
    done = subprocess.run([sys.executable, "-m", "seesr.cli", "upscale", str(hr_dir / "0.png"), "-o", str(upscaled),
                           "--weights", str(out), "--scale", "2", "--steps", "1"],
                          env={**env, "SEESR_PROCESS_SIZE": "0"}, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert Image.open(upscaled).size == (192, 160)


def test_settings_from_flags_env_and_yaml(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("lr: 1.0e-4\nbatch-size: 3\nmax_steps: 7\n")
    settings = TrainSettings.from_sources({"max_steps": 9}, config, {"SEESR_TRAIN_BATCH_SIZE": "5"})
    assert (settings.lr, settings.batch_size, settings.max_steps) == (1e-4, 5, 9)
    from seesr.errors import ConfigError

    with pytest.raises(ConfigError, match=r"mixed_precision='fp8' \(allowed: no, fp16, bf16\)"):
        TrainSettings.from_sources({"mixed_precision": "fp8"}, environ={})
    with pytest.raises(ConfigError, match="unknown setting 'learning_rate'"):
        TrainSettings.from_sources({"learning_rate": 1}, environ={})
    with pytest.raises(ConfigError, match=r"seed='x' \(SEESR_TRAIN_SEED: must be an integer\)"):
        TrainSettings.from_sources(environ={"SEESR_TRAIN_SEED": "x"})
    with pytest.raises(ConfigError, match=r"SEESR_TRAIN_BATCH_SIZE=0 \(allowed: 1 to 256\)"):  # names the variable
        TrainSettings.from_sources(environ={"SEESR_TRAIN_BATCH_SIZE": "0"})


def test_api_export():
    import seesr

    assert seesr.train is train and "train" in seesr.__all__
    assert {"upscale", "Upscaler", "train", "evaluate"} <= set(dir(seesr))


def test_train_help_says_each_default_once(capsys, monkeypatch):
    """Each flag's help says its default and range once (none where the text names it already, or
    there is none), the environment and YAML names once, in the epilog."""
    from seesr.cli import main

    monkeypatch.setenv("COLUMNS", "400")  # no line breaks inside words
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert text.count("default") == text.count("(default: ") + 2  # --weights' and --degradation's own words
    assert "default: None" not in text and "env SEESR_TRAIN" not in text and text.count("SEESR_TRAIN_NAME") == 1
    assert "--model MODEL model to fine-tune: seesr-turbo (on sd-turbo) or seesr (on SD-2-base: weights/sd-2-base/) " \
           "(default: seesr-turbo)" in text  # fmt: skip
    assert "(default: 1000; 1 to 10000000)" in text and "(default: off)" in text


def test_cli_user_mistake_is_one_line(tmp_path, capsys):
    from seesr.cli import main

    assert main(["train", str(tmp_path / "missing"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("seesr: training data folder not found") and "\n" not in err


def test_folder_of_pairs_gives_aligned_crops(hr_dir, tmp_path):
    """hr/ + lr/ (x4, matched by name): the LR crop is the HR crop's own area, no degradation."""
    (tmp_path / "hr").mkdir()
    (tmp_path / "lr").mkdir()
    for name in ("0.png", "1.png"):
        hr = Image.open(hr_dir / name).resize((128, 128))
        hr.save(tmp_path / "hr" / name)
        hr.resize((32, 32), Image.Resampling.BICUBIC).save(tmp_path / "lr" / name)
    folder = DataFolder.open(tmp_path)
    assert [p.name for p in folder.hr] == ["0.png", "1.png"] and [p.name for p in folder.lr] == ["0.png", "1.png"]
    sample = TrainingSamples(folder, {}, crop_size=CROP, null_text_ratio=0.0, seed=0)[3]
    assert sample["hr"].shape == (3, CROP, CROP) and sample["lr"].shape == (3, CROP // 4, CROP // 4)
    assert sample["condition"].shape == (3, CROP, CROP) and sample["ram"].shape == (3, 384, 384)
    down = F.interpolate(sample["hr"][None], size=(CROP // 4,) * 2, mode="bicubic", antialias=True)[0]
    assert (down - sample["lr"]).abs().mean() < 0.03  # the same area of the picture


def test_samples_are_reproducible_and_null_prompt_ratio_holds(hr_dir):
    tags = {str(p.resolve()): "cat, tree" for p in DataFolder.open(hr_dir).hr}
    dataset = TrainingSamples(DataFolder.open(hr_dir), tags, crop_size=CROP, null_text_ratio=0.5, seed=4)
    again = TrainingSamples(DataFolder.open(hr_dir), tags, crop_size=CROP, null_text_ratio=0.5, seed=4)
    assert torch.equal(dataset[5]["lr"], again[5]["lr"]) and not torch.equal(dataset[5]["lr"], dataset[6]["lr"])
    prompts = [dataset.sample(0, np.random.default_rng([4, 0, i]))["prompt"] for i in range(200)]
    assert set(prompts) == {"", "cat, tree,"} and 0.4 < prompts.count("") / 200 < 0.6
    assert sorted(dataset.image_index(i) for i in range(4)) == [0, 1, 2, 3]  # each image once per pass


def test_resume_and_optimizer_mistakes_say_what_to_do(tmp_path, hr_dir):
    from seesr.errors import ConfigError
    from seesr.training.loop import _optimizer
    from seesr.training.run_folder import MANIFEST, find_checkpoint

    with pytest.raises(ConfigError, match="no complete checkpoint in .*train without --resume first"):
        find_checkpoint(tmp_path, "latest")
    with pytest.raises(ConfigError, match="is not a checkpoint folder"):
        find_checkpoint(tmp_path, str(hr_dir))
    for step in (9, 10):
        folder = tmp_path / "checkpoints" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "optimizer.bin").write_bytes(b"x" * step)
        (folder / MANIFEST).write_text(json.dumps({"step": step, "files": {"optimizer.bin": step}}))
    assert find_checkpoint(tmp_path, "latest").name == "checkpoint-10"
    assert find_checkpoint(tmp_path, str(tmp_path / "checkpoints" / "checkpoint-9")).name == "checkpoint-9"
    assert _optimizer(TrainSettings()) is torch.optim.AdamW
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pip install bitsandbytes"):
            _optimizer(TrainSettings(use_8bit_adam=True))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
            train(hr_dir, tmp_path / "o", mixed_precision="fp16", **FAST)


# ------------------------------------------------------------------ the non-turbo model, from the base
@pytest.fixture(scope="module")
def sd2_weights_dir(tiny, tmp_path_factory) -> Path:
    """The tiny weights directory plus sd-2-base/ (the tiny sd_turbo standing in, unet/ included)."""
    return lay_out_tiny_sd2_base(tiny, lay_out_tiny_weights(tiny, tmp_path_factory.mktemp("weights_sd2")))


def test_defaults_are_the_official_training_defaults():
    """train_seesr.py: --learning_rate 5e-5 (line 348), --lr_scheduler constant (line 360),
    --adam_weight_decay 1e-2 (line 389), --max_grad_norm 1.0 (line 391), --null_text_ratio 0.5
    (line 555), --resolution 512 (line 291); the data of utils_data/make_paired_data.py."""
    settings = TrainSettings()
    assert (settings.lr, settings.lr_schedule, settings.weight_decay, settings.max_grad_norm) == (5e-5, "constant", 1e-2, 1.0)
    assert (settings.null_text_ratio, settings.crop_size, settings.degradation) == (0.5, 512, None)
    assert (settings.model, settings.from_base) == ("seesr-turbo", False)


@pytest.mark.parametrize("from_base", [False, True], ids=["fine-tune", "from-base"])
def test_train_the_seesr_model_resume_and_upscale_with_it(hr_dir, sd2_weights_dir, tiny, tmp_path, from_base, monkeypatch):
    """`seesr train --model seesr [--from-base]` as typed: 2 steps, resumed to 3 (the same weights
    as 3 in one go, at the constant learning rate); the frozen UNet weights are the SeeSR UNet's
    (fine-tuning) or SD-2-base's (from the base); OUT loads through `seesr upscale --model seesr
    --weights OUT`, and the third step changes its output."""
    from seesr.cli import main

    monkeypatch.setenv("SEESR_PROCESS_SIZE", "0")
    out, whole = tmp_path / "run", tmp_path / "whole"
    flags = ["--model", "seesr", "--weights", str(sd2_weights_dir), "--crop-size", str(CROP), "--num-workers", "0",
             "--lr", "1e-3", "--checkpoint-every", "2", *(["--from-base"] if from_base else [])]  # fmt: skip
    image = str(hr_dir / "0.png")

    def upscale(weights: Path, name: str) -> np.ndarray:
        target = tmp_path / name
        assert main(["upscale", image, "-o", str(target), "--model", "seesr", "--weights", str(weights),
                     "--steps", "2", "--scale", "2", "--seed", "1", "--device", "cpu"]) == 0  # fmt: skip
        return np.asarray(Image.open(target)).astype(int)

    assert main(["train", str(hr_dir), "-o", str(out), "--max-steps", "2", *flags]) == 0
    after_two = upscale(out, "two.png")
    assert main(["train", str(hr_dir), "-o", str(out), "--max-steps", "3", "--resume", "latest", *flags]) == 0
    assert main(["train", str(hr_dir), "-o", str(whole), "--max-steps", "3", *flags]) == 0
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2, 3] and {h["lr"] for h in history} == {1e-3}
    trained = load_file(str(out / "seesr" / "unet" / WEIGHTS))
    reference = load_file(str(whole / "seesr" / "unet" / WEIGHTS))
    assert all(torch.equal(trained[k], reference[k]) for k in reference)
    frozen_source = load_file(str(tiny / ("sd_turbo" if from_base else "seesr") / "unet" / WEIGHTS))
    frozen = [k for k in trained if "image_attentions" not in k]
    assert frozen and all(torch.equal(trained[k], frozen_source[k]) for k in frozen)
    after_three = upscale(out, "three.png")
    before = upscale(sd2_weights_dir, "released.png")
    assert after_three.shape == before.shape == (160, 192, 3)
    assert np.abs(after_three - after_two).max() > 0 and np.abs(after_three - before).max() > 0


def test_from_base_starts_as_train_seesr_py(tiny, tiny_weights, tmp_path):
    """train_seesr.py lines 680-692: the base UNet's weights with new image attention, the ControlNet
    a copy of the UNet's encoder (image attention included) with zeroed output convolutions; the
    new weights follow the seed. Without the base's unet/ folder: a MissingWeightsError saying so."""
    import dataclasses
    import shutil

    from seesr.errors import MissingWeightsError

    paths = dataclasses.replace(tiny_weights, sd2_base=tiny_weights.sd_turbo)
    models = TrainingModels.load(paths, "seesr", from_base=True, seed=0)
    unet, control = models.unet.state_dict(), models.controlnet.state_dict()
    base = load_file(str(tiny / "sd_turbo" / "unet" / WEIGHTS))
    released = load_file(str(tiny / "seesr" / "unet" / WEIGHTS))
    assert all(torch.equal(unet[k], base[k]) for k in base)
    image = [k for k in unet if "image_attentions" in k]
    assert image and not any(k in base for k in image)
    drawn = [k for k in image if k.endswith("to_q.weight")]  # newly drawn, not the released SeeSR's
    assert drawn and not any(torch.equal(unet[k], released[k]) for k in drawn)
    copied = [k for k in control if k.startswith(("conv_in.", "time_embedding.", "down_blocks.", "mid_block."))]
    assert any("image_attentions" in k for k in copied) and all(torch.equal(control[k], unet[k]) for k in copied)
    zero = [k for k in control if k.startswith(("controlnet_down_blocks.", "controlnet_mid_block."))]
    assert zero and all(not control[k].any() for k in zero)
    assert models.model == "seesr" and models.pipeline().model == "seesr"
    again, other = (TrainingModels.load(paths, "seesr", from_base=True, seed=s).unet.state_dict() for s in (0, 1))
    assert all(torch.equal(again[k], unet[k]) for k in image) and not any(torch.equal(other[k], unet[k]) for k in drawn)
    turbo = TrainingModels.load(tiny_weights, "seesr-turbo", from_base=True, seed=0).unet.state_dict()
    assert all(torch.equal(turbo[k], unet[k]) for k in unet)  # the same rule on sd-turbo (the stand-in here)

    without_unet = shutil.copytree(tiny / "sd_turbo", tmp_path / "sd-2-base", ignore=shutil.ignore_patterns("unet"))
    with pytest.raises(MissingWeightsError, match=r"needs the base model's UNet in .*sd-2-base/unet"):
        TrainingModels.load(dataclasses.replace(tiny_weights, sd2_base=without_unet), "seesr", from_base=True)


def test_training_lines_every_n_steps_with_rate_and_eta():
    """Without a terminal: a line every N steps and at the last, rate and ETA from the first step."""
    stream, now = io.StringIO(), [100.0]
    lines = TrainingLines(stream, every=training_every(100), clock=lambda: now[0])
    assert lines.every == 5 and training_every(10) == 1 and training_every(100_000) == 50
    for step in range(1, 101):
        lines(step, 100, 0.5, 1e-5)
        now[0] += 2.0  # 0.5 steps/s
    out = stream.getvalue().splitlines()
    assert len(out) == 20 and out[0] == "train: step 5/100, loss 0.5000, lr 1.00e-05, 0.50 steps/s, ETA 3:10"
    assert out[-1] == "train: step 100/100, loss 0.5000, lr 1.00e-05, 0.50 steps/s, ETA 0:00"
