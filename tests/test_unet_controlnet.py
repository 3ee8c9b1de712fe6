"""SeeSR UNet and ControlNet: parity with the official tiny references, key contract, strict loading."""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from seesr.errors import ConfigError, WeightsError
from seesr.engines.seesr.models.controlnet import SeesrControlNetModel
from seesr.engines.seesr.models.unet import SeesrUNet2DConditionModel

ATOL = 1e-4
WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def unet(tiny: Path) -> SeesrUNet2DConditionModel:
    return SeesrUNet2DConditionModel.from_turbo(tiny / "sd_turbo", tiny / "seesr")


@pytest.fixture(scope="module")
def controlnet(tiny: Path) -> SeesrControlNetModel:
    return SeesrControlNetModel.from_pretrained(tiny / "seesr", subfolder="controlnet")


def _to_tensor(path: Path) -> torch.Tensor:
    """torchvision ``ToTensor``: uint8 HWC -> float CHW / 255, with a batch axis."""
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1)[None]


def _case_inputs(case: str, tiny: Path, refs) -> dict:
    r = refs("unet_controlnet_forward")
    if case == "case1":  # 0-d timestep; RAM embeddings and the pipeline image from the shared files
        timestep = r["case1.in.timestep"][0]
        image_tokens = refs("ram_outputs")["image_embeds"]
        cond = _to_tensor(tiny / "inputs" / "pipeline_input.png")
    else:
        timestep = r["case2.in.timestep"]
        image_tokens = r["case2.in.image_encoder_hidden_states"]
        cond = r["case2.in.controlnet_cond"]
    return {
        "sample": r[f"{case}.in.sample"],
        "timestep": timestep,
        "encoder_hidden_states": r[f"{case}.in.encoder_hidden_states"],
        "image_encoder_hidden_states": image_tokens,
        "controlnet_cond": cond,
        "conditioning_scale": float(r[f"{case}.in.conditioning_scale"]),
    }


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@pytest.mark.parametrize("case", ["case1", "case2"])
def test_forward_matches_official(case, tiny, refs, unet, controlnet):
    r, x = refs("unet_controlnet_forward"), _case_inputs(case, tiny, refs)
    with torch.no_grad():
        down, mid = controlnet(
            x["sample"], x["timestep"], x["encoder_hidden_states"], x["controlnet_cond"],
            conditioning_scale=x["conditioning_scale"],
            image_encoder_hidden_states=x["image_encoder_hidden_states"], return_dict=False,
        )
        with_cn = unet(
            x["sample"], x["timestep"], x["encoder_hidden_states"], x["image_encoder_hidden_states"],
            down_block_additional_residuals=down, mid_block_additional_residual=mid,
        ).sample
        plain = unet(x["sample"], x["timestep"], x["encoder_hidden_states"], x["image_encoder_hidden_states"],
                     return_dict=False)[0]
    assert isinstance(down, tuple) and len(down) == 4
    for i, d in enumerate(down):
        assert _max_diff(d, r[f"{case}.controlnet.down_block_res_samples.{i}"]) < ATOL, i
    assert _max_diff(mid, r[f"{case}.controlnet.mid_block_res_sample"]) < ATOL
    assert _max_diff(with_cn, r[f"{case}.unet.out_with_controlnet"]) < ATOL
    assert _max_diff(plain, r[f"{case}.unet.out_without_residuals"]) < ATOL


def test_image_tokens_are_required_and_checked(unet, controlnet):
    sample, text = torch.zeros(1, 4, 8, 8), torch.zeros(1, 77, 32)
    with pytest.raises(ValueError, match="image_encoder_hidden_states"):
        controlnet(sample, 1, text, torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="image_encoder_hidden_states"):
        unet(sample, 1, text, torch.zeros(1, 4, 256))


# --------------------------------------------------------------------------- loading rules
def test_turbo_rule_merges_base_and_image_attention(tiny, unet):
    base = load_file(str(tiny / "sd_turbo" / "unet" / WEIGHTS))
    seesr = load_file(str(tiny / "seesr" / "unet" / WEIGHTS))
    state = unet.state_dict()
    image_keys = {k for k in state if "image_attentions" in k}
    assert image_keys and image_keys == {k for k in seesr if "image_attentions" in k}
    assert state.keys() - image_keys == base.keys()
    for k, v in state.items():
        assert torch.equal(v, seesr[k] if k in image_keys else base[k]), k
    # the two folders differ outside image attention, so the rule is observable
    assert not torch.equal(base["conv_in.weight"], seesr["conv_in.weight"])
    assert unet.dtype == torch.float32 and not unet.training


def test_plain_rule_loads_seesr_unet_whole(tiny):
    unet = SeesrUNet2DConditionModel.from_pretrained(tiny / "seesr", subfolder="unet")
    seesr = load_file(str(tiny / "seesr" / "unet" / WEIGHTS))
    state = unet.state_dict()
    assert state.keys() == seesr.keys()
    assert all(torch.equal(state[k], seesr[k]) for k in seesr)


