"""The SeeSR ControlNet: diffusers' ControlNet plus SeeSR's image cross-attention.

Same image cross-attention as :class:`~seesr.engines.seesr.models.unet.SeesrUNet2DConditionModel` (an
``image_attentions`` transformer after every text transformer of the down and mid blocks), conditioned
on the upscaled low-resolution image in [0, 1] (B, 3, 8h, 8w).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import ControlNetModel
from diffusers.models.controlnets.controlnet import ControlNetOutput

from seesr.engines.seesr.models.unet import (
    SeesrUNet2DConditionModel,
    CheckedPretrainedMixin,
    add_image_attentions,
    bind_image_tokens,
    check_use_image_cross_attention,
    init_signature,
)

__all__ = ["SeesrControlNetModel"]


class SeesrControlNetModel(CheckedPretrainedMixin, ControlNetModel):
    """diffusers' ``ControlNetModel`` with SeeSR image cross-attention in every cross-attention block.

    Config: every ``ControlNetModel`` key plus ``use_image_cross_attention`` (must be true).
    ``from_pretrained(seesr, subfolder="controlnet")`` checks keys (:mod:`seesr.weights.checkpoints`).
    """

    def __init__(self, *args: Any, use_image_cross_attention: bool = True, **kwargs: Any) -> None:
        check_use_image_cross_attention(use_image_cross_attention)
        super().__init__(*args, **kwargs)
        self.register_to_config(use_image_cross_attention=True)
        self._image_tokens = add_image_attentions([*self.down_blocks, self.mid_block])

    __init__.__signature__ = init_signature(ControlNetModel.__init__, use_image_cross_attention=True)

    def forward(  # type: ignore[override]
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        controlnet_cond: torch.Tensor,
        conditioning_scale: float = 1.0,
        image_encoder_hidden_states: torch.Tensor | None = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> ControlNetOutput | tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """diffusers' ControlNet forward with image tokens (B, N, 512, required).

        Returns the down-block residuals (a tuple) and the mid-block residual, both already multiplied
        by ``conditioning_scale``; other diffusers kwargs (``guess_mode``, ...) pass through.
        """
        with bind_image_tokens(self._image_tokens, image_encoder_hidden_states, sample.shape[0]):
            down, mid = super().forward(
                sample,
                timestep,
                encoder_hidden_states,
                controlnet_cond,
                conditioning_scale=conditioning_scale,
                return_dict=False,
                **kwargs,
            )
        if not return_dict:
            return tuple(down), mid
        return ControlNetOutput(down_block_res_samples=tuple(down), mid_block_res_sample=mid)

    @classmethod
    def from_unet(  # type: ignore[override]
        cls, unet: SeesrUNet2DConditionModel, **kwargs: Any
    ) -> SeesrControlNetModel:
        """A ControlNet shaped like ``unet``, its encoder (image attention included) copied from it.

        ``kwargs`` are diffusers' ``from_unet`` options (``conditioning_embedding_out_channels``, ...).
        """
        if not isinstance(unet, SeesrUNet2DConditionModel):
            raise TypeError(f"from_unet needs a SeesrUNet2DConditionModel, got {type(unet).__name__}")
        return super().from_unet(unet, **kwargs)
