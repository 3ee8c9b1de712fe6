"""The AVX512-BF16 attention kernel: equal to torch's SDPA within bf16 rounding, the rule that picks
it, and the fallback to torch's SDPA when it cannot be built or does not apply."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from seesr.errors import ConfigError
from seesr.engines.seesr.models import attention
from seesr.engines.seesr.models.attention import (
    Avx512Bf16AttnProcessor,
    attention_kernel,
    kernel_supports,
    load_kernel,
    scaled_dot_product_attention,
    set_attention,
)


def _kernel_or_skip():
    if not attention.cpu_bf16_units()[0]:
        pytest.skip("this CPU has no AVX512-BF16")
    kernel = load_kernel()
    if kernel is None:
        pytest.skip("the kernel could not be built here (no C++ compiler?)")
    return kernel


def _heads(batch: int, heads: int, length: int, head_dim: int, seed: int) -> torch.Tensor:
    """(batch, heads, length, head_dim) laid out as diffusers makes it: a (batch, length, heads x
    head_dim) projection viewed per head (rows strided by heads x head_dim)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, heads * head_dim, generator=g) * 1.5
    return x.to(torch.bfloat16).view(batch, length, heads, head_dim).transpose(1, 2)


def _errors(got: torch.Tensor, want: torch.Tensor) -> tuple[float, float]:
    diff = got.double() - want.double()
    return float(diff.abs().max()), float(diff.norm() / want.double().norm())


# (batch, heads, query length, key length, head width): self-attention across several key blocks
# of 512, cross-attention to 77 text and 145 RAM tokens, odd lengths, one key, the VAE's 512 width
SHAPES = [(1, 2, 1030, 1030, 64), (2, 3, 100, 77, 64), (1, 2, 50, 145, 64), (1, 1, 7, 1, 64), (1, 2, 33, 17, 128),
          (1, 1, 300, 300, 512)]  # fmt: skip


@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_equals_sdpa_within_bf16_rounding(shape):
    """Against float32 SDPA the kernel's error is that of torch's bf16 SDPA; against torch's bf16
    SDPA the two differ by about one bf16 rounding of the output."""
    _kernel_or_skip()
    batch, heads, q_len, kv_len, head_dim = shape
    q, k, v = (_heads(batch, heads, n, head_dim, seed) for n, seed in ((q_len, 0), (kv_len, 1), (kv_len, 2)))
    assert kernel_supports(q, k, v)
    got = scaled_dot_product_attention(q, k, v)
    torch_bf16 = F.scaled_dot_product_attention(q, k, v)
    reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert got.shape == reference.shape and got.dtype == torch.bfloat16
    max_ours, rel_ours = _errors(got, reference)
    max_torch, rel_torch = _errors(torch_bf16, reference)
    assert rel_ours <= 1.05 * rel_torch + 1e-5 and max_ours <= 1.5 * max_torch + 2**-12, (rel_ours, rel_torch, max_ours, max_torch)
    scale = float(reference.abs().max())
    max_diff, rel_diff = _errors(got, torch_bf16)
    assert max_diff <= scale * 2**-7 and rel_diff < 1.5e-3, (max_diff, rel_diff)


def test_kernel_takes_an_explicit_scale_and_contiguous_heads():
    _kernel_or_skip()
    q, k, v = (torch.randn(2, 2, n, 64, generator=torch.Generator().manual_seed(n)).bfloat16() for n in (60, 70, 70))
    got = scaled_dot_product_attention(q, k, v, scale=0.3)
    reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=0.3)
    assert _errors(got, reference)[1] < 5e-3


def test_calls_the_kernel_does_not_compute_go_to_torch():
    q = torch.randn(1, 2, 10, 64).bfloat16()
    mask = torch.zeros(10, 10, dtype=torch.bool)
    assert not kernel_supports(q, q, q, attn_mask=mask)
    assert not kernel_supports(q, q, q, is_causal=True)
    assert not kernel_supports(q, q, q, dropout_p=0.1)
    assert not kernel_supports(q.float(), q.float(), q.float())
    assert not kernel_supports(q[..., :32], q[..., :32], q[..., :32])  # head width not a multiple of 64
    assert not kernel_supports(q.transpose(-1, -2), q, q)  # rows not contiguous
    assert kernel_supports(q, q, q)
    q32 = q.float()
    assert torch.equal(scaled_dot_product_attention(q32, q32, q32), F.scaled_dot_product_attention(q32, q32, q32))
    causal = scaled_dot_product_attention(q, q, q, is_causal=True)
    assert torch.equal(causal, F.scaled_dot_product_attention(q, q, q, is_causal=True))


