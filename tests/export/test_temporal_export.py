"""The temporal head (SDR) exports to every target's format and runs there with the torch head's numbers."""

import numpy as np
import pytest
import torch

from dfedge.device.graphs import TEMPORAL_OUTPUTS
from dfedge.models.temporal import Graph, make_temporal, pack
from dfedge.runtimes import open_temporal
from dfedge.runtimes.reference import torch_runner
from dfedge.targets import TARGETS


@pytest.mark.parametrize("target", list(TARGETS))
def test_temporal_graph_parity_on_every_target(target, tmp_path):
    torch.manual_seed(0)
    head = make_temporal(96, frames=8)
    g = torch.Generator().manual_seed(1)
    valid = (torch.rand(4, 8, generator=g) > 0.3).float()
    valid[-1] = 0.0  # a window without one usable frame
    x = pack(torch.randn(4, 8, 96, generator=g), valid).numpy()
    t = TARGETS[target]
    name = t.format.graph_file("temporal")
    t.graph_exporter(Graph(head), torch.zeros(head.input_shape), tmp_path / name, TEMPORAL_OUTPUTS, False)
    run = open_temporal(tmp_path, {"target": target, "temporal": {"file": name}}, interpreter=True)  # CoreML: MIL off macOS
    ref = torch_runner(head)
    for i in range(len(x)):
        out, expected = run(x[i : i + 1]), ref(x[i : i + 1])
        np.testing.assert_allclose(out["logit"], expected["logit"], atol=1e-4)
        np.testing.assert_allclose(out["probability"], expected["probability"], atol=1e-5)
        assert float(np.asarray(out["valid_frames"]).reshape(-1)[0]) == valid[i].sum().item()