def test_controlnet_loads_whole(tiny, controlnet):
    ref = load_file(str(tiny / "seesr" / "controlnet" / WEIGHTS))
    state = controlnet.state_dict()
    assert state.keys() == ref.keys()
    assert all(torch.equal(state[k], ref[k]) for k in ref)


def test_from_turbo_dtype(tiny):
    unet = SeesrUNet2DConditionModel.from_turbo(tiny / "sd_turbo", tiny / "seesr", torch_dtype=torch.float16)
    assert {p.dtype for p in unet.parameters()} == {torch.float16}


# --------------------------------------------------------------------------- key contract
def _shapes(model: torch.nn.Module) -> list:
    return sorted([k, list(v.shape)] for k, v in model.state_dict().items())


def _contract(tiny: Path, name: str) -> dict:
    return json.loads((tiny / "keys" / f"{name}.json").read_text())


def test_tiny_keys_match_contract(tiny, unet, controlnet):
    for model, name in ((unet, "unet_seesr_tiny"), (controlnet, "controlnet_tiny")):
        contract = _contract(tiny, name)
        assert _shapes(model) == sorted(contract["tensors"]), name
        assert sum(v.numel() for v in model.state_dict().values()) == contract["num_elements"]


@pytest.mark.parametrize(
    ("cls", "name"),
    [(SeesrUNet2DConditionModel, "full/unet_seesr_sd2base"), (SeesrControlNetModel, "full/controlnet_seesr_sd2base")],
)
def test_full_size_keys_match_contract(tiny, cls, name):
    contract = _contract(tiny, name)
    with torch.device("meta"):  # no weights allocated
        model = cls.from_config(contract["config"])
    assert _shapes(model) == sorted(contract["tensors"])
    assert len(contract["tensors"]) == contract["num_tensors"]


def test_from_unet_builds_the_official_controlnet_layout(tiny, unet, controlnet):
    built = SeesrControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 32, 32))
    assert _shapes(built) == _shapes(controlnet)
    assert torch.equal(built.down_blocks[0].image_attentions[0].proj_in.weight,
                       unet.down_blocks[0].image_attentions[0].proj_in.weight)
    with pytest.raises(TypeError):
        SeesrControlNetModel.from_unet(torch.nn.Linear(1, 1))


# --------------------------------------------------------------------------- strict loading
def _copy_with(src: Path, dst: Path, edit) -> Path:
    """Copy a diffusers model folder, rewriting its safetensors state dict through ``edit``."""
    dst.mkdir(parents=True)
    shutil.copy(src / "config.json", dst / "config.json")
    save_file(edit(load_file(str(src / WEIGHTS))), str(dst / WEIGHTS))
    return dst


def _drop(key):
    return lambda sd: {k: v for k, v in sd.items() if k != key}


def _add(key):
    return lambda sd: {**sd, key: torch.zeros(3)}


def _load_plain(kind):
    cls = SeesrUNet2DConditionModel if kind == "unet" else SeesrControlNetModel
    return lambda root: cls.from_pretrained(root, subfolder=kind)


MISSING = "mid_block.image_attentions.0.proj_in.weight"
UNEXPECTED = "mid_block.image_attentions.0.extra.weight"


def _one_warning(caplog, *names):
    """Exactly one warning line was logged in all, and it names every key in ``names``."""
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "\n" not in message and all(name in message for name in names), message
    return message


@pytest.mark.parametrize("kind", ["unet", "controlnet"])
def test_plain_loading_refuses_a_missing_key(tiny, tmp_path, kind):
    _copy_with(tiny / "seesr" / kind, tmp_path / kind, _drop(MISSING))
    with pytest.raises(WeightsError, match=MISSING.replace(".", r"\.")) as err:
        _load_plain(kind)(tmp_path)
    assert str(tmp_path / kind / WEIGHTS) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("kind", ["unet", "controlnet"])
def test_plain_loading_warns_once_about_an_unexpected_key(tiny, tmp_path, kind, caplog):
    _copy_with(tiny / "seesr" / kind, tmp_path / kind, _add(UNEXPECTED))
    with caplog.at_level(logging.WARNING):
        model = _load_plain(kind)(tmp_path)
    assert "1 unexpected key" in _one_warning(caplog, UNEXPECTED, str(tmp_path / kind / WEIGHTS))
    reference = _load_plain(kind)(tiny / "seesr")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


