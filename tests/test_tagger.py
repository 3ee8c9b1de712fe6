"""RAM + DAPE tagger against the official tiny golden files (``refs/ram_outputs.safetensors``)."""

from __future__ import annotations

import logging

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from seesr.errors import ConfigError, InputError, WeightsError
from seesr.engines.seesr.models.tagger import (
    RAM_EMBED_DIM,
    RAM_NUM_TOKENS,
    RamConfig,
    RamTagger,
)

SCALE = 1 / 8  # lora_alpha / r of the official LoRA layers (README: "merge scale is 1/8")
QKV = "visual_encoder.layers.{}.blocks.{}.attn.qkv"
HEAD_Q = "tagging_head.encoder.layer.{}.crossattention.self.{}"
TAG_ENC_Q = "tag_encoder.encoder.layer.{}.crossattention.self.{}"


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _from_files(tiny: Path, checkpoint: Path | None = None, dape: Path | None | str = "default", **kw) -> RamTagger:
    ram = tiny / "ram"
    return RamTagger.from_pretrained(
        checkpoint or ram / "ram_swin_large_14m_tiny.pth",
        ram / "DAPE_tiny.pth" if dape == "default" else dape,
        tag_list=ram / "data/ram_tag_list.txt",
        tag_list_chinese=ram / "data/ram_tag_list_chinese.txt",
        thresholds=ram / "data/ram_tag_list_threshold.txt",
        config=RamConfig.from_official_configs(ram / "configs"),
        **kw,
    )


@pytest.fixture(scope="module")
def tagger(tiny: Path) -> RamTagger:
    return _from_files(tiny)


@pytest.fixture(scope="module")
def image(tiny: Path) -> torch.Tensor:
    """``ToTensor`` of ``inputs/ram_input_384.png``: (1, 3, 384, 384) in [0, 1]."""
    arr = np.asarray(Image.open(tiny / "inputs/ram_input_384.png").convert("RGB")).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).float().div(255).unsqueeze(0)


@pytest.fixture(scope="module")
def output(tagger: RamTagger, image: torch.Tensor):
    return tagger(tagger.preprocess(image))


@pytest.fixture(scope="module")
def raw(tiny: Path) -> tuple[dict, dict]:
    return _load(tiny / "ram/ram_swin_large_14m_tiny.pth")["model"], _load(tiny / "ram/DAPE_tiny.pth")


def _delta(lora: dict, name: str) -> torch.Tensor:
    return (lora[f"{name}.lora_B"] @ lora[f"{name}.lora_A"]) * SCALE


def _official_keys(tiny: Path, rel: str) -> dict[str, list[int]]:
    return {row[0]: row[1] for row in json.loads((tiny / "keys" / rel).read_text())["tensors"]}


def _documented_exclusions(keys) -> set[str]:
    """Official keys we do not have: LoRA tensors (merged), modules not built, buffers the loader drops."""
    return {k for k in keys if k.rsplit(".", 1)[-1] in ("lora_A", "lora_B")
            or k.startswith(("tag_encoder.", "text_decoder."))
            or k.endswith((".relative_position_index", ".attn_mask"))}


# ---------------------------------------------------------------------------------------- numerics


def test_preprocess_checksum(tagger: RamTagger, image: torch.Tensor, refs) -> None:
    x = tagger.preprocess(image)
    assert x.shape == (1, 3, 384, 384) and x.dtype == torch.float32
    ref = refs("ram_outputs")["input_normalized_checksum"].item()
    assert x.double().sum().item() == pytest.approx(ref, rel=1e-6)


def test_embeds_and_logits_match_official(output, refs) -> None:
    ref = refs("ram_outputs")
    assert output.image_embeds.shape == (1, RAM_NUM_TOKENS, RAM_EMBED_DIM)
    assert output.logits.shape == ref["tag_logits"].shape == (1, 4585)
    torch.testing.assert_close(output.image_embeds, ref["image_embeds"], atol=1e-4, rtol=0)
    torch.testing.assert_close(output.logits, ref["tag_logits"], atol=1e-4, rtol=0)


