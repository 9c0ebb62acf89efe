"""The topk (LFM) and ensemble (NTIRE 2026) heads: their math against plain references, their probe files."""

import numpy as np
import pytest
import torch

from dfedge.models.checkpoint import CheckpointError
from dfedge.models.factory import DetectorSpec, build_detector
from dfedge.models.pooling import EnsembleProbe, TopKProbe, discretized_vote
from dfedge.models.region import ProbeInfo, load_probe, make_probe, save_probe


def random_topk(dim=6, channels=3, k=4, seed=0):
    torch.manual_seed(seed)
    probe = TopKProbe(dim, channels, k)
    with torch.no_grad():
        for p in probe.parameters():
            p.normal_()
    return probe


def test_topk_keeps_the_k_largest_responses_per_channel_inside_the_region():
    probe = random_topk()
    tokens, mask = torch.randn(2, 10, 6), (torch.rand(2, 10) > 0.3).float()
    values, onehot = probe.responses(tokens, mask)
    s = (tokens @ probe.salience_weight.T + probe.salience_bias).detach().numpy()  # [B, N, C]
    for b in range(2):
        inside = np.flatnonzero(mask[b].numpy())
        for c in range(3):
            want = np.sort(s[b, inside, c])[::-1][:4]
            want = np.pad(want, (0, 4 - len(want)))  # slots a small region cannot fill hold 0
            np.testing.assert_allclose(values[b, c].detach().numpy(), want, rtol=1e-6)
    assert onehot.sum(dim=-1).max() <= 1 and (onehot.sum(dim=(1, 2)) * (1 - mask)).abs().max() == 0  # never outside


def test_topk_contributions_are_an_exact_decomposition_of_the_logit():
    probe = random_topk(dim=8, channels=5, k=3, seed=1)
    tokens, mask = torch.randn(4, 12, 8), (torch.rand(4, 12) > 0.5).float()
    mask[0] = 0.0  # no region: the logit is the bias alone
    mask[1] = 0.0
    mask[1, 3] = 1.0  # one token: it wins every channel's first slot
    logit, selected, contributions = probe.score(tokens, mask)
    torch.testing.assert_close(contributions.sum(dim=1) + probe.bias, logit, atol=1e-5, rtol=1e-5)
    assert logit[0] == probe.bias and selected[0].sum() == 0
    assert selected[1].tolist() == mask[1].tolist()
    assert torch.all(selected <= mask) and torch.all((contributions != 0) <= (selected > 0))
    torch.testing.assert_close(probe(torch.cat([tokens, mask.unsqueeze(-1)], dim=-1)), logit)


def test_topk_needs_at_least_k_tokens():
    with pytest.raises(ValueError, match="K must not exceed the token count"):
        random_topk(k=4).responses(torch.randn(1, 3, 6), torch.ones(1, 3))


@pytest.mark.parametrize("p,weights,want", [
    ([0.34, 0.71, 0.55], [2, 1, 2], 0.5),  # (0.3*2 + 0.7 + 0.6*2) / 5 = 0.5
    ([0.04, 0.96, 0.5], [1, 1, 1], 0.5),  # 0.0, 1.0, 0.5 (a half rounds up) -> 0.5
    ([0.2, 0.3], [1, 1], 0.3),  # 0.25: the tie rounds up
    ([0.24, 0.36, 0.91], [1, 2, 1], 0.5),  # (0.2 + 0.8 + 0.9) / 4 = 0.475 -> 0.5
    ([0.14, 0.14, 0.86], [2, 1, 2], 0.4),  # (0.2 + 0.1 + 1.8) / 5 = 0.42 -> 0.4
])
def test_discretized_vote_matches_the_ntire_rule(p, weights, want):
    assert discretized_vote(np.array([p]), weights)[0] == pytest.approx(want)
    s = len(p)
    ens = EnsembleProbe(1, torch.zeros(s, 11), tuple(f"s{i}" for i in range(s - 1)) + ("global",), tuple(map(float, weights)))
    logits = torch.logit(torch.tensor([p], dtype=torch.float64)).float()
    with torch.no_grad():  # stream mean = its logit, probe weight 1: the calibrated probability is p
        ens.weight.fill_(1.0)
    logit, vote, streams = ens.vote(logits.unsqueeze(-1), torch.ones(1, s))
    torch.testing.assert_close(streams, torch.tensor([p]), atol=1e-6, rtol=0)
    assert vote.item() == pytest.approx(want)
    assert torch.sigmoid(logit).item() == pytest.approx(float(np.dot(p, weights) / sum(weights)), abs=1e-5)