@pytest.mark.parametrize(
    ("device", "dtype", "flags", "choice", "expected"),
    [
        ("cpu", torch.bfloat16, (True, False), "auto", "avx512-bf16"),  # AVX512-BF16 without AMX: measured faster
        ("cpu", torch.bfloat16, (True, True), "auto", "sdpa"),  # AMX: torch's kernel uses the tiles
        ("cpu", torch.bfloat16, (False, False), "auto", "sdpa"),
        ("cpu", torch.float32, (True, False), "auto", "sdpa"),  # the float32 parity path is untouched
        ("cuda", torch.bfloat16, (True, False), "auto", "sdpa"),
        ("cpu", torch.bfloat16, (True, False), "sdpa", "sdpa"),  # the opt-out
    ],
)
def test_the_rule_picks_the_kernel_only_where_it_was_measured_faster(monkeypatch, device, dtype, flags, choice, expected):
    monkeypatch.setattr(attention, "cpu_bf16_units", lambda: flags)
    monkeypatch.setattr(attention, "load_kernel", lambda: print)  # built
    assert attention_kernel(device, dtype, choice) == expected


def test_the_rule_keeps_torchs_attention_when_the_kernel_cannot_be_built(monkeypatch):
    monkeypatch.setattr(attention, "cpu_bf16_units", lambda: (True, False))
    monkeypatch.setattr(attention, "load_kernel", lambda: None)
    assert attention_kernel("cpu", torch.bfloat16) == "sdpa"
    layer = _attention_layer(torch.bfloat16)
    assert set_attention([layer], "cpu", torch.bfloat16) == "sdpa" and type(layer.processor) is AttnProcessor2_0


def test_an_unknown_attention_choice_is_a_config_error():
    with pytest.raises(ConfigError, match="auto, sdpa"):
        attention_kernel("cpu", torch.bfloat16, "flash")