def test_tags_exact(output, tiny: Path) -> None:
    meta = json.loads((tiny / "refs/meta.json").read_text(encoding="utf-8"))
    assert output.tags == [meta["ram_tags"]]
    assert output.tags_chinese == [meta["ram_tags_chinese"]]


def test_tag_batch_matches_single(tagger: RamTagger, image: torch.Tensor, output) -> None:
    out = tagger.tag(torch.cat([image, image.flip(-1)]))
    assert out.tags[0] == output.tags[0] and len(out.tags) == len(out.tags_chinese) == 2
    torch.testing.assert_close(out.image_embeds[:1], output.image_embeds, atol=1e-5, rtol=0)


def test_preprocess_resizes_to_384(tagger: RamTagger) -> None:
    img = torch.rand(2, 3, 200, 300, generator=torch.Generator().manual_seed(0))
    x = tagger.preprocess(img)
    assert x.shape == (2, 3, 384, 384)
    want = F.interpolate(img, size=(384, 384), mode="bilinear", align_corners=False, antialias=True)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(x, (want - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))


def test_bad_inputs_raise(tagger: RamTagger) -> None:
    with pytest.raises(InputError):
        tagger.preprocess(torch.zeros(3, 64, 64))
    with pytest.raises(InputError):
        tagger.preprocess(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(InputError):
        tagger(torch.zeros(1, 3, 256, 256))


# ------------------------------------------------------------------------------------- LoRA merge


def test_swin_qkv_merge_only_q_and_v(tagger: RamTagger, raw) -> None:
    ckpt, dape = raw
    sd = tagger.state_dict()
    for i, j in [(0, 0), (1, 1), (2, 1), (3, 0)]:
        name = QKV.format(i, j)
        w, a, b = ckpt[f"{name}.weight"], dape[f"{name}.lora_A"], dape[f"{name}.lora_B"]
        c, r = w.shape[0] // 3, a.shape[0] // 2
        got = sd[f"{name}.weight"]
        assert torch.equal(got[c:2 * c], w[c:2 * c]), "k third must not change"
        assert not torch.allclose(got[:c], w[:c]) and not torch.allclose(got[2 * c:], w[2 * c:])
        torch.testing.assert_close(got[:c], w[:c] + b[:c] @ a[:r] * SCALE, atol=1e-6, rtol=0)
        torch.testing.assert_close(got[2 * c:], w[2 * c:] + b[c:] @ a[r:] * SCALE, atol=1e-6, rtol=0)


def test_tied_tagging_head_receives_both_deltas(tiny: Path, raw, tmp_path: Path) -> None:
    ckpt, dape = raw
    # a real DAPE has zero tag_encoder B matrices; make them non-zero so the second delta is observable
    gen = torch.Generator().manual_seed(1)
    dape = {k: (torch.randn(v.shape, generator=gen) if k.startswith("tag_encoder.") and k.endswith("lora_B") else v)
            for k, v in dape.items()}
    torch.save(dape, tmp_path / "dape.pth")
    sd = _from_files(tiny, dape=tmp_path / "dape.pth").state_dict()
    for layer in range(2):
        for proj in ("query", "key"):
            head, enc = HEAD_Q.format(layer, proj), TAG_ENC_Q.format(layer, proj)
            w = ckpt[f"{head}.weight"]
            assert torch.equal(w, ckpt[f"{enc}.weight"])  # tied: same values under both names
            d_head, d_enc = _delta(dape, head), _delta(dape, enc)
            assert d_enc.abs().max() > 1e-2 and d_head.abs().max() > 1e-2
            torch.testing.assert_close(sd[f"{head}.weight"], w + d_head + d_enc, atol=1e-6, rtol=0)


def test_official_dape_merge_of_tagging_head(tagger: RamTagger, raw) -> None:
    ckpt, dape = raw
    sd = tagger.state_dict()
    for layer in range(2):
        for proj in ("query", "key"):
            head, enc = HEAD_Q.format(layer, proj), TAG_ENC_Q.format(layer, proj)
            want = ckpt[f"{head}.weight"] + _delta(dape, enc) + _delta(dape, head)
            torch.testing.assert_close(sd[f"{head}.weight"], want, atol=1e-6, rtol=0)
            assert not torch.allclose(sd[f"{head}.weight"], ckpt[f"{head}.weight"])
        value = f"tagging_head.encoder.layer.{layer}.crossattention.self.value.weight"
        assert torch.equal(sd[value], ckpt[value])


def test_merge_before_dtype_cast(tiny: Path, tagger: RamTagger) -> None:
    half = _from_files(tiny, torch_dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    name = f"{QKV.format(0, 0)}.weight"
    assert torch.equal(half.state_dict()[name], tagger.state_dict()[name].to(torch.bfloat16))
    assert half.class_threshold.dtype == torch.float32


# ----------------------------------------------------------------------------------- key contract


def _check_contract(ours: dict[str, list[int]], official: dict[str, list[int]]) -> set[str]:
    assert set(ours) - set(official) == set()
    excluded = set(official) - set(ours)
    assert excluded == _documented_exclusions(official)
    assert ours == {k: official[k] for k in ours}
    return excluded


def test_full_size_keys_match_official(tiny: Path) -> None:
    with torch.device("meta"):  # full size, no memory
        model = RamTagger(RamConfig())
    assert model.fc.weight.is_meta
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    excluded = _check_contract(ours, _official_keys(tiny, "full/ram_lora_swinl.json"))
    assert (len(ours), len(excluded)) == (366, 924)
    assert sum(k.endswith(("lora_A", "lora_B")) for k in excluded) == 248


def test_tiny_keys_match_official(tiny: Path, tagger: RamTagger) -> None:
    ours = {k: list(v.shape) for k, v in tagger.state_dict().items()}
    _check_contract(ours, _official_keys(tiny, "ram_lora_tiny.json"))
    ckpt_keys = _official_keys(tiny, "ram_ckpt_model_tiny.json")
    assert {k: v for k, v in ckpt_keys.items() if not k.startswith(("tag_encoder.", "text_decoder."))} == ours


# ------------------------------------------------------------------------------------ load errors


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_unknown_checkpoint_key_is_one_warning(tiny: Path, raw, tmp_path: Path, tagger: RamTagger, caplog) -> None:
    """The official loaders read RAM with strict=False: an extra key is reported once, then ignored."""
    ckpt = dict(raw[0], **{"visual_encoder.bogus.weight": torch.zeros(2)})
    torch.save({"model": ckpt}, tmp_path / "ram.pth")
    with caplog.at_level(logging.WARNING):
        loaded = _from_files(tiny, tmp_path / "ram.pth")
    (warning,) = _warnings(caplog)
    assert "1 unexpected key" in warning and "visual_encoder.bogus.weight" in warning and str(tmp_path / "ram.pth") in warning
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), tagger.state_dict().values()))