@pytest.mark.parametrize("folder", ["sd_turbo", "seesr"])
def test_turbo_loading_refuses_a_missing_key(tiny, tmp_path, folder):
    """A key missing from either folder's contribution is an error naming it and the file."""
    key = "conv_in.weight" if folder == "sd_turbo" else MISSING
    roots = {"sd_turbo": tiny / "sd_turbo", "seesr": tiny / "seesr"}
    roots[folder] = tmp_path / folder
    _copy_with(tiny / folder / "unet", roots[folder] / "unet", _drop(key))
    with pytest.raises(WeightsError, match=key.replace(".", r"\.")) as err:
        SeesrUNet2DConditionModel.from_turbo(roots["sd_turbo"], roots["seesr"])
    assert str(roots[folder] / "unet" / WEIGHTS) in str(err.value)


@pytest.mark.parametrize("folder", ["sd_turbo", "seesr"])
def test_turbo_loading_warns_once_about_an_unexpected_key(tiny, tmp_path, folder, caplog):
    extra = "conv_in.extra" if folder == "sd_turbo" else UNEXPECTED
    roots = {"sd_turbo": tiny / "sd_turbo", "seesr": tiny / "seesr"}
    roots[folder] = tmp_path / folder
    _copy_with(tiny / folder / "unet", roots[folder] / "unet", _add(extra))
    with caplog.at_level(logging.WARNING):
        model = SeesrUNet2DConditionModel.from_turbo(roots["sd_turbo"], roots["seesr"])
    _one_warning(caplog, extra)
    reference = SeesrUNet2DConditionModel.from_turbo(tiny / "sd_turbo", tiny / "seesr")
    assert model.state_dict().keys() == reference.state_dict().keys()


def test_turbo_rejects_seesr_without_image_attention(tiny):
    with pytest.raises(WeightsError, match="image_attentions"):
        SeesrUNet2DConditionModel.from_turbo(tiny / "sd_turbo", tiny / "sd_turbo")


def test_turbo_rejects_shape_mismatch(tiny, tmp_path):
    key = "down_blocks.0.image_attentions.0.proj_in.weight"
    _copy_with(tiny / "seesr" / "unet", tmp_path / "seesr" / "unet", lambda sd: {**sd, key: torch.zeros(8, 16)})
    with pytest.raises(WeightsError, match=r"down_blocks\.0\.image_attentions\.0\.proj_in\.weight"):
        SeesrUNet2DConditionModel.from_turbo(tiny / "sd_turbo", tmp_path / "seesr")


def test_plain_rule_rejects_a_base_unet(tiny):
    """sd_turbo/unet has no image attention: loading it whole is an error, not random init."""
    with pytest.raises(WeightsError, match="missing keys"):
        SeesrUNet2DConditionModel.from_pretrained(tiny / "sd_turbo", subfolder="unet")


def test_missing_weights_file(tiny, tmp_path):
    (tmp_path / "unet").mkdir()
    shutil.copy(tiny / "seesr" / "unet" / "config.json", tmp_path / "unet" / "config.json")
    with pytest.raises(WeightsError, match="no diffusion_pytorch_model"):
        SeesrUNet2DConditionModel.from_turbo(tiny / "sd_turbo", tmp_path)


def test_bin_weights_are_accepted(tiny, tmp_path, unet):
    for folder in ("sd_turbo", "seesr"):
        dst = tmp_path / folder / "unet"
        dst.mkdir(parents=True)
        shutil.copy(tiny / folder / "unet" / "config.json", dst / "config.json")
        torch.save(load_file(str(tiny / folder / "unet" / WEIGHTS)), dst / "diffusion_pytorch_model.bin")
    turbo = SeesrUNet2DConditionModel.from_turbo(tmp_path / "sd_turbo", tmp_path / "seesr")
    assert all(torch.equal(v, unet.state_dict()[k]) for k, v in turbo.state_dict().items())
    plain = SeesrUNet2DConditionModel.from_pretrained(tmp_path / "seesr", subfolder="unet")
    seesr = load_file(str(tiny / "seesr" / "unet" / WEIGHTS))
    assert all(torch.equal(v, seesr[k]) for k, v in plain.state_dict().items())


def test_config_without_image_attention_is_rejected(tiny, tmp_path):
    dst = tmp_path / "unet"
    shutil.copytree(tiny / "seesr" / "unet", dst)
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, "use_image_cross_attention": False}))
    with pytest.raises(ConfigError, match="use_image_cross_attention"):
        SeesrUNet2DConditionModel.from_pretrained(tmp_path, subfolder="unet")


# --------------------------------------------------------------------------- model plumbing
def test_save_pretrained_round_trip(tmp_path, unet):
    unet.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["use_image_cross_attention"] is True
    again = SeesrUNet2DConditionModel.from_pretrained(tmp_path)
    assert all(torch.equal(v, unet.state_dict()[k]) for k, v in again.state_dict().items())


def test_deepcopy_rewires_image_attention(unet):
    clone = copy.deepcopy(unet)
    (hook,) = clone.up_blocks[1].attentions[0]._forward_hooks.values()
    assert hook.image_attn is clone.up_blocks[1].image_attentions[0]
    assert hook.tokens is clone._image_tokens
