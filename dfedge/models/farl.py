"""The FaRL face parser as `facer` ships it: CLIP ViT-B/16 at 448 + four FPN branches + mmseg's UPerHead.

Module names mirror facer's TorchScript files (`backbone.visual.*`, `backbone.fpns.*`, `head.head.*`), so their
state_dict loads strictly. Differences from the TorchScript graph, all output-preserving at a fixed size:
- the attention is written with the packed `in_proj_weight`/`in_proj_bias` of `nn.MultiheadAttention`;
- the adaptive pools of scales 3 and 6 (which do not divide 14) are constant averaging matrices;
- the trailing bilinear upsample to `out_size` is not in `forward`: the detector takes the softmax at the head's
  native 1/4 resolution (112 at 448) and pools straight to the token grid. `out_size` is kept as metadata.

Cheaper variants of the same weights (the region-index ladder, `dfedge/models/ladder.py`) are configs of this
parser, made from the published one by `derive_parser`:
- `fuse_size` < 4*grid (lite-head): the pyramid levels finer than `fuse_size` are area-pooled to it before the
  UPerHead. Pooling a stride-2 2x2 transposed conv's output by 2 equals a 1x1 conv with the kernel's mean, so the
  pooled levels are computed exactly, at the coarse size, and the head fuses there;
- `input_size` 224 (parser-224): the positional embedding is resized once (bicubic, antialiased when shrinking,
  as timm's `resample_abs_pos_embed`), the pyramid is [56, 28, 14, 7] and the head fuses at 56.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import (
    CheckpointError, check_archive_size, check_sha256, check_state_dict, config_from_metadata, read_safetensors,
    read_torch_state_dict, read_torchscript, save_safetensors, sha256_file,
)
from .labels import LABEL_SETS
from .layers import QuickGELU, merge_heads, multi_head_attention, split_heads
from .resample import adaptive_avg_matrix, apply_separable, as_buffer
from .writing import atomic_write

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# LaPa models were trained on tanh-warped crops (facer's warp_factor); CelebAMask-HQ ones on plain crops.
WARP_FACTORS: dict[str, float] = {"lapa": 0.8, "celebm": 0.0}


@dataclass(frozen=True)
class FarlConfig:
    label_set: str = "lapa"
    width: int = 768
    layers: int = 12
    heads: int = 12
    patch_size: int = 16
    input_size: int = 448
    output_indices: tuple[int, ...] = (3, 5, 7, 11)
    head_channels: int = 768
    proj_dim: int = 512
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    out_size: tuple[int, int] = (448, 448)
    fuse_size: int = 0  # UPerHead fusion (and logit) resolution; 0 = the published 4 x grid (112 at 448)
    sha256: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.label_set not in LABEL_SETS:
            raise ValueError(f"unknown label set '{self.label_set}' (known: {', '.join(LABEL_SETS)})")
        if self.heads < 1 or self.width % self.heads:
            raise ValueError(f"{self.heads} attention heads do not split the width {self.width}")
        if max(self.output_indices) >= self.layers:
            raise ValueError(f"output_indices {self.output_indices} need at least {max(self.output_indices) + 1} layers")
        if self.input_size % (2 * self.patch_size):  # the x0.5 pyramid level needs an even token grid
            raise ValueError(f"input_size {self.input_size} must be a multiple of {2 * self.patch_size}")
        if self.fuse_size and self.fuse_size not in (4 * self.grid, 2 * self.grid, self.grid):
            raise ValueError(f"fuse_size {self.fuse_size} must be 4, 2 or 1 x the ViT grid ({self.grid})")

    @property
    def label_names(self) -> tuple[str, ...]:
        return LABEL_SETS[self.label_set]

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def grid(self) -> int:
        return self.input_size // self.patch_size

    @property
    def logit_size(self) -> int:
        """Side of the logit map: the head's fusion size, by default the fpn1 level, 4x the ViT grid (112 at 448)."""
        return self.fuse_size or 4 * self.grid

    @property
    def fpn_pool(self) -> int:
        """How much the two finest pyramid levels are area-pooled before the head (1 = published, 2, 4)."""
        return 4 * self.grid // self.logit_size

    @property
    def warp_factor(self) -> float:
        return WARP_FACTORS[self.label_set]


