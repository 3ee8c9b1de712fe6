"""model="seesr": SeeSR on SD-2-base (the official ``test_seesr.py``): VAE, text encoder, tokenizer
and scheduler from the SD-2-base folder, SeeSR's UNet whole ("plain" rule), CFG 5.5, 50 steps.
The tiny sd_turbo folder stands in for SD-2-base (same architecture)."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from seesr.api import Upscaler
from seesr.errors import WeightsError
from seesr.engines.seesr.pipeline import SeesrPipeline

WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def seesr_weights(tiny_weights):
    return dataclasses.replace(tiny_weights, sd2_base=tiny_weights.sd_turbo)


@pytest.fixture(scope="module")
def seesr_pipe(seesr_weights):
    return SeesrPipeline.from_pretrained(seesr_weights, model="seesr", device="cpu")


def test_plain_rule_loads_the_seesr_unet_whole(tiny, seesr_pipe):
    saved = load_file(str(tiny / "seesr" / "unet" / WEIGHTS))
    state = seesr_pipe.unet.state_dict()
    assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)
    contract = json.loads((tiny / "keys" / "unet_seesr_tiny.json").read_text())
    assert sorted([k, list(v.shape)] for k, v in state.items()) == sorted(t[:2] for t in contract["tensors"])
    assert seesr_pipe.model == "seesr"


def test_plain_rule_builds_the_full_size_unet_from_the_seesr_config(tiny, tmp_path):
    """The plain rule reads the UNet config from seesr/unet (not from the base folder): with the
    official full-size config it builds exactly the full-size key list (on the meta device)."""
    from seesr.engines.seesr.models.unet import SeesrUNet2DConditionModel

    contract = json.loads((tiny / "keys" / "full" / "unet_seesr_sd2base.json").read_text())
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps(contract["config"]))
    config = SeesrUNet2DConditionModel.load_config(tmp_path, subfolder="unet")
    with torch.device("meta"):
        model = SeesrUNet2DConditionModel.from_config(config)
    shapes = sorted([k, list(v.shape)] for k, v in model.state_dict().items())
    assert shapes == sorted(t[:2] for t in contract["tensors"]) and len(shapes) == contract["num_tensors"]


def test_plain_rule_reproduces_the_official_forwards(tiny, refs, seesr_pipe):
    """The fixture forwards are of the turbo merge (sd-turbo weights + SeeSR image attention).
    The plain-loaded UNet with its non-image weights swapped for sd-turbo's reproduces them; as
    loaded (SeeSR's own base weights) it does not: the rule is observable."""
    r = refs("unet_controlnet_forward")
    unet = copy.deepcopy(seesr_pipe.unet)
    base = load_file(str(tiny / "sd_turbo" / "unet" / WEIGHTS))
    missing, unexpected = unet.load_state_dict(base, strict=False)
    assert not unexpected and missing and all("image_attentions" in k for k in missing)

    def forward(model):
        x = {k[len("case2.in.") :]: v for k, v in r.items() if k.startswith("case2.in.")}
        with torch.no_grad():
            down, mid = seesr_pipe.controlnet(
                x["sample"], x["timestep"], x["encoder_hidden_states"], x["controlnet_cond"],
                conditioning_scale=float(x["conditioning_scale"]),
                image_encoder_hidden_states=x["image_encoder_hidden_states"], return_dict=False,
            )  # fmt: skip
            return model(
                x["sample"], x["timestep"], x["encoder_hidden_states"], x["image_encoder_hidden_states"],
                down_block_additional_residuals=down, mid_block_additional_residual=mid, return_dict=False,
            )[0]  # fmt: skip

    expected = r["case2.unet.out_with_controlnet"]
    torch.testing.assert_close(forward(unet), expected, atol=1e-4, rtol=1e-4)
    assert (forward(seesr_pipe.unet) - expected).abs().max() > 1e-2


def test_components_come_from_the_base_folder(tmp_path, tiny, tiny_weights):
    """VAE, text encoder, tokenizer and scheduler are read from sd2_base, not from sd_turbo."""
    import shutil

    base = tmp_path / "sd-2-base"
    shutil.copytree(tiny / "sd_turbo", base)
    config = json.loads((base / "scheduler" / "scheduler_config.json").read_text())
    config.pop("timestep_spacing")  # SD-2-base's config: diffusers' "leading" default
    (base / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    pipe = SeesrPipeline.from_pretrained(dataclasses.replace(tiny_weights, sd2_base=base), model="seesr", device="cpu")
    assert pipe.schedule.timesteps(50)[:2] == [981, 961]
    turbo = SeesrPipeline.from_pretrained(tiny_weights, device="cpu")
    assert turbo.schedule.timesteps(50)[:2] == [999, 979]


def test_defaults_are_50_steps_with_guidance_and_the_negative_prompt(seesr_pipe, lr_image):
    out = seesr_pipe(lr_image, scale=4, seed=0, process_size=0, output_type="pt")
    assert len(out.timesteps) == 50 and out.images.shape == (1, 3, 96, 144)
    args = dict(scale=4, seed=0, process_size=0, num_inference_steps=2, output_type="pt")
    one = seesr_pipe(lr_image, negative_prompt="blurry", **args)
    other = seesr_pipe(lr_image, negative_prompt="noise", **args)
    assert not torch.allclose(one.latents, other.latents)  # CFG 5.5 uses the negative prompt
    unguided = seesr_pipe(lr_image, guidance_scale=1.0, negative_prompt="blurry", **args)
    assert not torch.allclose(one.latents, unguided.latents)


def test_defaults_are_ddpm_and_tiles_of_96_with_overlap_4(seesr_pipe, tiny_pipe, lr_image):
    """test_seesr.py's DDPMScheduler (line 78) and latent tiles 96 / 4 (lines 258-259); the turbo
    model keeps DDIM and the planner's overlap (32 at 96)."""
    args = dict(scale=4, seed=0, process_size=0, num_inference_steps=2, output_type="pt")
    default = seesr_pipe(lr_image, **args).latents
    assert torch.equal(default, seesr_pipe(lr_image, sampler="ddpm", **args).latents)
    assert not torch.allclose(default, seesr_pipe(lr_image, sampler="ddim", **args).latents)
    assert torch.equal(tiny_pipe(lr_image, **args).latents, tiny_pipe(lr_image, sampler="ddim", **args).latents)
    plan, turbo = seesr_pipe.plan_for(1600, 1600), tiny_pipe.plan_for(1600, 1600)
    assert (plan.latent_tile, plan.latent_overlap) == (96, 4) and (turbo.latent_tile, turbo.latent_overlap) == (96, 32)
    assert seesr_pipe.plan_for(1600, 1600, overrides={"latent_overlap": 9}).latent_overlap == 9


def test_missing_sd2_base_is_a_weights_error_naming_the_folder(tiny_weights):
    with pytest.raises(WeightsError, match="weights/sd-2-base/"):
        SeesrPipeline.from_pretrained(tiny_weights, model="seesr", device="cpu")


def test_api_model_defaults_and_options_reach_the_pipeline(seesr_weights, lr_image):
    upscaler = Upscaler(seesr_weights, device="cpu")
    assert (upscaler.settings({"model": "seesr"}).steps, upscaler.settings({"model": "seesr"}).guidance_scale) == (50, 5.5)
    assert upscaler.settings({"model": "seesr", "steps": 3}).steps == 3
    assert upscaler.settings({}).steps == 2 and upscaler.settings({}).guidance_scale == 1.0

    fast = dict(scale=2, steps=2, process_size=0, seed=3)
    turbo = upscaler.upscale(lr_image, **fast)
    assert upscaler.loaded.model == "seesr-turbo"
    ddpm = upscaler.upscale(lr_image, sampler="ddpm", **fast)
    noise = upscaler.upscale(lr_image, start_point="noise", **fast)
    early = upscaler.upscale(lr_image, start_steps=500, **fast)
    weak = upscaler.upscale(lr_image, conditioning_scale=0.2, **fast)
    big = upscaler.upscale(lr_image, **{**fast, "process_size": 64})
    pixels = lambda result: torch.from_numpy(np.asarray(result.image).copy())  # noqa: E731
    for other in (ddpm, noise, early, weak):
        assert not torch.equal(pixels(turbo), pixels(other))
    assert big.image.size == turbo.image.size and not torch.equal(pixels(turbo), pixels(big))
    positive = upscaler.upscale(lr_image, positive_prompt="sharp", **fast)
    assert positive.prompt.endswith(",sharp")

    seesr = upscaler.upscale(lr_image, model="seesr", steps=2, scale=2, process_size=0, seed=3)
    assert upscaler.loaded.model == "seesr" and seesr.settings.guidance_scale == 5.5 and seesr.settings.sampler == "ddpm"
    assert seesr.engine == "seesr" and not torch.equal(pixels(turbo), pixels(seesr))
