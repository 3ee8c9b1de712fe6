"""The SeeSR UNet: the SD-2 / sd-turbo UNet plus SeeSR's image cross-attention.

SeeSR pairs every text cross-attention transformer of the down, mid and up blocks with a second
``Transformer2DModel`` (the block's ``image_attentions[i]``) that attends to the RAM image
embeddings ``image_encoder_hidden_states`` (B, N, 512). It runs right after its text transformer:
``resnet -> attentions[i] (text) -> image_attentions[i] (image)``. The image transformer has the
text transformer's settings (heads, head width, layers, norm groups, linear projection, upcast,
only-cross-attention) except for its context width, hard-coded to 512 as in the official code.

diffusers' own blocks and forward are reused unchanged: each image transformer is called by a
forward hook of its text transformer, and the model's ``forward`` binds the image tokens for the
duration of the call. The helpers here are shared with :mod:`seesr.models.controlnet`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.unets.unet_2d_blocks import (
    CrossAttnDownBlock2D,
    CrossAttnUpBlock2D,
    UNetMidBlock2DCrossAttn,
)
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from safetensors import safe_open
from torch import nn

from seesr.errors import ConfigError, WeightsError

__all__ = ["IMAGE_CROSS_ATTENTION_DIM", "SeesrUNet2DConditionModel"]

IMAGE_CROSS_ATTENTION_DIM = 512
"""Width of the image tokens (RAM ``image_proj`` output); fixed by the official blocks."""

SAFETENSORS_NAME = "diffusion_pytorch_model.safetensors"
BIN_NAME = "diffusion_pytorch_model.bin"
_IMAGE_KEY = "image_attentions"
_IMAGE_BLOCKS = (CrossAttnDownBlock2D, UNetMidBlock2DCrossAttn, CrossAttnUpBlock2D)
_MAX_LISTED = 12


# --------------------------------------------------------------------------- image attention
class _ImageTokens:
    """The image tokens of the forward call in progress, read by a model's image-attention hooks."""

    __slots__ = ("states",)

    def __init__(self) -> None:
        self.states: torch.Tensor | None = None


class _ImageAttentionHook:
    """Forward hook of a text transformer: feeds its output through the paired image transformer."""

    def __init__(self, image_attn: Transformer2DModel, tokens: _ImageTokens) -> None:
        self.image_attn = image_attn
        self.tokens = tokens

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
        if self.tokens.states is None:
            raise RuntimeError("SeeSR image attention ran without image tokens; call the model's forward")
        hidden = output[0] if isinstance(output, tuple) else output.sample
        # Official call: same cross_attention_kwargs / attention_mask as the text transformer; the
        # text tokens' encoder_attention_mask does not apply to image tokens (always None in SeeSR).
        hidden = self.image_attn(
            hidden,
            encoder_hidden_states=self.tokens.states,
            cross_attention_kwargs=kwargs.get("cross_attention_kwargs"),
            attention_mask=kwargs.get("attention_mask"),
            return_dict=False,
        )[0]
        return (hidden, *output[1:]) if isinstance(output, tuple) else Transformer2DModelOutput(sample=hidden)


def _image_transformer(text_attn: Transformer2DModel) -> Transformer2DModel:
    """A transformer with ``text_attn``'s settings but a 512-wide context (the official image attention)."""
    # Not ``from_config``: diffusers records positionally passed settings as "defaults" and drops them.
    settings = {k: v for k, v in text_attn.config.items() if not k.startswith("_")}
    return Transformer2DModel(**{**settings, "cross_attention_dim": IMAGE_CROSS_ATTENTION_DIM})


def add_image_attentions(blocks: Iterable[nn.Module]) -> _ImageTokens:
    """Give every cross-attention block an ``image_attentions`` list and hook it in after the text ones.

    Returns the token holder the hooks read; bind tokens to it with :func:`bind_image_tokens`.
    """
    tokens = _ImageTokens()
    for block in blocks:
        if not getattr(block, "has_cross_attention", False):
            continue
        if not isinstance(block, _IMAGE_BLOCKS):
            raise ConfigError(f"SeeSR image cross-attention is not defined for {type(block).__name__} blocks")
        if not all(isinstance(attn, Transformer2DModel) for attn in block.attentions):
            raise ConfigError("SeeSR image cross-attention does not support dual_cross_attention=True")
        block.image_attentions = nn.ModuleList(_image_transformer(attn) for attn in block.attentions)
        for attn, image_attn in zip(block.attentions, block.image_attentions):
            attn.register_forward_hook(_ImageAttentionHook(image_attn, tokens), with_kwargs=True)
    return tokens


