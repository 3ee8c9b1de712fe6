"""RAM image tagger (Recognize Anything, Swin-L 384) with the DAPE LoRA merged at load.

An independent reimplementation of the official SeeSR ``ram.models.ram_lora.RAMLora`` (``vit='swin_l'``,
``image_size=384``) restricted to what SeeSR uses: the image embeddings fed to the UNet's image
cross-attention (``generate_image_embeds``) and the tag prompt (``generate_tag``). The text encoder /
decoder of RAM (``tag_encoder``, ``text_decoder``) are not built; the loader ignores their weights,
except the LoRA deltas of the ``tag_encoder`` layers whose weights are tied to ``tagging_head``
(the official ``.eval()`` merge adds both modules' deltas to the shared Parameter).

State-dict keys are the official ones minus the ``lora_*`` tensors, minus ``tag_encoder.*`` /
``text_decoder.*`` and minus the deterministic buffers the official loader drops
(``relative_position_index``, ``attn_mask``; here non-persistent buffers).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seesr.errors import ConfigError, InputError, WeightsError
from seesr.weights.checkpoints import check_keys, read_checkpoint

# Widths hard-coded in the official RAMLora (ram/models/ram_lora.py): label_embed (num_class, 512),
# image_proj (vision_width -> 512), wordvec_proj (512 -> hidden) and encoder_width=512 of tagging_head.
RAM_EMBED_DIM = 512
# image_size=384 of the official ``ram(...)`` call (test_seesr_turbo.py) and configs/swin/config_swinL_384.json.
RAM_IMAGE_SIZE = 384
# 1 average-pooled token + (384 / 4 / 2**3)**2 = 12 * 12 final-stage Swin tokens (SwinTransformer.forward).
RAM_NUM_TOKENS = 145
# Lines of ram/data/ram_tag_list.txt.
RAM_NUM_CLASSES = 4585
# RAMLora(threshold=0.68); every class is then overridden by ram/data/ram_tag_list_threshold.txt.
RAM_DEFAULT_THRESHOLD = 0.68
# ImageNet statistics of test_seesr_turbo.ram_transforms / ram/transform.py (Normalize).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Checkpoint prefixes of modules we deliberately do not build (ignored on load).
IGNORED_PREFIXES = ("tag_encoder.", "text_decoder.")
# Deterministic buffers that official load_checkpoint_swinlarge deletes (substring match, as officially).
DROPPED_BUFFERS = ("relative_position_index", "attn_mask")
SWIN_QKV_ENABLE_LORA = (True, False, True)  # lora.MergedLinear(enable_lora=[True, False, True]): q and v


@dataclass(frozen=True)
class RamConfig:
    """Architecture of RAMLora; defaults = the official Swin-L 384 + q2l/med BERT configs."""

    image_size: int = RAM_IMAGE_SIZE
    patch_size: int = 4  # fixed in RAMLora.__init__
    embed_dim: int = 192
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (6, 12, 24, 48)
    window_size: int = 12
    vision_width: int = 1536
    mlp_ratio: float = 4.0  # fixed in RAMLora.__init__
    # q2l_config.json: the tagging head (tagging_head), cross-attention-only BERT layers
    hidden_size: int = 768
    num_attention_heads: int = 4
    num_hidden_layers: int = 2
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    # med_config.json: tag_encoder (not built; its first num_hidden_layers layers are tied to tagging_head)
    tag_encoder_hidden_size: int = 768
    tag_encoder_num_layers: int = 12
    num_classes: int = RAM_NUM_CLASSES
    threshold: float = RAM_DEFAULT_THRESHOLD
    delete_tag_index: tuple[int, ...] = ()  # RAMLora(delete_tag_index=[]) default; ram(...) passes none
    lora_rank: int = 8  # lora.Linear / lora.MergedLinear(r=8)
    lora_alpha: float = 1.0  # loralib default -> merge scale 1/8

    def __post_init__(self) -> None:
        for name in ("depths", "num_heads", "delete_tag_index"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        n = len(self.depths)
        if n < 1 or len(self.num_heads) != n:
            raise ConfigError(f"depths {self.depths} and num_heads {self.num_heads} must have the same length >= 1")
        if self.image_size % (self.patch_size * 2 ** (n - 1)):
            raise ConfigError(f"image_size {self.image_size} must be divisible by {self.patch_size * 2 ** (n - 1)}")
        if self.vision_width != self.embed_dim * 2 ** (n - 1):
            raise ConfigError(f"vision_width {self.vision_width} != embed_dim * 2**{n - 1}")
        if any(self.embed_dim * 2**i % h for i, h in enumerate(self.num_heads)):
            raise ConfigError(f"num_heads {self.num_heads} must divide the stage widths")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError("hidden_size must be divisible by num_attention_heads")
        if self.hidden_act != "gelu":
            raise ConfigError(f"hidden_act {self.hidden_act!r} unsupported (the official RAM uses 'gelu')")
        if self.tag_encoder_num_layers < self.num_hidden_layers or self.tag_encoder_hidden_size != self.hidden_size:
            raise ConfigError("med config (tag_encoder) must be at least as deep and as wide as the q2l config, "
                              "its lowest layers are tied to tagging_head")
        if self.lora_rank <= 0 or self.num_classes <= 0:
            raise ConfigError("lora_rank and num_classes must be positive")

    @property
    def lora_scale(self) -> float:
        return self.lora_alpha / self.lora_rank

    @classmethod
    def from_official_configs(cls, config_dir: str | Path, image_size: int = RAM_IMAGE_SIZE,
                              **overrides) -> "RamConfig":
        """Read the official ``ram/configs`` layout: ``swin/config_swinL_<size>.json``, ``q2l_config.json``,
        ``med_config.json``. ``encoder_width`` in the BERT files is ignored (RAMLora forces 512)."""
        root = Path(config_dir)

        def read(rel: str) -> dict:
            try:
                return json.loads((root / rel).read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise ConfigError(f"cannot read RAM config {root / rel}: {e}") from e

        swin, q2l, med = read(f"swin/config_swinL_{image_size}.json"), read("q2l_config.json"), read("med_config.json")
        try:
            if swin["image_res"] != image_size:
                raise ConfigError(f"swin config image_res {swin['image_res']} != image_size {image_size}")
            values = dict(
                image_size=image_size, embed_dim=swin["embed_dim"], depths=swin["depths"], num_heads=swin["num_heads"],
                window_size=swin["window_size"], vision_width=swin["vision_width"],
                hidden_size=q2l["hidden_size"], num_attention_heads=q2l["num_attention_heads"],
                num_hidden_layers=q2l["num_hidden_layers"], intermediate_size=q2l["intermediate_size"],
                layer_norm_eps=q2l["layer_norm_eps"], hidden_act=q2l["hidden_act"],
                tag_encoder_hidden_size=med["hidden_size"], tag_encoder_num_layers=med["num_hidden_layers"],
            )
        except KeyError as e:
            raise ConfigError(f"RAM config in {root} lacks the field {e}") from e
        return cls(**{**values, **overrides})


@dataclass
class TaggerOutput:
    """``tags`` / ``tags_chinese``: per image, selected tags in tag-list order joined by ``", "``
    (empty strings when no Chinese list was given); ``image_embeds`` (B, 145, 512); ``logits`` (B, num_classes)
    = output of ``fc`` before the sigmoid."""

    tags: list[str]
    tags_chinese: list[str]
    image_embeds: Tensor
    logits: Tensor


# ----------------------------------------------------------------------------------------------- Swin


def _window_partition(x: Tensor, ws: int) -> Tensor:
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, c)


def _window_reverse(windows: Tensor, ws: int, h: int, w: int) -> Tensor:
    b = windows.shape[0] // ((h // ws) * (w // ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


def _relative_position_index(ws: int, device: torch.device) -> Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(ws, device=device), torch.arange(ws, device=device),
                                        indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


def _shift_mask(h: int, w: int, ws: int, shift: int, device: torch.device) -> Tensor:
    """(nW, ws*ws, ws*ws) additive mask of shifted windows: -100 across regions, 0 within."""
    img = torch.zeros((1, h, w, 1), device=device)
    cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    for i, (hs, wsl) in enumerate((a, b) for a in cuts for b in cuts):
        img[:, hs, wsl, :] = i
    win = _window_partition(img, ws).view(-1, ws * ws)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class _WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.window, self.heads, self.scale = window, heads, (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", None, persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)  # official lora.MergedLinear; LoRA merged at load
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _SwinBlock(nn.Module):
    def __init__(self, dim: int, res: tuple[int, int], heads: int, window: int, shift: int, mlp_ratio: float) -> None:
        super().__init__()
        if min(res) <= window:  # official: no partition / no shift when the window covers the map
            window, shift = min(res), 0
        self.res, self.window, self.shift = res, window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))
        self.register_buffer("attn_mask", None, persistent=False)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        """(Re)compute the deterministic buffers (after ``to_empty``)."""
        dev = self.norm1.weight.device
        self.attn.relative_position_index = _relative_position_index(self.window, dev)
        self.attn_mask = _shift_mask(*self.res, self.window, self.shift, dev) if self.shift else None

    def forward(self, x: Tensor) -> Tensor:
        (h, w), (b, _, c), ws, s = self.res, x.shape, self.window, self.shift
        y = self.norm1(x).view(b, h, w, c)
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        y = self.attn(_window_partition(y, ws).view(-1, ws * ws, c), self.attn_mask)
        y = _window_reverse(y.view(-1, ws, ws, c), ws, h, w)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class _PatchMerging(nn.Module):
    def __init__(self, res: tuple[int, int], dim: int) -> None:
        super().__init__()
        self.res = res
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        (h, w), (b, _, c) = self.res, x.shape
        x = x.view(b, h, w, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class _SwinStage(nn.Module):
    def __init__(self, cfg: RamConfig, i: int, res: tuple[int, int]) -> None:
        super().__init__()
        dim = cfg.embed_dim * 2**i
        self.blocks = nn.ModuleList(
            _SwinBlock(dim, res, cfg.num_heads[i], cfg.window_size, 0 if j % 2 == 0 else cfg.window_size // 2,
                       cfg.mlp_ratio) for j in range(cfg.depths[i]))
        self.downsample = _PatchMerging(res, dim) if i < len(cfg.depths) - 1 else None

    def forward(self, x: Tensor) -> Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class _PatchEmbed(nn.Module):
    def __init__(self, cfg: RamConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.norm = nn.LayerNorm(cfg.embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class SwinEncoder(nn.Module):
    """Official ``SwinTransformer`` (no APE, patch norm): returns (B, 1 + L, C), the mean token first."""

    def __init__(self, cfg: RamConfig) -> None:
        super().__init__()
        self.patch_embed = _PatchEmbed(cfg)
        r = cfg.image_size // cfg.patch_size
        self.layers = nn.ModuleList(_SwinStage(cfg, i, (r >> i, r >> i)) for i in range(len(cfg.depths)))
        self.norm = nn.LayerNorm(cfg.vision_width)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        pooled = F.adaptive_avg_pool1d(x.transpose(1, 2), 1).transpose(1, 2)
        return torch.cat([pooled, x], dim=1)


# ------------------------------------------------------------------------------- BERT tagging head


class _CrossSelfAttention(nn.Module):
    def __init__(self, cfg: RamConfig) -> None:
        super().__init__()
        self.heads, self.head_dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)  # official lora.Linear; merged at load
        self.key = nn.Linear(RAM_EMBED_DIM, cfg.hidden_size)  # official lora.Linear; merged at load
        self.value = nn.Linear(RAM_EMBED_DIM, cfg.hidden_size)

    def _split(self, t: Tensor) -> Tensor:
        return t.view(*t.shape[:2], self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, hidden: Tensor, context: Tensor) -> Tensor:
        q, k, v = self._split(self.query(hidden)), self._split(self.key(context)), self._split(self.value(context))
        # the official all-ones encoder mask adds exactly -0.0 to the scores: omitted
        probs = (q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)).softmax(-1)
        out = (probs @ v).permute(0, 2, 1, 3).contiguous()
        return out.view(*out.shape[:2], -1)


class _DenseAddNorm(nn.Module):
    """BertSelfOutput / BertOutput: LayerNorm(dense(x) + residual)."""

    def __init__(self, d_in: int, d_out: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _CrossAttention(nn.Module):
    def __init__(self, cfg: RamConfig) -> None:
        super().__init__()
        self.self = _CrossSelfAttention(cfg)
        self.output = _DenseAddNorm(cfg.hidden_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, hidden: Tensor, context: Tensor) -> Tensor:
        return self.output(self.self(hidden, context), hidden)


class _TaggingLayer(nn.Module):
    """BertLayer in ``mode='tagging'``: cross-attention then FFN (self-attention deleted officially)."""

    def __init__(self, cfg: RamConfig) -> None:
        super().__init__()
        self.crossattention = _CrossAttention(cfg)
        self.intermediate = nn.ModuleDict({"dense": nn.Linear(cfg.hidden_size, cfg.intermediate_size)})
        self.output = _DenseAddNorm(cfg.intermediate_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, hidden: Tensor, context: Tensor) -> Tensor:
        h = self.crossattention(hidden, context)
        return self.output(F.gelu(self.intermediate["dense"](h)), h)


class TaggingHead(nn.Module):
    """``tagging_head``: BertModel with embeddings and self-attention removed (Query2Label style)."""

    def __init__(self, cfg: RamConfig) -> None:
        super().__init__()
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(_TaggingLayer(cfg) for _ in range(cfg.num_hidden_layers))})

    def forward(self, queries: Tensor, context: Tensor) -> Tensor:
        for layer in self.encoder["layer"]:
            queries = layer(queries, context)
        return queries


# ------------------------------------------------------------------------------------------ tagger


class RamTagger(nn.Module):
    """RAM + DAPE: image embeddings for SeeSR's image cross-attention and the tag prompt."""

    def __init__(self, config: RamConfig | None = None, tag_list: Sequence[str] = (),
                 tag_list_chinese: Sequence[str] | None = None, thresholds: Sequence[float] | None = None) -> None:
        super().__init__()
        cfg = self.config = config or RamConfig()
        self.visual_encoder = SwinEncoder(cfg)
        self.image_proj = nn.Linear(cfg.vision_width, RAM_EMBED_DIM)
        self.label_embed = nn.Parameter(torch.zeros(cfg.num_classes, RAM_EMBED_DIM))
        self.wordvec_proj = (nn.Linear(RAM_EMBED_DIM, cfg.hidden_size) if cfg.hidden_size != RAM_EMBED_DIM
                             else nn.Identity())
        self.tagging_head = TaggingHead(cfg)
        self.fc = nn.Linear(cfg.hidden_size, 1)
        for name, names in (("tag_list", tag_list), ("tag_list_chinese", tag_list_chinese or ())):
            if names and len(names) != cfg.num_classes:
                raise ConfigError(f"{name} has {len(names)} entries, the model has {cfg.num_classes} classes")
        self.tag_list, self.tag_list_chinese = list(tag_list), list(tag_list_chinese or ())
        thr = list(thresholds or ())
        if len(thr) > cfg.num_classes:
            raise ConfigError(f"{len(thr)} thresholds for {cfg.num_classes} classes")
        # plain attribute (not a buffer): stays float32 whatever dtype the module is cast to
        self.class_threshold = torch.full((cfg.num_classes,), cfg.threshold, dtype=torch.float32, device="cpu")
        self.class_threshold[: len(thr)] = torch.tensor(thr, dtype=torch.float32, device="cpu")

    def reset_buffers(self) -> None:
        """Recompute the non-persistent Swin buffers (needed after ``to_empty``)."""
        for m in self.modules():
            if isinstance(m, _SwinBlock):
                m.reset_buffers()

    @property
    def dtype(self) -> torch.dtype:
        return self.fc.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.fc.weight.device

    # ---- inference

    def preprocess(self, image: Tensor) -> Tensor:
        """(B,3,H,W) float in [0,1] -> bilinear antialiased resize to 384 (identity at 384) -> ImageNet norm."""
        if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] != 3 or not image.is_floating_point():
            raise InputError("RAM expects a float tensor of shape (B, 3, H, W) with values in [0, 1], got "
                             f"{getattr(image, 'dtype', type(image))} {tuple(getattr(image, 'shape', ()))}")
        if min(image.shape[-2:]) < 1 or image.shape[0] < 1:
            raise InputError(f"empty image batch {tuple(image.shape)}")
        x, s = image.float(), self.config.image_size
        if tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def encode_image(self, pixel_values: Tensor) -> Tensor:
        """``generate_image_embeds``: image_proj(visual_encoder(x)), (B, 145, 512)."""
        s = self.config.image_size
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (3, s, s):
            raise InputError(f"pixel_values must be (B, 3, {s}, {s}) (use preprocess()), "
                             f"got {tuple(pixel_values.shape)}")
        return self.image_proj(self.visual_encoder(pixel_values.to(self.device, self.dtype)))

    @torch.no_grad()
    def tag_logits(self, image_embeds: Tensor) -> Tensor:
        """Tagging head on the image embeddings: logits (B, num_classes) before the sigmoid."""
        queries = F.relu(self.wordvec_proj(self.label_embed))
        queries = queries.unsqueeze(0).expand(image_embeds.shape[0], -1, -1)
        return self.fc(self.tagging_head(queries, image_embeds)).squeeze(-1)

    def decode_tags(self, logits: Tensor) -> tuple[list[str], list[str]]:
        """Official ``generate_tag`` decision and string format (sigmoid > per-class threshold)."""
        if not self.tag_list:
            raise ConfigError("this RamTagger has no tag list; build it with from_pretrained(..., tag_list=...)")
        chosen = torch.sigmoid(logits.float()) > self.class_threshold.to(logits.device)
        chosen[:, list(self.config.delete_tag_index)] = False
        tags, tags_zh = [], []
        for row in chosen.cpu():
            idx = row.nonzero().flatten().tolist()
            tags.append(", ".join(self.tag_list[i] for i in idx))
            tags_zh.append(", ".join(self.tag_list_chinese[i] for i in idx) if self.tag_list_chinese else "")
        return tags, tags_zh

    @torch.no_grad()
    def forward(self, pixel_values: Tensor) -> TaggerOutput:
        """Tags, Chinese tags, image embeddings and logits of already preprocessed images."""
        embeds = self.encode_image(pixel_values)
        logits = self.tag_logits(embeds)
        tags, tags_zh = self.decode_tags(logits)
        return TaggerOutput(tags=tags, tags_chinese=tags_zh, image_embeds=embeds, logits=logits)

    def tag(self, image: Tensor) -> TaggerOutput:
        """``preprocess`` + ``forward``."""
        return self(self.preprocess(image).to(self.device))

    # ---- loading

    @classmethod
    def from_pretrained(cls, checkpoint: str | Path, dape: str | Path | None = None, *, tag_list: str | Path,
                        tag_list_chinese: str | Path | None = None, thresholds: str | Path,
                        config: RamConfig | None = None, torch_dtype: torch.dtype = torch.float32) -> "RamTagger":
        """Load ``ram_swin_large_14m.pth`` (``{'model': state_dict}``) and merge the DAPE LoRA (``DAPE.pth``).

        Follows ``load_checkpoint_swinlarge`` + ``load_state_dict(DAPE, strict=False)`` + ``.eval()``: drops
        ``relative_position_index``/``attn_mask``, renames ``vision_multi`` -> ``tagging_head``, lets DAPE
        entries override, ignores ``tag_encoder.*``/``text_decoder.*``, and merges ``W += (B @ A) * alpha/r``
        in float32 before casting to ``torch_dtype``. Missing or mis-shaped keys raise ``WeightsError``; keys
        the model does not use are one warning line (the official loaders read with ``strict=False``).
        """
        if not (isinstance(torch_dtype, torch.dtype) and torch_dtype.is_floating_point):
            raise ConfigError(f"torch_dtype must be a floating dtype, got {torch_dtype!r}")
        cfg = config or RamConfig()
        tags = _read_lines(tag_list)
        tags_zh = _read_lines(tag_list_chinese) if tag_list_chinese is not None else None
        thr = _read_thresholds(thresholds)
        ckpt = read_checkpoint(checkpoint, "RAM checkpoint")
        state = ckpt["model"] if isinstance(ckpt.get("model"), Mapping) else ckpt
        merged_in: dict[str, Tensor] = {}
        for k, v in state.items():
            if any(b in k for b in DROPPED_BUFFERS):
                continue
            merged_in[k.replace("vision_multi", "tagging_head")] = v
        if dape is not None:
            merged_in.update(read_checkpoint(dape, "DAPE LoRA"))
        with torch.device("meta"):
            model = cls(cfg, tags, tags_zh, thr)
        weights = _merge_lora(merged_in, model, require_lora=dape is not None, source=f"{checkpoint} + {dape}" if dape is not None else str(checkpoint))
        model.to_empty(device="cpu")
        model.reset_buffers()
        model.load_state_dict(weights, strict=True)
        return model.to(torch_dtype).eval().requires_grad_(False)


