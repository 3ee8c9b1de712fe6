"""The SeeSR UNet: the SD-2 / sd-turbo UNet plus SeeSR's image cross-attention.

SeeSR pairs every text cross-attention transformer of the down, mid and up blocks with a second
``Transformer2DModel`` (the block's ``image_attentions[i]``) that attends to the RAM image
embeddings ``image_encoder_hidden_states`` (B, N, 512). It runs right after its text transformer:
``resnet -> attentions[i] (text) -> image_attentions[i] (image)``. The image transformer has the
text transformer's settings (heads, head width, layers, norm groups, linear projection, upcast,
only-cross-attention) except for its context width, hard-coded to 512 as in the official code.

diffusers' own blocks and forward are reused unchanged: each image transformer is called by a
forward hook of its text transformer, and the model's ``forward`` binds the image tokens for the
duration of the call. The helpers here are shared with :mod:`seesr.engines.seesr.models.controlnet`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
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
from torch import nn

from seesr.errors import ConfigError, WeightsError
from seesr.weights.checkpoints import check_keys, compare_shapes, load_pretrained, model_file, read_checkpoint

__all__ = ["IMAGE_CROSS_ATTENTION_DIM", "SeesrUNet2DConditionModel"]

IMAGE_CROSS_ATTENTION_DIM = 512
"""Width of the image tokens (RAM ``image_proj`` output); fixed by the official blocks."""

_IMAGE_KEY = "image_attentions"
_IMAGE_BLOCKS = (CrossAttnDownBlock2D, UNetMidBlock2DCrossAttn, CrossAttnUpBlock2D)


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


# --------------------------------------------------------------------------- checked loading
def _image_attention_hint(missing: list[str]) -> str:
    if any(_IMAGE_KEY in k for k in missing):
        return " (no SeeSR image attention weights: a plain SD UNet needs SeesrUNet2DConditionModel.from_turbo)"
    return ""


class CheckedPretrainedMixin:
    """``from_pretrained`` by :func:`seesr.weights.checkpoints.load_pretrained`: unreadable files and missing or
    mis-shaped keys are a :class:`WeightsError`, unexpected keys one warning line."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> Any:
        want_info = kwargs.pop("output_loading_info", False)
        folder = Path(pretrained_model_name_or_path, kwargs.pop("subfolder", None) or "")
        model, info = load_pretrained(
            cls, folder, f"{cls.__name__} weights", loader=super().from_pretrained, hint=_image_attention_hint,
            **kwargs,
        )
        return (model, info) if want_info else model


# --------------------------------------------------------------------------- the UNet
class SeesrUNet2DConditionModel(CheckedPretrainedMixin, UNet2DConditionModel):
    """diffusers' ``UNet2DConditionModel`` with SeeSR image cross-attention in every cross-attention block.

    Config: every ``UNet2DConditionModel`` key plus ``use_image_cross_attention`` (must be true).
    Loading: ``from_pretrained(seesr, subfolder="unet")`` loads a SeeSR UNet whole; :meth:`from_turbo`
    is the official SeeSR-Turbo rule. Both check keys (:mod:`seesr.weights.checkpoints`).
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

        Like the official loader (``strict=False``) keys the model does not use are ignored with one
        warning; unlike it, every model key must be provided with the right shape, else
        :class:`~seesr.errors.WeightsError` names the file and the keys.
        """
        seesr_file = model_file(Path(seesr_path, subfolder or ""))
        image_state = read_checkpoint(seesr_file, "SeeSR UNet weights", select=_IMAGE_KEY, dtype=torch_dtype)
        if not image_state:
            raise WeightsError(f"{seesr_file} has no '{_IMAGE_KEY}' weights; seesr_path must hold a SeeSR UNet")
        return cls._assemble(Path(base_path, subfolder or ""), (seesr_file, image_state), torch_dtype)

    @classmethod
    def from_base(
        cls, base_path: str | Path, *, subfolder: str = "unet", torch_dtype: torch.dtype | None = None
    ) -> SeesrUNet2DConditionModel:
        """The start of ``train_seesr.py`` from SD-2-base (lines 680-682): the base UNet's config
        and weights, and SeeSR's image attention at its default initialisation (the official call
        builds the UNet with ``use_image_cross_attention=True`` and loads a checkpoint without
        image attention; diffusers 0.21 keeps the constructor's weights for the missing keys when
        ``low_cpu_mem_usage=False`` and refuses them otherwise). Draws from torch's global RNG."""
        return cls._assemble(Path(base_path, subfolder or ""), None, torch_dtype)

    @classmethod
    def _assemble(
        cls, base_dir: Path, image: tuple[Path, dict[str, torch.Tensor]] | None, torch_dtype: torch.dtype | None
    ) -> SeesrUNet2DConditionModel:
        """The base UNet of ``base_dir`` plus image attention: ``image`` (its file and weights), or
        newly initialised (None). Every other model key must come from the base with its shape."""
        if not (base_dir / "config.json").is_file():
            raise WeightsError(f"no config.json in {base_dir}; expected the base model's UNet folder (diffusers layout)")
        base_file = model_file(base_dir)
        dtype = torch_dtype or torch.get_default_dtype()
        image_file, image_state = image if image is not None else (None, {})
        base_state = read_checkpoint(base_file, "base UNet weights", dtype=dtype)
        state = {**base_state, **image_state}

        config = dict(cls.load_config(base_dir))
        config["use_image_cross_attention"] = True
        with torch.device("meta") if image is not None else nullcontext():
            model = cls.from_config(config)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        parts = [(base_file, "base UNet", {k: v for k, v in base_state.items() if k not in image_state})]
        if image is not None:
            parts.append((image_file, "SeeSR image attention", image_state))
        for file, what, part in parts:
            missing, unexpected, mismatched = compare_shapes(
                {k: v for k, v in expected.items() if (_IMAGE_KEY in k) == (part is image_state)},
                {k: tuple(v.shape) for k, v in part.items()},
            )
            check_keys(f"{file} ({what})", missing, unexpected, mismatched=mismatched, path=file)
        state = {k: v for k, v in state.items() if k in expected}
        if image is not None:
            model.load_state_dict(state, strict=True, assign=True)
        else:
            model.load_state_dict(state, strict=False)
            torch.nn.Module.to(model, dtype)  # not ModelMixin.to, which warns about an empty keep-in-float32 list
        return model.eval()