def test_missing_checkpoint_key_raises(tiny: Path, raw, tmp_path: Path) -> None:
    ckpt = {k: v for k, v in raw[0].items() if k != "fc.weight"}
    torch.save({"model": ckpt}, tmp_path / "ram.pth")
    with pytest.raises(WeightsError, match=r"missing keys \(1\): fc\.weight") as err:
        _from_files(tiny, tmp_path / "ram.pth")
    assert str(tmp_path / "ram.pth") in str(err.value)


def test_dape_errors(tiny: Path, raw, tmp_path: Path, caplog) -> None:
    dape = raw[1]
    bad = dict(dape, **{"tagging_head.encoder.layer.0.crossattention.self.value.lora_A": torch.zeros(8, 512)})
    torch.save(bad, tmp_path / "unknown.pth")
    with caplog.at_level(logging.WARNING):
        _from_files(tiny, dape=tmp_path / "unknown.pth")
    (warning,) = _warnings(caplog)
    assert "crossattention.self.value.lora_A" in warning
    name = f"{QKV.format(1, 0)}.lora_B"
    torch.save({k: v for k, v in dape.items() if k != name}, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=name.replace(".", r"\.")):
        _from_files(tiny, dape=tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match="not found"):
        _from_files(tiny, dape=tmp_path / "absent.pth")


