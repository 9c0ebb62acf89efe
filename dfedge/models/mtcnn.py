"""MTCNN (Zhang et al. 2016): the three cascaded CNNs of the face front end, in PyTorch.

The weights are facenet-pytorch 2.6.0's (MIT, `facenet_pytorch/data/{pnet,rnet,onet}.pt`), shipped with the kit
as `dfedge/weights/mtcnn.safetensors` (their SHA-256 in its metadata, the licence beside it), so the front end works
offline with no extra install; a folder holding facenet-pytorch's three `.pt` files can be given instead. Module
names mirror the keys of those state dicts, so loading is a strict key-and-shape check and nothing else. The dense
layers of R-Net and O-Net were converted from a TensorFlow port and read their input flattened in (W, H, C) order.
The cascade around them (pyramid, NMS, box regression) is numpy in the device package (`device/faces/mtcnn.py`,
whose `ROW` names the nets, their inputs and outputs, the settings and the licence).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..device.faces.mtcnn import ROW, Mtcnn
from .checkpoint import CheckpointError, check_state_dict, expected_shapes, read_safetensors, read_torch_state_dict

NETS = tuple(net.name for net in ROW.nets)
SHIPPED = Path(__file__).resolve().parent.parent / "weights" / "mtcnn.safetensors"
LICENCE = ROW.licence


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, W*H*C] in the order the converted dense weights expect."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class DensePReLU(nn.PReLU):
    """PReLU on [B, C] features written as relu(x) - a * relu(-x) (the same function and parameter): Core ML's prelu
    op takes per-channel slopes only on rank-4 inputs, and the converter lifts [B, C] to rank 3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) - self.weight * torch.relu(-x)


class _Cascade(nn.Module):
    """The front the three nets share: conv{i} -> prelu{i} -> pool{i} (where given), i = 1..n, named as in the
    checkpoints. `layers`: one (in channels, out channels, kernel, (pool kernel, pool stride) or None) per conv."""

    def __init__(self, layers: list[tuple[int, int, int, tuple[int, int] | None]]) -> None:
        super().__init__()
        self.depth = len(layers)
        for i, (c_in, c_out, kernel, pool) in enumerate(layers, 1):
            setattr(self, f"conv{i}", nn.Conv2d(c_in, c_out, kernel))
            setattr(self, f"prelu{i}", nn.PReLU(c_out))
            if pool is not None:
                setattr(self, f"pool{i}", nn.MaxPool2d(*pool, ceil_mode=True))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.depth + 1):
            x = getattr(self, f"prelu{i}")(getattr(self, f"conv{i}")(x))
            if hasattr(self, f"pool{i}"):
                x = getattr(self, f"pool{i}")(x)
        return x


class PNet(_Cascade):
    """Proposal net, fully convolutional: a 12x12 window per output cell, stride 2."""

    def __init__(self) -> None:
        super().__init__([(3, 10, 3, (2, 2)), (10, 16, 3, None), (16, 32, 3, None)])
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not-face logits
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box offsets (x1, y1, x2, y2) in units of the window size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, 3, H, W] -> P(not face, face) [B, 2, H', W'], offsets [B, 4, H', W'] with H' = ceil((H - 2) / 2) - 4.
        Both classes, not a slice: a channel slice has a static shape in LiteRT, which breaks P-Net's dynamic sizes."""
        x = self.trunk(x)  # [B, 32, H', W']
        return self.conv4_1(x).softmax(1), self.conv4_2(x)


class RNet(_Cascade):
    """Refine net on 24x24 crops."""

    def __init__(self) -> None:
        super().__init__([(3, 28, 3, (3, 2)), (28, 48, 3, (3, 2)), (48, 64, 2, None)])
        self.dense4, self.prelu4 = nn.Linear(64 * 3 * 3, 128), DensePReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, 3, 24, 24] -> P(not face, face) [B, 2], offsets [B, 4]."""
        x = self.prelu4(self.dense4(_flatten_whc(self.trunk(x))))  # [B, 64, 3, 3] -> [B, 128]
        return self.dense5_1(x).softmax(1), self.dense5_2(x)


class ONet(_Cascade):
    """Output net on 48x48 crops: the final score, box and 5 landmarks."""

    def __init__(self) -> None:
        super().__init__([(3, 32, 3, (3, 2)), (32, 64, 3, (3, 2)), (64, 64, 3, (2, 2)), (64, 128, 2, None)])
        self.dense5, self.prelu5 = nn.Linear(128 * 3 * 3, 256), DensePReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)  # x1..x5, y1..y5 as fractions of the crop

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, 3, 48, 48] -> P(not face, face) [B, 2], offsets [B, 4], landmarks [B, 10]."""
        x = self.prelu5(self.dense5(_flatten_whc(self.trunk(x))))  # [B, 128, 3, 3] -> [B, 256]
        return self.dense6_1(x).softmax(1), self.dense6_2(x), self.dense6_3(x)


MODULES = {"pnet": PNet, "rnet": RNet, "onet": ONet}  # the exported inputs and outputs of each: ROW.nets


def _load(net: nn.Module, state: dict, source) -> nn.Module:
    check_state_dict(state, expected_shapes(net), source)
    net.load_state_dict(state, strict=True)
    return net.eval()


def load_mtcnn(weights: str | Path | None = None) -> dict[str, nn.Module]:
    """{pnet, rnet, onet} in eval mode: the shipped weights, or a folder holding facenet-pytorch's pnet.pt, rnet.pt
    and onet.pt (read without executing pickle code, strict keys and shapes)."""
    if weights is None:
        tensors, _ = read_safetensors(SHIPPED)
        return {n: _load(MODULES[n](), {k[len(n) + 1:]: v for k, v in tensors.items() if k.startswith(f"{n}.")},
                         f"{SHIPPED} [{n}]") for n in NETS}
    folder = Path(weights)
    nets = {}
    for n in NETS:
        path = folder / f"{n}.pt"
        if not path.is_file():
            raise CheckpointError(f"{path}: no such file (MTCNN weights: a folder with pnet.pt, rnet.pt, onet.pt)")
        nets[n] = _load(MODULES[n](), read_torch_state_dict(path), path)
    return nets


def shipped_provenance() -> dict:
    """File name, SHA-256 and licence of the shipped MTCNN weights (a bundle manifest's `front_end.sources`)."""
    from .checkpoint import sha256_file

    _, meta = read_safetensors(SHIPPED)
    return {"file": SHIPPED.name, "sha256": sha256_file(SHIPPED), "licence": LICENCE,
            "converted_from": json.loads(meta.get("sources", "{}"))}


class TorchNets:
    """The three nets as the numpy callables the cascade (device/faces/mtcnn.py) takes, run with torch (CPU or CUDA)."""

    def __init__(self, nets: dict[str, nn.Module], device: str = "cpu", batch: int = 256) -> None:
        self.nets = {n: m.to(device) for n, m in nets.items()}
        self.device, self.batch = device, batch

    def _run(self, name: str, x: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.no_grad():
            parts = [self.nets[name](torch.from_numpy(x[i : i + self.batch]).to(self.device))
                     for i in range(0, len(x), self.batch)]
        return tuple(torch.cat(p).cpu().numpy() for p in zip(*parts))

    def pnet(self, x: np.ndarray):
        return self._run("pnet", x)

    def rnet(self, x: np.ndarray):
        return self._run("rnet", x)

    def onet(self, x: np.ndarray):
        return self._run("onet", x)

    def detector(self) -> Mtcnn:
        """The cascade on these nets, with its default settings: a FaceDetector."""
        return Mtcnn(self.pnet, self.rnet, self.onet)
