"""DINOv3 ViT (patch 16, CLS + 4 register tokens, axial RoPE, LayerScale) for inference at a fixed input size.

Module and buffer names mirror the official checkpoint (facebookresearch/dinov3), so the official `.pth`
loads with a strict key check and nothing else. Differences from the training code, all output-preserving:
- eval only: no train-time RoPE coordinate shift/jitter/rescale;
- the RoPE sin/cos tables for the configured input size are precomputed buffers (rebuilt whenever `periods`
  is loaded), with identity rows for CLS/registers, so `forward` holds no arange/meshgrid/split;
- the official `qkv.bias * qkv.bias_mask` is folded into a plain bias when the checkpoint is read.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError, check_sha256, check_state_dict, config_from_metadata, read_weights
from .layers import LayerScale, merge_heads, multi_head_attention, split_heads

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DinoV3Config:
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    ffn_ratio: float = 4.0
    ffn_layer: str = "mlp"  # "mlp" (fc1/fc2, exact GELU) or "swiglu" (w1/w2/w3)
    patch_size: int = 16
    n_storage_tokens: int = 4
    img_size: int = 224  # the fixed input size the RoPE tables are built for
    rope_base: float = 100.0
    layerscale_init: float = 1e-5
    norm_eps: float = 1e-5  # upstream "layernormbf16"; the class default 1e-6 would be wrong
    mean: tuple[float, float, float] = IMAGENET_MEAN  # LVD-1689M weights
    std: tuple[float, float, float] = IMAGENET_STD
    out_dim: int | None = None  # a student's adapter: a linear map of its normed tokens to its teacher's width
    sha256: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.embed_dim % (4 * self.num_heads):
            raise ValueError(f"embed_dim {self.embed_dim} must be divisible by 4 * num_heads ({self.num_heads})")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of the patch size {self.patch_size}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def width(self) -> int:
        """The width of the tokens it gives: the teacher's for a student (out_dim), else its own."""
        return self.out_dim or self.embed_dim

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.n_storage_tokens

    @property
    def ffn_hidden(self) -> int:
        hidden = int(self.embed_dim * self.ffn_ratio)
        if self.ffn_layer == "swiglu":
            d = int(hidden * 2 / 3)
            return d + (-d % 8)
        return hidden


PRESETS: dict[str, DinoV3Config] = {
    "vits16": DinoV3Config(embed_dim=384, depth=12, num_heads=6),
    "vitb16": DinoV3Config(embed_dim=768, depth=12, num_heads=12),
    "vitl16": DinoV3Config(
        embed_dim=1024, depth=24, num_heads=16,
        sha256="8aa4cbddda325040fc78db2c272754af6ebe8ff2c55f6ec4f1964d8890f66035",
    ),
    "vith16plus": DinoV3Config(embed_dim=1280, depth=32, num_heads=20, ffn_ratio=6.0, ffn_layer="swiglu"),
    # Same architecture at test size; LayerScale 0.1 so the blocks do something with random weights.
    "tiny": DinoV3Config(embed_dim=64, depth=2, num_heads=2, layerscale_init=0.1),
    # The toy world's backbone (shipped weights in dfedge/weights, made by `python -m dfedge.train.toy`).
    "toy": DinoV3Config(embed_dim=96, depth=3, num_heads=3, layerscale_init=0.1),
    # Students (distill-backbone) of the toy and tiny backbones: half the width, fewer blocks.
    "toy-student": DinoV3Config(embed_dim=48, depth=2, num_heads=3, ffn_ratio=2.0, layerscale_init=0.1),
    "tiny-student": DinoV3Config(embed_dim=32, depth=1, num_heads=2, layerscale_init=0.1),
}