@contextmanager
def bind_image_tokens(tokens: _ImageTokens, states: torch.Tensor | None, batch: int) -> Iterator[None]:
    """Check ``states`` (B, N, 512) against the batch size and expose it to the hooks for one call."""
    if states is None:
        raise ValueError("image_encoder_hidden_states is required: the RAM image embeddings, (batch, tokens, 512)")
    if states.ndim != 3 or states.shape[-1] != IMAGE_CROSS_ATTENTION_DIM or states.shape[0] != batch:
        raise ValueError(
            f"image_encoder_hidden_states must have shape ({batch}, tokens, {IMAGE_CROSS_ATTENTION_DIM}), "
            f"got {tuple(states.shape)}"
        )
    previous, tokens.states = tokens.states, states
    try:
        yield
    finally:
        tokens.states = previous


def check_use_image_cross_attention(value: bool) -> None:
    """SeeSR classes always carry image attention; a config that turns it off belongs to plain diffusers."""
    if value is not True:
        raise ConfigError(
            "use_image_cross_attention must be true for SeeSR models; load a model without image "
            "cross-attention with the plain diffusers class instead"
        )


def init_signature(parent_init: Any, **extra: Any) -> inspect.Signature:
    """``parent_init``'s signature plus keyword-only ``extra`` parameters.

    diffusers' ``ConfigMixin`` reads the constructor signature to decide which config keys a class
    takes, so a subclass ``__init__(self, *args, flag=..., **kwargs)`` exposes this instead.
    """
    sig = inspect.signature(parent_init)
    added = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in extra.items()]
    return sig.replace(parameters=[*sig.parameters.values(), *added])


# --------------------------------------------------------------------------- strict loading
def _listed(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def raise_on_key_problems(
    source: str, missing: Iterable[str], unexpected: Iterable[str], mismatched: Iterable[str], hint: str = ""
) -> None:
    """Raise :class:`WeightsError` counting and naming (up to a dozen of each) the offending keys."""
    groups = {"missing keys": list(missing), "unexpected keys": list(unexpected), "shape mismatches": list(mismatched)}
    problems = [f"{label} ({len(keys)}): {_listed(keys)}" for label, keys in groups.items() if keys]
    if problems:
        raise WeightsError(f"weights at {source} do not match the model: " + "; ".join(problems) + hint)


class StrictPretrainedMixin:
    """``from_pretrained`` that fails on missing, unexpected or mismatched keys instead of warning."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> Any:
        """diffusers' ``from_pretrained``, then :class:`WeightsError` unless every key matched exactly."""
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, output_loading_info=True, **kwargs)
        mismatched = [f"{k} (file {tuple(a)}, model {tuple(b)})" for k, a, b in info["mismatched_keys"]]
        where = Path(pretrained_model_name_or_path, kwargs.get("subfolder") or "")
        hint = ""
        if any(_IMAGE_KEY in k for k in info["missing_keys"]):
            hint = " (no SeeSR image attention weights: a plain SD UNet needs SeesrUNet2DConditionModel.from_turbo)"
        raise_on_key_problems(str(where), info["missing_keys"], info["unexpected_keys"], mismatched, hint)
        return (model, info) if want_info else model


def weights_file(folder: Path) -> Path:
    """The model file of a diffusers folder: safetensors if present, else the pickle ``.bin``."""
    for name in (SAFETENSORS_NAME, BIN_NAME):
        if (folder / name).is_file():
            return folder / name
    raise WeightsError(f"no {SAFETENSORS_NAME} or {BIN_NAME} in {folder}; check the model path")


