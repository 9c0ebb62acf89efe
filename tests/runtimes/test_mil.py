"""The MIL interpreter that gives CoreML real parity numbers on Linux must itself agree with torch op by op:
a small module with every op family the detector converts to, channel counts chosen so layout mistakes show."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dfedge.runtimes import mil
from dfedge.runtimes.mil import MilInterpreter, UnsupportedMilOp


class OpZoo(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.up = nn.ConvTranspose2d(5, 7, 2, stride=2)  # C_in != C_out: catches a transposed weight layout
        self.bn = nn.BatchNorm2d(5).eval()
        self.norm = nn.LayerNorm(7)
        self.lin = nn.Linear(7, 4)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        y = self.bn(F.relu(self.conv(x)))  # after the relu so the converter cannot fold it into the conv
        y = F.gelu(self.up(y))  # [1, 7, 12, 12]
        small = F.max_pool2d(y, 2, 2) + F.avg_pool2d(y, 2, 2)
        y = y + F.interpolate(small[..., :3, :3], size=y.shape[-2:], mode="bilinear", align_corners=False)
        tokens = self.norm(y.flatten(2).transpose(1, 2))  # [1, 144, 7]
        attn = torch.softmax(tokens @ tokens.transpose(1, 2) / 7**0.5, dim=-1)
        out = self.lin(attn @ tokens)
        mask = (torch.sigmoid(out) >= 0.5).to(out.dtype)
        return out, mask.sum(dim=1) / out.shape[1]


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    ct = pytest.importorskip("coremltools")
    torch.manual_seed(0)
    module = OpZoo().eval()
    example = torch.rand(1, 3, 6, 6) * 4 - 2
    program = torch.export.export(module, (example,)).run_decompositions({})
    model = ct.convert(program, inputs=[ct.TensorType(name="x", shape=(1, 3, 6, 6), dtype=np.float32)],
                       outputs=[ct.TensorType(name="out"), ct.TensorType(name="share")], convert_to="mlprogram",
                       minimum_deployment_target=ct.target.iOS17, compute_precision=ct.precision.FLOAT32,
                       skip_model_load=True)
    path = tmp_path_factory.mktemp("zoo") / "zoo.mlpackage"
    model.save(str(path))
    return module, path


def test_interpreter_matches_torch_on_every_op_family(package):
    module, path = package
    interpreter = MilInterpreter(path)
    used = {op.op_type for op in interpreter.function.operations}
    assert {"conv", "conv_transpose", "batch_norm", "layer_norm", "softmax", "max_pool", "avg_pool"} <= used
    assert used & {"upsample_bilinear", "resize_bilinear"}
    for seed in range(3):
        x = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(seed)) * 4 - 2
        with torch.no_grad():
            ref_out, ref_share = module(x)
        got = interpreter.run({"x": x.numpy()})
        np.testing.assert_allclose(got["out"], ref_out.numpy(), atol=1e-5)
        np.testing.assert_allclose(got["share"], ref_share.numpy(), atol=1e-6)


def test_interpreter_names_an_op_it_cannot_run(package, monkeypatch):
    _, path = package
    monkeypatch.delitem(mil.OPS, "conv_transpose")
    with pytest.raises(UnsupportedMilOp, match="conv_transpose"):
        MilInterpreter(path)