PRESETS: dict[str, FarlConfig] = {
    "farl-b-lapa": FarlConfig(
        label_set="lapa", sha256="f5a874906795ef89fadd7cf3b5b218ed8550fa9dbb383b7c0f95726c3a352914"
    ),
    "farl-b-celebm": FarlConfig(label_set="celebm"),
    "tiny": FarlConfig(width=64, layers=4, heads=2, output_indices=(0, 1, 2, 3), head_channels=32, proj_dim=32),
    # The toy world's parser: tiny's architecture, trained on toy label maps (`python -m dfedge.train.toy`).
    "toy": FarlConfig(width=64, layers=4, heads=2, output_indices=(0, 1, 2, 3), head_channels=32, proj_dim=32),
}


# --- backbone -----------------------------------------------------------------------------------------------


class PackedSelfAttention(nn.Module):
    """`nn.MultiheadAttention` self-attention with its parameter names (in_proj_weight, out_proj), on [B, N, C]."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q = split_heads(qkv[..., :d], self.num_heads)
        k = split_heads(qkv[..., d : 2 * d], self.num_heads)
        v = split_heads(qkv[..., 2 * d :], self.num_heads)
        return self.out_proj(merge_heads(multi_head_attention(q, k, v)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = PackedSelfAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = nn.Sequential(
            OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(4 * width, width))])
        )
        self.ln_2 = nn.LayerNorm(width, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))


class VisualTransformer(nn.Module):
    def __init__(self, cfg: FarlConfig) -> None:
        super().__init__()
        w = cfg.width
        scale = w**-0.5
        self.conv1 = nn.Conv2d(3, w, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(w))
        self.positional_embedding = nn.Parameter(scale * torch.randn(cfg.grid**2 + 1, w))
        self.ln_pre = nn.LayerNorm(w, eps=1e-5)
        self.transformer = Transformer(w, cfg.layers, cfg.heads)
        self.ln_post = nn.LayerNorm(w, eps=1e-5)  # unused by the parser; used by the FaRL-feature ablation head
        self.proj = nn.Parameter(scale * torch.randn(w, cfg.proj_dim))  # CLIP projection, unused; in checkpoints


def make_fpns(width: int, pool: int = 1) -> nn.ModuleList:
    """FaRL's four pyramid branches for patch 16: x4 (two transposed convs), x2, x1, x0.5.

    `pool` 2 or 4 area-pools the x4 and x2 levels by that factor (never finer than x1): a 2x2 stride-2 transposed
    conv followed by a 2x2 mean is a 1x1 conv with the kernel's mean (`fold_pooled_fpns` makes its weights).
    """
    def up() -> nn.ConvTranspose2d:
        return nn.ConvTranspose2d(width, width, kernel_size=2, stride=2)

    def folded() -> nn.Conv2d:
        return nn.Conv2d(width, width, kernel_size=1)

    first = [up(), nn.BatchNorm2d(width), nn.GELU()]
    if pool == 1:
        x4, x2 = nn.Sequential(*first, up()), up()
    elif pool == 2:
        x4, x2 = nn.Sequential(*first, folded()), up()
    elif pool == 4:
        x4, x2 = nn.Sequential(*first, nn.AvgPool2d(kernel_size=2, stride=2), folded()), folded()
    else:
        raise ValueError(f"pyramid pooling must be 1, 2 or 4, got {pool}")
    return nn.ModuleList([x4, x2, nn.Identity(), nn.MaxPool2d(kernel_size=2, stride=2)])


def fold_pooled_fpns(state_dict: dict[str, torch.Tensor], pool: int, prefix: str = "backbone.fpns.") -> dict[str, torch.Tensor]:
    """Published FPN weights -> the weights of `make_fpns(width, pool)` (same outputs, area-pooled by `pool`).

    ConvTranspose2d weight [in, out, 2, 2] with stride 2 -> Conv2d weight [out, in, 1, 1] = the mean over the
    kernel taps; the bias is unchanged.
    """
    if pool == 1:
        return dict(state_dict)

    def fold(key: str) -> tuple[torch.Tensor, torch.Tensor]:
        w, b = state_dict[f"{prefix}{key}.weight"], state_dict[f"{prefix}{key}.bias"]
        return w.mean(dim=(2, 3)).t().contiguous()[:, :, None, None], b

    out = {k: v for k, v in state_dict.items() if not k.startswith((f"{prefix}0.3.", f"{prefix}1."))}
    last = "0.3" if pool == 2 else "0.4"
    out[f"{prefix}{last}.weight"], out[f"{prefix}{last}.bias"] = fold("0.3")
    if pool == 4:
        out[f"{prefix}1.weight"], out[f"{prefix}1.bias"] = fold("1")
    else:
        out[f"{prefix}1.weight"], out[f"{prefix}1.bias"] = state_dict[f"{prefix}1.weight"], state_dict[f"{prefix}1.bias"]
    return out


class FarlBackbone(nn.Module):
    """forward(x01 [B, 3, S, S] in [0, 1]) -> (4 pyramid maps [B, W, 4g|2g|g|g/2, ...], last tokens [B, g*g, W])."""

    def __init__(self, cfg: FarlConfig) -> None:
        super().__init__()
        self.output_indices: list[int] = list(cfg.output_indices)
        self.grid = cfg.grid
        self.register_buffer("image_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1))
        self.visual = VisualTransformer(cfg)
        self.fpns = make_fpns(cfg.width, cfg.fpn_pool)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Pyramid at 448: [112, 56, 28, 14]^2 (finest two pooled to `fuse_size` for lite configs)."""
        x = (x - self.image_mean) / self.image_std
        v = self.visual
        x = v.conv1(x).flatten(2).transpose(1, 2)  # [B, g*g, W]
        cls = v.class_embedding.reshape(1, 1, -1).expand(x.shape[0], -1, -1)
        x = v.ln_pre(torch.cat([cls, x], dim=1) + v.positional_embedding)
        features: list[torch.Tensor] = []
        for i, blk in enumerate(v.transformer.resblocks):
            x = blk(x)
            if i in self.output_indices:
                b, n, c = x.shape
                features.append(x[:, 1:].transpose(1, 2).reshape(b, c, self.grid, self.grid))
        pyramid = [fpn(features[i]) for i, fpn in enumerate(self.fpns)]
        return pyramid, x[:, 1:]