@pytest.fixture()
def fresh_kernel(monkeypatch, tmp_path):
    """An empty kernel cache (``XDG_CACHE_HOME`` in ``tmp_path``) and no kernel loaded in this process."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    load_kernel.cache_clear()
    yield tmp_path / "seesr" / "kernels"
    load_kernel.cache_clear()


def test_without_a_compiler_attention_stays_on_torch(monkeypatch, fresh_kernel, caplog):
    monkeypatch.setattr(attention, "_compiler", lambda: None)
    q = torch.randn(1, 2, 20, 64).bfloat16()
    with caplog.at_level(logging.WARNING, logger="seesr.engines.seesr.models.attention"):
        assert load_kernel() is None
        assert torch.equal(scaled_dot_product_attention(q, q, q), F.scaled_dot_product_attention(q, q, q))
    assert "no C++ compiler" in caplog.text
    assert not fresh_kernel.exists()


def test_a_failed_build_warns_once_and_leaves_nothing_behind(monkeypatch, fresh_kernel, caplog):
    monkeypatch.setattr(attention, "_compiler", lambda: "/bin/false")
    with caplog.at_level(logging.WARNING, logger="seesr.engines.seesr.models.attention"):
        assert load_kernel() is None
        assert load_kernel() is None
    assert caplog.text.count("building the AVX512-BF16 attention kernel failed") == 1
    assert list(fresh_kernel.iterdir()) == []


def test_the_build_is_cached_on_disk(fresh_kernel):
    if attention._compiler() is None:
        pytest.skip("no C++ compiler here")
    assert load_kernel() is not None
    (built,) = fresh_kernel.glob("attention_avx512bf16-*.so")
    stamp = built.stat().st_mtime_ns
    load_kernel.cache_clear()
    assert load_kernel() is not None
    assert [p.stat().st_mtime_ns for p in fresh_kernel.glob("*.so")] == [stamp]


def _attention_layer(dtype: torch.dtype) -> Attention:
    torch.manual_seed(0)
    return Attention(query_dim=128, heads=2, dim_head=64, cross_attention_dim=96).to(dtype).eval()


def test_set_attention_routes_a_layer_to_the_kernel_and_back(monkeypatch):
    _kernel_or_skip()
    monkeypatch.setattr(attention, "cpu_bf16_units", lambda: (True, False))
    layer = _attention_layer(torch.bfloat16)
    hidden = torch.randn(1, 90, 128).bfloat16()
    context = torch.randn(1, 77, 96).bfloat16()
    with torch.no_grad():
        assert set_attention([layer], "cpu", torch.bfloat16) == "avx512-bf16"
        assert type(layer.processor) is Avx512Bf16AttnProcessor
        calls = []
        op = attention.avx512_bf16_attention
        monkeypatch.setattr(attention, "avx512_bf16_attention", lambda *a: calls.append(a[0].shape) or op(*a))
        routed = layer(hidden, context)
        assert calls == [torch.Size([1, 2, 90, 64])]
        assert set_attention([layer], "cpu", torch.bfloat16, "sdpa") == "sdpa"
        assert type(layer.processor) is AttnProcessor2_0
        plain = layer(hidden, context)
    assert len(calls) == 1
    assert _errors(routed, plain)[1] < 5e-3


def test_the_processor_takes_the_keywords_of_torchs(monkeypatch, caplog):
    """diffusers passes a processor only the keywords its signature names (the VAE's ``temb``)."""
    import inspect

    assert inspect.signature(Avx512Bf16AttnProcessor.__call__) == inspect.signature(AttnProcessor2_0.__call__)
    monkeypatch.setattr(attention, "cpu_bf16_units", lambda: (True, False))
    layer = _attention_layer(torch.bfloat16)
    set_attention([layer], "cpu", torch.bfloat16)
    with caplog.at_level(logging.WARNING), torch.no_grad():
        layer(torch.randn(1, 10, 128).bfloat16(), torch.randn(1, 5, 96).bfloat16(), temb=None)
    assert "not expected" not in caplog.text


def test_float32_layers_keep_torchs_processor(monkeypatch):
    monkeypatch.setattr(attention, "cpu_bf16_units", lambda: (True, False))
    layer = _attention_layer(torch.float32)
    assert set_attention([layer, None], "cpu", torch.float32) == "sdpa"
    assert type(layer.processor) is AttnProcessor2_0


def test_pipeline_applies_the_setting_to_every_network(tiny_weights, monkeypatch):
    """``SeesrPipeline.use_attention`` (the ``attention`` setting) gives the UNet, ControlNet and VAE
    the rule's processor for their dtype, and ``sdpa`` puts torch's back."""
    from benchmarks.common import attention_processors
    from seesr.engines.seesr.pipeline import SeesrPipeline

    monkeypatch.setattr(attention, "cpu_bf16_units", lambda: (True, False))
    monkeypatch.setattr(attention, "load_kernel", lambda: print)  # built (the tiny heads never reach it)
    pipe = SeesrPipeline.from_pretrained(tiny_weights, device="cpu", torch_dtype=torch.float32)
    assert set(sum(attention_processors(pipe).values(), [])) == {"AttnProcessor2_0"}
    pipe.to("cpu", torch.bfloat16)
    assert set(sum(attention_processors(pipe).values(), [])) == {"Avx512Bf16AttnProcessor"}
    pipe.use_attention("sdpa")
    assert set(sum(attention_processors(pipe).values(), [])) == {"AttnProcessor2_0"}
    pipe.to("cpu", torch.float32)
    assert pipe.attention == "sdpa" and set(sum(attention_processors(pipe).values(), [])) == {"AttnProcessor2_0"}


def test_the_attention_setting_reaches_the_pipeline(tiny_weights, monkeypatch):
    """``attention`` (API, CLI ``--attention``, ``SEESR_ATTENTION``) is applied to the loaded pipeline."""
    from seesr.api import Upscaler
    from seesr.cli import build_parser

    upscaler = Upscaler(tiny_weights, device="cpu")
    pipe = upscaler.pipeline(upscaler.settings({"attention": "sdpa"}))
    assert pipe.attention == "sdpa"
    monkeypatch.setenv("SEESR_ATTENTION", "auto")
    assert upscaler.pipeline(upscaler.settings({})) is pipe and pipe.attention == "auto"
    assert build_parser().parse_args(["upscale", "x.png", "--attention", "sdpa"]).attention == "sdpa"
    with pytest.raises(ConfigError, match="attention"):
        upscaler.settings({"attention": "flash"})