# ------------------------------------------------------------------------------------- load helpers


def _read_lines(path: str | Path) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()  # official: f.read().splitlines()
    except OSError as e:
        raise WeightsError(f"cannot read RAM tag list {path}: {e}") from e


def _read_thresholds(path: str | Path) -> list[float]:
    try:
        return [float(s) for s in _read_lines(path)]
    except ValueError as e:
        raise ConfigError(f"RAM threshold file {path} must hold one number per line: {e}") from e


def _lora_sites(model: RamTagger) -> dict[str, tuple[str, tuple[bool, ...]]]:
    """LoRA module name -> (weight key it merges into, enable_lora groups)."""
    sites: dict[str, tuple[str, tuple[bool, ...]]] = {}
    for i, stage in enumerate(model.visual_encoder.layers):
        for j in range(len(stage.blocks)):
            name = f"visual_encoder.layers.{i}.blocks.{j}.attn.qkv"
            sites[name] = (f"{name}.weight", SWIN_QKV_ENABLE_LORA)
    for layer in range(model.config.num_hidden_layers):
        for proj in ("query", "key"):
            head = f"tagging_head.encoder.layer.{layer}.crossattention.self.{proj}"
            # tie_encoder_decoder_weights: tag_encoder layer l shares this Parameter; its delta is merged first
            sites[f"tag_encoder.encoder.layer.{layer}.crossattention.self.{proj}"] = (f"{head}.weight", (True,))
            sites[head] = (f"{head}.weight", (True,))
    return sites