# --- UPerHead (mmseg 0.18 names) -----------------------------------------------------------------------------


class ConvModule(nn.Module):
    """mmcv ConvModule: conv (no bias) -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class ConstantAdaptivePool(nn.Module):
    """AdaptiveAvgPool2d for one fixed input size, as two constant matrices (works for non-divisible sizes)."""

    def __init__(self, in_size: int, out_size: int) -> None:
        super().__init__()
        self.register_buffer("matrix", as_buffer(adaptive_avg_matrix(in_size, out_size)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_separable(x, self.matrix, self.matrix)


class UPerHead(nn.Module):
    def __init__(self, cfg: FarlConfig) -> None:
        super().__init__()
        w, c = cfg.width, cfg.head_channels
        top = cfg.grid // 2  # the x0.5 level the pyramid pooling runs on (14 at 448)
        self.psp_modules = nn.ModuleList(
            nn.Sequential(ConstantAdaptivePool(top, s), ConvModule(w, c, 1)) for s in cfg.pool_scales
        )
        self.bottleneck = ConvModule(w + len(cfg.pool_scales) * c, c, 3)
        self.lateral_convs = nn.ModuleList(ConvModule(w, c, 1) for _ in range(3))
        self.fpn_convs = nn.ModuleList(ConvModule(c, c, 3) for _ in range(3))
        self.fpn_bottleneck = ConvModule(4 * c, c, 3)
        self.conv_seg = nn.Conv2d(c, cfg.num_classes, kernel_size=1)

    @staticmethod
    def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] == like.shape[-2:]:  # levels pooled to the same size (lite configs): nothing to resize
            return x
        return F.interpolate(x, size=(like.shape[-2], like.shape[-1]), mode="bilinear", align_corners=False)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """Pyramid [112, 56, 28, 14]^2 maps -> logits [B, C, 112, 112] (sizes at 448; the finest level's size)."""
        top = inputs[3]
        psp = [top] + [self._resize(m(top), top) for m in self.psp_modules]
        laterals = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.bottleneck(torch.cat(psp, dim=1)))
        for i in range(3, 0, -1):
            laterals[i - 1] = laterals[i - 1] + self._resize(laterals[i], laterals[i - 1])
        outs = [conv(laterals[i]) for i, conv in enumerate(self.fpn_convs)] + [laterals[3]]
        outs = [outs[0]] + [self._resize(o, outs[0]) for o in outs[1:]]
        return self.conv_seg(self.fpn_bottleneck(torch.cat(outs, dim=1)))