def test_vote_is_exact_on_every_tie_of_whole_number_weights():
    """Every combination of stream levels for weights (2, 1, 2) and (1, 1, 1, 1, 1): the graph's arithmetic (in
    float32, with the 1/100-step nudge) equals exact half-up rounding of the rational weighted mean."""
    from fractions import Fraction

    for weights in ([2, 1, 2], [1, 1, 1, 1, 1], [3, 1]):
        s = len(weights)
        levels = np.array(np.meshgrid(*[np.arange(11)] * s)).reshape(s, -1).T
        if len(levels) > 20000:
            levels = levels[np.random.default_rng(0).choice(len(levels), 20000, replace=False)]
        p = torch.from_numpy(levels / 10.0).float()
        ens = EnsembleProbe(1, torch.zeros(s, 11), tuple(f"s{i}" for i in range(s - 1)) + ("global",), tuple(map(float, weights)))
        with torch.no_grad():
            ens.weight.fill_(1.0)
        with torch.no_grad():
            _, vote, _ = ens.vote(torch.logit(p.double().clamp(1e-7, 1 - 1e-7)).float().unsqueeze(-1), torch.ones(len(p), s))
        exact = [Fraction(int(np.floor(Fraction(int(np.dot(lv, weights)), sum(weights)) + Fraction(1, 2))), 10) for lv in levels]
        assert np.array_equal(np.round(vote.numpy() * 10).astype(int), [int(e * 10) for e in exact]), weights


def test_a_stream_without_its_region_does_not_vote():
    ens = EnsembleProbe(1, torch.zeros(2, 11), ("mouth", "global"), (1.0, 1.0))
    with torch.no_grad():
        ens.weight.fill_(1.0)
    p = torch.tensor([[0.9, 0.2]])
    _, vote, _ = ens.vote(torch.logit(p).unsqueeze(-1), torch.tensor([[0.0, 196.0]]))
    assert vote.item() == pytest.approx(0.2)


def test_ensemble_stream_means_follow_the_parsed_regions():
    from dfedge.data.sources import ToySet

    det = build_detector(DetectorSpec(head="ensemble", random_probe=True))
    with torch.no_grad():
        t = det.tokens(torch.from_numpy(ToySet("val", 1).crops()))
    means, counts, union = det.probe.stream_means(t.patches, t.soft)
    assert det.probe.streams == ("mouth", "eyes", "nose", "skin", "global")
    assert counts[0, -1] == det.grid ** 2 and (counts[0, :-1] > 0).all()
    mouth = det.region_index(t.soft)  # the detector's own region (face) is a superset of mouth, eyes, nose, skin
    torch.testing.assert_close(means[:, -1], t.patches.mean(dim=1))
    assert torch.all(union <= mouth)


@pytest.mark.parametrize("head,config", [("topk", {"channels": 4, "k": 3}),
                                         ("ensemble", {"vote_weights": [2, 1, 1, 1, 2], "step": 0.05, "calibration": "temperature"})])
def test_head_probe_files_round_trip_and_are_checked(tmp_path, head, config):
    info = ProbeInfo(head=head, region="all" if head == "topk" else "face", threshold=0.1, head_config=config)
    probe = make_probe(head, 8, info)
    with torch.no_grad():
        for p in probe.parameters():
            p.normal_()
    path = save_probe(probe, tmp_path / "p.safetensors")
    back = load_probe(path, dim=8)
    assert type(back) is type(probe) and back.info == probe.info
    for (k, a), (_, b) in zip(probe.state_dict().items(), back.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)
    if head == "ensemble":
        assert back.vote_weights.tolist() == [2, 1, 1, 1, 2] and back.step == 0.05
    # a file whose tensors do not match its head's probe is refused, naming the file
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    tensors.pop("bias")
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="bad.safetensors: a '" + head):
        load_probe(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("weights", [[2, 1, 0.5, 1, 1], [0, 1, 1, 1, 1], [30, 30, 1, 1, 1], ["x"] * 5, [1, 1]])
def test_bad_vote_weights_are_refused(weights):
    with pytest.raises(ValueError, match="vote weights|streams need"):
        make_probe("ensemble", 8, ProbeInfo(head="ensemble", region="face", head_config={"vote_weights": weights}))