def _lora_delta(a: Tensor, b: Tensor, enable: tuple[bool, ...], out_features: int, scale: float) -> Tensor:
    """loralib merge: (B @ A) * scale; MergedLinear = one B_g @ A_g per enabled group, zero rows elsewhere."""
    a, b = a.float(), b.float()
    n = sum(enable)
    parts = [bg @ ag for bg, ag in zip(b.chunk(n, 0), a.chunk(n, 0))]
    rows, it = out_features // len(enable), iter(parts)
    full = [next(it) if on else a.new_zeros(rows, a.shape[1]) for on in enable]
    return torch.cat(full, 0) * scale


def _merge_lora(entries: Mapping[str, Tensor], model: RamTagger, require_lora: bool, source: str) -> dict[str, Tensor]:
    """Validate ``entries`` against ``model`` and return float32 weights with every LoRA merged in."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    sites = _lora_sites(model)
    cfg, r = model.config, model.config.lora_rank
    weights, lora, unexpected, bad_shape = {}, {}, [], []
    for k, v in entries.items():
        base, _, leaf = k.rpartition(".")
        if leaf in ("lora_A", "lora_B") and base in sites:
            lora[k] = v
        elif k.startswith(IGNORED_PREFIXES):
            continue  # modules not built (tag_encoder / text_decoder); tied values = tagging_head's
        elif k not in expected:
            unexpected.append(k)
        elif tuple(v.shape) != expected[k]:
            bad_shape.append(f"{k} {tuple(v.shape)} != {expected[k]}")
        else:
            weights[k] = v.float() if v.is_floating_point() else v
    missing = sorted(set(expected) - set(weights))
    # LoRA pairs: both halves or neither (official: a missing B keeps its zero init, a lone B is garbage)
    for name, (target, enable) in sites.items():
        a, b = lora.get(f"{name}.lora_A"), lora.get(f"{name}.lora_B")
        if a is None and b is None:
            if require_lora and not name.startswith(IGNORED_PREFIXES):
                missing += [f"{name}.lora_A", f"{name}.lora_B"]
            continue
        if a is None or b is None:
            missing.append(f"{name}.lora_{'A' if a is None else 'B'}")
            continue
        out_f, in_f = expected[target]
        n = sum(enable)
        want_a, want_b = (r * n, in_f), (out_f // len(enable) * n, r)
        if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
            bad_shape.append(f"{name}.lora_A/B {tuple(a.shape)}/{tuple(b.shape)} != {want_a}/{want_b}")
            continue
        if target in weights:  # sites are ordered so the tag_encoder delta lands before tagging_head's
            weights[target] = weights[target] + _lora_delta(a, b, enable, out_f, cfg.lora_scale)
    check_keys(f"RAM weights ({source})", missing, unexpected, mismatched=bad_shape,
               hint=" (use the official ram_swin_large_14m.pth + DAPE.pth and a RamConfig matching them)")
    return weights