def test_ignored_prefixes_and_no_dape(tiny: Path, raw, tmp_path: Path) -> None:
    ckpt = dict(raw[0], **{"text_decoder.cls.anything": torch.zeros(1), "tag_encoder.foo.bar": torch.zeros(1)})
    ckpt = {k.replace("tagging_head", "vision_multi"): v for k, v in ckpt.items()}  # official rename
    torch.save({"model": ckpt}, tmp_path / "ram.pth")
    sd = _from_files(tiny, tmp_path / "ram.pth", dape=None).state_dict()
    for key in (f"{QKV.format(0, 0)}.weight", f"{HEAD_Q.format(0, 'query')}.weight"):
        assert torch.equal(sd[key], raw[0][key])  # no DAPE: nothing merged


def test_config_validation(tiny: Path) -> None:
    with pytest.raises(ConfigError):
        RamConfig(vision_width=100)
    with pytest.raises(ConfigError):
        RamConfig.from_official_configs(tiny / "ram/configs", image_size=224)
    config = RamConfig()  # 1 pooled token + the final-stage Swin grid
    assert 1 + (config.image_size // (config.patch_size * 2 ** (len(config.depths) - 1))) ** 2 == RAM_NUM_TOKENS


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_pipeline_in_half_precision_tags_in_float32(tiny: Path, refs, tiny_weights, tiny_pipe, dtype) -> None:
    """The official code runs RAM + DAPE in float32 always: tags are thresholded logits, and a tag
    near its threshold would flip in half precision. A pipeline moved to bf16/fp16 keeps the tagger
    float32, so its tags and embeddings equal the float32 pipeline's; only the denoiser gets the
    embeddings in its dtype."""
    from seesr.engines.seesr.pipeline import SeesrPipeline

    half = SeesrPipeline.from_pretrained(tiny_weights, device="cpu", torch_dtype=dtype)
    assert half.unet.dtype == dtype and {p.dtype for p in half.tagger.parameters()} == {torch.float32}
    image = Image.open(tiny / "inputs" / "ram_input_384.png").convert("RGB")
    ours, full = half.tag(image), tiny_pipe.tag(image)
    assert ours.tags == full.tags and ours.tags[0] == json.loads((tiny / "refs" / "meta.json").read_text())["ram_tags"]
    assert torch.equal(ours.image_embeds, full.image_embeds) and torch.equal(ours.logits, full.logits)
    torch.testing.assert_close(ours.image_embeds, refs("ram_outputs")["image_embeds"], atol=1e-4, rtol=1e-4)

    seen = []
    predict = half.predict_noise
    half.predict_noise = lambda latents, t, prompt, ram_embeds, *rest: seen.append(ram_embeds) or predict(
        latents, t, prompt, ram_embeds, *rest
    )
    lr = Image.open(tiny / "inputs" / "pipeline_lr_crop.png")
    out = half(lr, scale=4, num_inference_steps=1, seed=0, process_size=0)
    assert out.tags == tiny_pipe.tag(lr).tags[0]
    assert seen[0].dtype == dtype and torch.equal(seen[0], tiny_pipe.tag(lr).image_embeds.to(dtype))
    half.to("cpu", torch.float32)
    half.to("cpu", dtype)
    assert {p.dtype for p in half.tagger.parameters()} == {torch.float32}