def read_weights(path: Path, select: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a weights file (all, or those whose key contains ``select``); ``.bin`` loads weights-only."""
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys() if select is None or select in k}
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if select is None or select in k}


# --------------------------------------------------------------------------- the UNet
class SeesrUNet2DConditionModel(StrictPretrainedMixin, UNet2DConditionModel):
    """diffusers' ``UNet2DConditionModel`` with SeeSR image cross-attention in every cross-attention block.

    Config: every ``UNet2DConditionModel`` key plus ``use_image_cross_attention`` (must be true).
    Loading: ``from_pretrained(seesr, subfolder="unet")`` loads a SeeSR UNet whole; :meth:`from_turbo`
    is the official SeeSR-Turbo rule. Both are strict (:class:`~seesr.errors.WeightsError`).
    """

    def __init__(self, *args: Any, use_image_cross_attention: bool = True, **kwargs: Any) -> None:
        check_use_image_cross_attention(use_image_cross_attention)
        super().__init__(*args, **kwargs)
        self.register_to_config(use_image_cross_attention=True)
        self._image_tokens = add_image_attentions([*self.down_blocks, self.mid_block, *self.up_blocks])

    __init__.__signature__ = init_signature(UNet2DConditionModel.__init__, use_image_cross_attention=True)

    def forward(  # type: ignore[override]
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        image_encoder_hidden_states: torch.Tensor,
        down_block_additional_residuals: tuple[torch.Tensor, ...] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> UNet2DConditionOutput | tuple[torch.Tensor]:
        """diffusers' UNet forward with image tokens (B, N, 512); other diffusers kwargs pass through."""
        with bind_image_tokens(self._image_tokens, image_encoder_hidden_states, sample.shape[0]):
            return super().forward(
                sample,
                timestep,
                encoder_hidden_states,
                down_block_additional_residuals=down_block_additional_residuals,
                mid_block_additional_residual=mid_block_additional_residual,
                return_dict=return_dict,
                **kwargs,
            )

    @classmethod
    def from_turbo(
        cls,
        base_path: str | Path,
        seesr_path: str | Path,
        *,
        subfolder: str = "unet",
        torch_dtype: torch.dtype | None = None,
    ) -> SeesrUNet2DConditionModel:
        """Official SeeSR-Turbo rule: config and weights of ``base_path`` (sd-turbo), then only the
        ``image_attentions`` weights of ``seesr_path`` (which override any in the base).

        Unlike the official loader (``strict=False``), every model key must be provided exactly once
        with the right shape; otherwise :class:`~seesr.errors.WeightsError` lists the offenders.
        """
        base_dir, seesr_dir = Path(base_path, subfolder or ""), Path(seesr_path, subfolder or "")
        if not (base_dir / "config.json").is_file():
            raise WeightsError(f"no config.json in {base_dir}; expected the sd-turbo UNet folder")
        base_file, seesr_file = weights_file(base_dir), weights_file(seesr_dir)
        image_state = read_weights(seesr_file, select=_IMAGE_KEY)
        if not image_state:
            raise WeightsError(f"{seesr_file} has no '{_IMAGE_KEY}' weights; seesr_path must hold a SeeSR UNet")
        state = {**read_weights(base_file), **image_state}

        config = dict(cls.load_config(base_dir))
        config["use_image_cross_attention"] = True
        with torch.device("meta"):
            model = cls.from_config(config)
        expected = {k: v.shape for k, v in model.state_dict().items()}
        mismatched = [
            f"{k} ({seesr_file if k in image_state else base_file}: {tuple(v.shape)}, model {tuple(expected[k])})"
            for k, v in state.items()
            if k in expected and v.shape != expected[k]
        ]
        missing = expected.keys() - state.keys()
        hint = f" (weights with '{_IMAGE_KEY}' come from {seesr_file})" if any(_IMAGE_KEY in k for k in missing) else ""
        raise_on_key_problems(f"{base_file} + {seesr_file}", missing, state.keys() - expected.keys(), mismatched, hint)

        dtype = torch_dtype or torch.get_default_dtype()
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        model.load_state_dict(state, strict=True, assign=True)
        return model.eval()
