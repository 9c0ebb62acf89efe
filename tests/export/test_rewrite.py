"""export.rewrite: graph rewrites made for a converter's runtime keep the math."""

import pytest
import torch
from torch import nn

from dfedge.export.rewrite import ShiftedConv2d, shifted_convs


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 8, 7, 5), (2, 3, 1, 1), (1, 32, 16, 16)])
def test_a_shifted_conv_is_the_3x3_conv(shape, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(shape[1], 6, 3, padding=1, bias=bias)
    x = torch.randn(shape)
    with torch.no_grad():
        assert torch.allclose(ShiftedConv2d(conv)(x), conv(x), atol=1e-5, rtol=1e-5)


def test_only_3x3_stride_1_padding_1_convs_are_rewritten_and_restored_after():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                          nn.Conv2d(4, 4, 1), nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.ReLU()),
                          nn.Conv2d(4, 4, 3, padding=2, dilation=2), nn.Conv2d(4, 4, 3, padding=1, groups=2))
    x = torch.randn(1, 3, 12, 12)
    with torch.no_grad():
        before = model(x)
        kinds = [type(m) for m in model.modules()]
        with shifted_convs(model) as count:
            assert count == 2 and sum(isinstance(m, ShiftedConv2d) for m in model.modules()) == 2
            assert model[0].weight is not None and torch.allclose(model(x), before, atol=1e-5)
        assert [type(m) for m in model.modules()] == kinds
        with pytest.raises(RuntimeError, match="inside"), shifted_convs(model):
            raise RuntimeError("inside")
        assert [type(m) for m in model.modules()] == kinds  # restored after an error too