def default_periods(cfg: DinoV3Config) -> torch.Tensor:
    """RoPE periods base**(2j / (head_dim/2)), rounded through bf16 as the official checkpoints store them."""
    j = torch.arange(cfg.head_dim // 4, dtype=torch.float32)
    periods = cfg.rope_base ** (2 * j / (cfg.head_dim // 2))
    return periods.to(torch.bfloat16).to(torch.float32)


def rope_tables(periods: torch.Tensor, grid: int, num_prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    """sin, cos of shape [num_prefix + grid*grid, head_dim] for a square token grid.

    Patch centres (i + 0.5)/grid map to [-1, 1] per axis; angles 2*pi*coord/period give [HW, 2, D/4] ->
    [HW, D/2] (all y-angles, then all x-angles) -> tiled twice. Prefix rows are sin=0, cos=1: CLS and register
    tokens pass through unrotated, without a split in the graph.
    """
    periods = periods.detach().to(torch.float64)
    c = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid * 2.0 - 1.0
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    coords = torch.stack([yy.flatten(), xx.flatten()], dim=-1)  # [HW, 2] as (y, x)
    angles = 2 * math.pi * coords[:, :, None] / periods[None, None, :]  # [HW, 2, D/4]
    angles = angles.flatten(1, 2).tile(2)  # [HW, D]
    sin = torch.cat([torch.zeros(num_prefix, angles.shape[1], dtype=torch.float64), angles.sin()])
    cos = torch.cat([torch.ones(num_prefix, angles.shape[1], dtype=torch.float64), angles.cos()])
    return sin.float(), cos.float()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin on [B, heads, N, d]; prefix rows of the tables are the identity."""
    return x * cos + rotate_half(x) * sin


class RopeEmbedding(nn.Module):
    """Holds the checkpoint's `periods` and the sin/cos tables derived from them for one input size."""

    def __init__(self, cfg: DinoV3Config) -> None:
        super().__init__()
        self.grid = cfg.grid
        self.num_prefix = cfg.num_prefix_tokens
        self.register_buffer("periods", default_periods(cfg), persistent=True)
        sin, cos = rope_tables(self.periods, self.grid, self.num_prefix)
        self.register_buffer("sin", sin, persistent=False)
        self.register_buffer("cos", cos, persistent=False)

    def refresh(self) -> None:
        if self.periods.device.type == "meta":
            return
        sin, cos = rope_tables(self.periods, self.grid, self.num_prefix)
        self.sin.copy_(sin)
        self.cos.copy_(cos)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        with torch.no_grad():
            self.refresh()


class PatchEmbed(nn.Module):
    def __init__(self, cfg: DinoV3Config) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> [B, (S/16)^2, D], row-major."""
        return self.proj(x).flatten(2).transpose(1, 2)


class SelfAttention(nn.Module):
    def __init__(self, cfg: DinoV3Config) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim, bias=True)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim, bias=True)

    def forward(self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        qkv = self.qkv(x)
        q = split_heads(qkv[..., :d], self.num_heads)
        k = split_heads(qkv[..., d : 2 * d], self.num_heads)
        v = split_heads(qkv[..., 2 * d :], self.num_heads)
        q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
        return self.proj(merge_heads(multi_head_attention(q, k, v)))


class Mlp(nn.Module):
    def __init__(self, cfg: DinoV3Config) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.ffn_hidden)
        self.fc2 = nn.Linear(cfg.ffn_hidden, cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    def __init__(self, cfg: DinoV3Config) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.embed_dim, cfg.ffn_hidden)
        self.w2 = nn.Linear(cfg.embed_dim, cfg.ffn_hidden)
        self.w3 = nn.Linear(cfg.ffn_hidden, cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class Block(nn.Module):
    def __init__(self, cfg: DinoV3Config) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.attn = SelfAttention(cfg)
        self.ls1 = LayerScale(cfg.embed_dim, cfg.layerscale_init)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.mlp = SwiGLUFFN(cfg) if cfg.ffn_layer == "swiglu" else Mlp(cfg)
        self.ls2 = LayerScale(cfg.embed_dim, cfg.layerscale_init)

    def forward(self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), sin, cos))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV3(nn.Module):
    """forward(x [B, 3, S, S], normalised) -> (patch_tokens [B, g*g, D], cls [B, D], registers [B, 4, D]), all
    after the final norm, as `x_norm_patchtokens`, `x_norm_clstoken`, `x_storage_tokens` upstream. A student
    (cfg.out_dim) maps them through its `adapter` to its teacher's width, so the teacher's heads read them."""

    def __init__(self, cfg: DinoV3Config) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.storage_tokens = nn.Parameter(torch.randn(1, cfg.n_storage_tokens, d) * 0.02)
        self.mask_token = nn.Parameter(torch.zeros(1, d))  # training only; kept so checkpoints load strictly
        self.patch_embed = PatchEmbed(cfg)
        self.rope_embed = RopeEmbedding(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.adapter = nn.Linear(d, cfg.out_dim) if cfg.out_dim else None
        self._init_weights()
        self.eval()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        for blk in self.blocks:  # the key bias is masked to zero upstream; keep it zero here too
            nn.init.zeros_(blk.attn.qkv.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.cfg.img_size
        if x.shape[-2:] != (s, s):
            raise ValueError(f"DINOv3 was built for {s}x{s} inputs, got {tuple(x.shape[-2:])}")
        b = x.shape[0]
        tokens = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(b, -1, -1), self.storage_tokens.expand(b, -1, -1), tokens], dim=1)
        sin, cos = self.rope_embed.sin, self.rope_embed.cos
        for blk in self.blocks:
            x = blk(x, sin, cos)
        x = self.norm(x)
        if self.adapter is not None:
            x = self.adapter(x)
        n = self.cfg.num_prefix_tokens
        return x[:, n:], x[:, 0], x[:, 1:n]


# --- checkpoints -------------------------------------------------------------------------------------------


def official_shapes(cfg: DinoV3Config) -> dict[str, tuple[int, ...]]:
    """The official state_dict layout: the kit's own keys plus each block's `attn.qkv.bias_mask`."""
    with torch.device("meta"):
        model = DinoV3(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for i in range(cfg.depth):
        shapes[f"blocks.{i}.attn.qkv.bias_mask"] = (3 * cfg.embed_dim,)
    return shapes


def from_official(state_dict: dict[str, torch.Tensor], cfg: DinoV3Config, source: str) -> dict[str, torch.Tensor]:
    """Check an official-layout state_dict strictly and fold `bias * bias_mask` into the qkv bias."""
    check_state_dict(state_dict, official_shapes(cfg), source)
    out = {}
    for key, value in state_dict.items():
        if key.endswith(".attn.qkv.bias_mask"):
            continue
        if key.endswith(".attn.qkv.bias"):
            value = value * state_dict[key + "_mask"].to(value.dtype)
        out[key] = value.to(torch.float32)
    return out


def to_official(model: DinoV3) -> dict[str, torch.Tensor]:
    """The official layout of a kit model: bias_mask [1]*D + [0]*D + [1]*D, periods in bf16."""
    d = model.cfg.embed_dim
    out = {k: v.detach().clone() for k, v in model.state_dict().items()}
    mask = torch.cat([torch.ones(d), torch.zeros(d), torch.ones(d)])
    for i in range(model.cfg.depth):
        out[f"blocks.{i}.attn.qkv.bias_mask"] = mask.clone()
    out["rope_embed.periods"] = out["rope_embed.periods"].to(torch.bfloat16)
    return out


def _hf_renames(cfg: DinoV3Config) -> list[tuple[str, str]]:
    """(official key, HF key) for every tensor that only changes its name (not qkv, mask_token, periods)."""
    pairs = [
        ("cls_token", "embeddings.cls_token"),
        ("storage_tokens", "embeddings.register_tokens"),
        ("patch_embed.proj.weight", "embeddings.patch_embeddings.weight"),
        ("patch_embed.proj.bias", "embeddings.patch_embeddings.bias"),
        ("norm.weight", "norm.weight"),
        ("norm.bias", "norm.bias"),
    ]
    mlp = (("w1", "gate_proj"), ("w2", "up_proj"), ("w3", "down_proj")) if cfg.ffn_layer == "swiglu" else (
        ("fc1", "up_proj"), ("fc2", "down_proj"))
    per_block = [("attn.proj", "attention.o_proj"), ("norm1", "norm1"), ("norm2", "norm2")] + [
        (f"mlp.{ours}", f"mlp.{theirs}") for ours, theirs in mlp]
    for i in range(cfg.depth):
        o, h = f"blocks.{i}.", f"layer.{i}."
        pairs += [(o + a + p, h + b + p) for a, b in per_block for p in (".weight", ".bias")]
        pairs += [(o + "ls1.gamma", h + "layer_scale1.lambda1"), (o + "ls2.gamma", h + "layer_scale2.lambda1")]
    return pairs


def hf_shapes(cfg: DinoV3Config) -> dict[str, tuple[int, ...]]:
    official = official_shapes(cfg)
    d = cfg.embed_dim
    shapes = {hf: official[ours] for ours, hf in _hf_renames(cfg)}
    shapes["embeddings.mask_token"] = (1, 1, d)
    for i in range(cfg.depth):
        for p in "qkv":
            shapes[f"layer.{i}.attention.{p}_proj.weight"] = (d, d)
        shapes[f"layer.{i}.attention.q_proj.bias"] = shapes[f"layer.{i}.attention.v_proj.bias"] = (d,)
    return shapes


def hf_to_official(hf: dict[str, torch.Tensor], cfg: DinoV3Config, source: str = "HF state_dict") -> dict[str, torch.Tensor]:
    """Map Hugging Face `DINOv3ViTModel` keys to the official layout.

    HF drops `periods` and `bias_mask` (its inv_freq is exact fp32): periods are regenerated from the formula
    and rounded through bf16 as the official checkpoints hold them; the mask is q=1, k=0, v=1 and the key bias
    is zero (HF has none).
    """
    # transformers >= 5 nests the blocks under "model."; older releases do not.
    hf = {k.removeprefix("model.") if k.startswith("model.layer.") else k: v for k, v in hf.items()}
    check_state_dict(hf, hf_shapes(cfg), source)
    d = cfg.embed_dim
    out = {ours: hf[theirs] for ours, theirs in _hf_renames(cfg)}
    out["mask_token"] = hf["embeddings.mask_token"].reshape(1, d)
    out["rope_embed.periods"] = default_periods(cfg).to(torch.bfloat16)
    for i in range(cfg.depth):
        att = f"layer.{i}.attention."
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([hf[att + f"{p}_proj.weight"] for p in "qkv"])
        out[f"blocks.{i}.attn.qkv.bias"] = torch.cat([hf[att + "q_proj.bias"], torch.zeros(d), hf[att + "v_proj.bias"]])
        out[f"blocks.{i}.attn.qkv.bias_mask"] = torch.cat([torch.ones(d), torch.zeros(d), torch.ones(d)])
    return out


def official_to_hf(sd: dict[str, torch.Tensor], cfg: DinoV3Config) -> dict[str, torch.Tensor]:
    """Inverse of `hf_to_official` (the key bias, masked to zero upstream, is dropped as HF does)."""
    d = cfg.embed_dim
    out = {theirs: sd[ours] for ours, theirs in _hf_renames(cfg)}
    out["embeddings.mask_token"] = sd["mask_token"].reshape(1, 1, d)
    for i in range(cfg.depth):
        o, att = f"blocks.{i}.attn.qkv.", f"layer.{i}.attention."
        w, b = sd[o + "weight"], sd[o + "bias"] * sd[o + "bias_mask"]
        for j, p in enumerate("qkv"):
            out[att + f"{p}_proj.weight"] = w[j * d : (j + 1) * d]
            if p != "k":
                out[att + f"{p}_proj.bias"] = b[j * d : (j + 1) * d]
    return out


def load_dinov3(path: str | Path, cfg: DinoV3Config | str | None = None, sha256: str | None = None,
                img_size: int | None = None) -> DinoV3:
    """Load DINOv3 weights from the official `.pth`, an official-layout `.safetensors`, or HF safetensors.

    The layout is recognised from the keys; either way the check is strict. Files the kit wrote carry their
    architecture in the safetensors metadata, which then wins over `cfg`; official/HF files need `cfg` (a
    config or preset name). `sha256` (a full 64-hex digest) pins the file; `img_size` sets the input
    size the RoPE tables are built for.
    """
    check_sha256(path, sha256)
    state_dict, meta = read_weights(path)
    if "dfedge_dinov3_config" in meta:
        cfg = config_from_metadata(DinoV3Config, meta, "dfedge_dinov3_config", path)
    elif cfg is None:
        raise CheckpointError(f"{path}: no architecture given and none recorded in the file (pass a preset)")
    elif isinstance(cfg, str):
        cfg = PRESETS[cfg]
    if img_size is not None:
        cfg = replace(cfg, img_size=img_size)
    if "embeddings.cls_token" in state_dict:
        state_dict = hf_to_official(state_dict, cfg, str(path))
    state_dict = from_official(state_dict, cfg, str(path))  # keys and shapes checked before the model is allocated
    model = DinoV3(cfg)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def config_json(cfg: DinoV3Config) -> str:
    return json.dumps({k: v for k, v in asdict(cfg).items() if k != "sha256"})


__all__ = [
    "CheckpointError", "DinoV3", "DinoV3Config", "PRESETS", "from_official", "hf_to_official", "load_dinov3",
    "official_shapes", "official_to_hf", "rope_tables", "to_official",
]