class HeadWrapper(nn.Module):
    """FaRL wraps mmseg's head as `MMSEG_UPerHead.head`; the extra level keeps checkpoint keys `head.head.*`."""

    def __init__(self, cfg: FarlConfig) -> None:
        super().__init__()
        self.head = UPerHead(cfg)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.head(inputs)


class FarlParser(nn.Module):
    """forward(x01 [B, 3, S, S], RGB in [0, 1], in the parser's own frame) -> logits [B, C, S/4, S/4]."""

    def __init__(self, cfg: FarlConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = FarlBackbone(cfg)
        self.head = HeadWrapper(cfg)
        self.out_size: list[int] = list(cfg.out_size)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pyramid, _ = self.backbone(x)
        return self.head(pyramid)


# --- checkpoints -------------------------------------------------------------------------------------------


def expected_shapes(cfg: FarlConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = FarlParser(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def resize_positional_embedding(pe: torch.Tensor, grid: int) -> torch.Tensor:
    """[1 + G*G, W] -> [1 + grid*grid, W], bicubic, align_corners=False, as FaRL resizes 224 -> 448; shrinking is
    antialiased, as timm's `resample_abs_pos_embed` does (plain bicubic would alias the 28 -> 14 halving)."""
    old = int(round((pe.shape[0] - 1) ** 0.5))
    if old == grid:
        return pe
    patches = pe[1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches.float(), size=(grid, grid), mode="bicubic", align_corners=False, antialias=grid < old)
    return torch.cat([pe[:1], patches.flatten(2)[0].t()], dim=0)


def derive_parser(parser: FarlParser, cfg: FarlConfig) -> FarlParser:
    """The same weights in another config of the ladder: positional embedding resized for `cfg.input_size`,
    FPN levels folded for `cfg.fuse_size`. Everything else is copied as is; the result loads strictly."""
    base = parser.cfg
    if replace(cfg, input_size=base.input_size, fuse_size=base.fuse_size) != base:
        raise ValueError("derive_parser changes only input_size and fuse_size")
    if base.fpn_pool != 1:
        raise ValueError("derive from the published parser (fuse_size 0), not from a pooled one")
    state_dict = fold_pooled_fpns(parser.state_dict(), cfg.fpn_pool)
    key = "backbone.visual.positional_embedding"
    state_dict[key] = resize_positional_embedding(state_dict[key], cfg.grid)
    return build_parser(state_dict, cfg, f"derived from the {base.input_size}px parser")


HEADS_KEY = "backbone.visual.transformer.resblocks.0.attn.num_heads"  # where a scripted parser records its heads


def check_heads(stated: int | None, heads: int | None, source: str | Path) -> int | None:
    """The attention-head count: the file's, else the user's (`--parser-heads`); both, and different, is refused."""
    if stated is not None and heads is not None and int(stated) != int(heads):
        raise CheckpointError(f"{source}: the file records {stated} attention heads, not the {heads} of --parser-heads")
    return heads if stated is None else int(stated)


def infer_config(state_dict: dict[str, torch.Tensor], label_set: str | None, source: str,
                 attributes: dict | None = None, heads: int | None = None, **overrides) -> FarlConfig:
    """The parser's config from its tensors: width, depth, patch, classes, input size off the keys and shapes; the
    attention heads and the blocks that feed the head from the archive's attributes when it has them (TorchScript:
    `num_heads`, `backbone.output_indices`), else the heads from `heads` (--parser-heads), else both from the preset
    of the same depth (and width, for the heads). Never guessed: a shape no preset has, without the archive or the
    user saying, is refused."""
    attributes = attributes or {}
    try:
        width = state_dict["backbone.visual.conv1.weight"].shape[0]
        patch = state_dict["backbone.visual.conv1.weight"].shape[-1]
        layers = 1 + max(int(k.split(".")[4]) for k in state_dict if k.startswith("backbone.visual.transformer.resblocks."))
        classes = state_dict["head.head.conv_seg.weight"].shape[0]
        head_channels = state_dict["head.head.conv_seg.weight"].shape[1]
        grid = int(round((state_dict["backbone.visual.positional_embedding"].shape[0] - 1) ** 0.5))
        proj_dim = state_dict["backbone.visual.proj"].shape[1]
    except (KeyError, IndexError, ValueError) as e:
        raise CheckpointError(f"{source}: not a FaRL face-parser state_dict (cannot read {e})") from None
    by_classes = {len(v): k for k, v in LABEL_SETS.items()}
    if label_set is None:
        if classes not in by_classes:
            raise CheckpointError(f"{source}: {classes} output classes match no known label set")
        label_set = by_classes[classes]
    if len(LABEL_SETS[label_set]) != classes:
        raise CheckpointError(f"{source}: {classes} output classes, but label set '{label_set}' has {len(LABEL_SETS[label_set])}")
    same_depth = [c for c in PRESETS.values() if c.layers == layers]
    indices = attributes.get("backbone.output_indices")
    if indices is None:
        if not same_depth:
            raise CheckpointError(f"{source}: a {layers}-layer parser and no output_indices in the file: which blocks "
                                  f"feed the head is unknown (known depths: {sorted({c.layers for c in PRESETS.values()})})")
        indices = same_depth[0].output_indices
    heads = check_heads(attributes.get(HEADS_KEY), heads, source)
    if heads is None:
        same = [c for c in same_depth if c.width == width]
        if not same:
            raise CheckpointError(f"{source}: a {width}-wide {layers}-layer parser that records no attention-head count "
                                  "and matches no preset: pass --parser-heads N")
        heads = same[0].heads
    try:
        cfg = FarlConfig(
            label_set=label_set, width=width, layers=layers, heads=int(heads), patch_size=patch,
            input_size=grid * patch, output_indices=tuple(int(i) for i in indices), head_channels=head_channels,
            proj_dim=proj_dim,
        )
        return replace(cfg, **overrides)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{source}: {e}") from None


ARCHIVE_MARGIN = 1.25, 1 << 20  # x the weights, + bytes: room for an archive's code/, pickles and 64-byte alignment


def archive_bound() -> int:
    """The most bytes a parser archive may inflate to: the largest parser the kit knows (its presets; FaRL-B,
    161.6 M parameters) as float32, what facer ships, times 1.25 plus 1 MiB: 809 MB. (A 779 KB archive once
    inflated to 2 GB before it was refused.)"""
    params = max(sum(math.prod(shape) for shape in expected_shapes(cfg).values()) for cfg in PRESETS.values())
    scale, extra = ARCHIVE_MARGIN
    return int(params * 4 * scale) + extra


def read_parser_file(path: str | Path, trust_torchscript: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, attributes) of a facer TorchScript `.pt`, read as data (checkpoint.read_torchscript), or of a
    plain `torch.save` state_dict (weights only); either is refused if its zip declares more than `archive_bound`.
    `trust_torchscript` runs the archive with `torch.jit.load` instead, which executes its scripted code: only for a
    file the user vouches for (its directory is still checked against the bound first)."""
    path = Path(path)
    if not trust_torchscript:
        try:
            return read_torchscript(path, archive_bound())
        except CheckpointError as e:
            if "a torch.save checkpoint" not in str(e):
                raise
        return read_torch_state_dict(path), {}
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as archive:
            check_archive_size(archive, archive_bound(), path)
        with warnings.catch_warnings():  # torch >= 2.9 flags TorchScript as deprecated; reading it is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            jit = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # noqa: BLE001 - TorchScript raises many unrelated types for a bad archive
        if isinstance(e, CheckpointError):
            raise
        msg = str(e).strip().splitlines()
        raise CheckpointError(f"{path}: unreadable TorchScript archive (truncated or corrupt): {msg[0] if msg else e}") from None
    state_dict = {k: v.detach().clone() for k, v in jit.state_dict().items()}
    attributes = {key: functools.reduce(lambda obj, name: getattr(obj, name, None), key.split("."), jit)
                  for key in ("out_size", "backbone.output_indices", HEADS_KEY)}
    return state_dict, {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in attributes.items() if v is not None}


def build_parser(state_dict: dict[str, torch.Tensor], cfg: FarlConfig, source: str) -> FarlParser:
    check_state_dict(state_dict, expected_shapes(cfg), source)
    model = FarlParser(cfg)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def load_parser(
    path: str | Path, label_set: str | None = None, sha256: str | None = None, input_size: int | None = None,
    trust_torchscript: bool = False, heads: int | None = None,
) -> FarlParser:
    """Load a FaRL parser from a converted `.safetensors` (preferred), a facer TorchScript `.pt` (read as data,
    see read_parser_file) or a plain state_dict `.pt`.

    `input_size` other than the checkpoint's resizes the positional embedding once (bicubic, as FaRL does).
    `heads` (--parser-heads): the attention heads, for a file that records none and matches no preset.
    """
    check_sha256(path, sha256)
    if str(path).endswith(".safetensors"):
        state_dict, meta = read_safetensors(path)
        if "dfedge_parser_config" not in meta:
            raise CheckpointError(f"{path}: safetensors file has no 'dfedge_parser_config' metadata (use convert-parser)")
        cfg = config_from_metadata(FarlConfig, meta, "dfedge_parser_config", path)
        if label_set is not None and label_set != cfg.label_set:
            raise CheckpointError(f"{path}: parser label set is '{cfg.label_set}', not '{label_set}'")
        check_heads(cfg.heads, heads, path)
    else:
        state_dict, attributes = read_parser_file(path, trust_torchscript)
        out_size = tuple(int(v) for v in attributes.get("out_size", (448, 448)))
        cfg = infer_config(state_dict, label_set, str(path), attributes, heads, out_size=out_size)
    if input_size is not None and input_size != cfg.input_size:
        cfg = replace(cfg, input_size=input_size)
        key = "backbone.visual.positional_embedding"
        state_dict = dict(state_dict, **{key: resize_positional_embedding(state_dict[key], cfg.grid)})
    return build_parser(state_dict, cfg, str(path))


def config_json(cfg: FarlConfig) -> str:
    fields = asdict(cfg)
    fields.pop("sha256")
    return json.dumps(fields)


def convert_parser(src: str | Path, dst: str | Path, label_set: str | None = None, sha256: str | None = None,
                   trust_torchscript: bool = False, heads: int | None = None) -> dict:
    """TorchScript `.pt` -> `.safetensors` with the config in its metadata, plus a JSON manifest beside it.

    Later runs load the safetensors file and never deserialise TorchScript again. Returns the manifest.
    """
    src, dst = Path(src), Path(dst)
    digest = check_sha256(src, sha256)
    parser = load_parser(src, label_set=label_set, trust_torchscript=trust_torchscript, heads=heads)
    meta = {
        "dfedge_parser_config": config_json(parser.cfg),
        "label_names": list(parser.cfg.label_names),
        "source_file": src.name,
        "source_sha256": digest,
    }
    save_safetensors(dst, parser.state_dict(), meta)
    manifest = {
        "format": "dfedge-farl-parser/1",
        "weights": dst.name,
        "weights_sha256": sha256_file(dst),
        "config": json.loads(meta["dfedge_parser_config"]),
        "label_names": list(parser.cfg.label_names),
        "warp_factor": parser.cfg.warp_factor,
        "source_file": src.name,
        "source_sha256": digest,
        "keys": {k: list(v.shape) for k, v in parser.state_dict().items()},
    }
    atomic_write(dst.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(manifest, indent=2)))
    return manifest
