import math
import os
import pickle
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from dfedge.models.checkpoint import CheckpointError, sha256_file
from dfedge.models.dinov3 import (
    PRESETS, DinoV3, from_official, hf_to_official, load_dinov3, official_to_hf, rope_tables, to_official,
)

TINY = PRESETS["tiny"]


def official_key_names(depth: int) -> set[str]:
    """The official DINOv3 key set, spelled out as facebookresearch/dinov3 names it (not derived from our code)."""
    top = {"cls_token", "storage_tokens", "mask_token", "patch_embed.proj.weight", "patch_embed.proj.bias",
           "rope_embed.periods", "norm.weight", "norm.bias"}
    per_block = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.qkv.bias_mask",
                 "attn.proj.weight", "attn.proj.bias", "ls1.gamma", "norm2.weight", "norm2.bias",
                 "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "ls2.gamma"]
    return top | {f"blocks.{i}.{k}" for i in range(depth) for k in per_block}


@pytest.fixture()
def source():
    torch.manual_seed(0)
    model = DinoV3(TINY)
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.qkv.bias.normal_(0, 0.1)
            blk.attn.qkv.bias[TINY.embed_dim : 2 * TINY.embed_dim] = 0  # upstream masks the key bias
    return model


def test_official_layout_has_exact_keys_and_loads_strictly(source, tmp_path):
    sd = to_official(source)
    assert set(sd) == official_key_names(TINY.depth)
    assert len(official_key_names(24)) == 368  # ViT-L/16: 8 + 15 x 24
    assert sd["rope_embed.periods"].dtype == torch.bfloat16
    path = tmp_path / "dinov3_tiny.pth"
    torch.save(sd, path)
    loaded = load_dinov3(path, TINY)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        for a, b in zip(loaded(x), source(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bias_mask_is_folded_into_the_qkv_bias(source):
    sd = to_official(source)
    d = TINY.embed_dim
    sd["blocks.0.attn.qkv.bias"][d : 2 * d] = 5.0  # a key bias that the mask must remove
    folded = from_official(sd, TINY, "test")
    assert "blocks.0.attn.qkv.bias_mask" not in folded
    assert torch.all(folded["blocks.0.attn.qkv.bias"][d : 2 * d] == 0)
    torch.testing.assert_close(folded["blocks.0.attn.qkv.bias"][:d], sd["blocks.0.attn.qkv.bias"][:d])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda sd: sd.pop("blocks.1.ls2.gamma"), "missing key 'blocks.1.ls2.gamma'"),
        (lambda sd: sd.__setitem__("blocks.0.extra.weight", torch.zeros(3)), "unexpected key 'blocks.0.extra.weight'"),
        (lambda sd: sd.__setitem__("norm.weight", torch.zeros(65)), "key 'norm.weight' has shape [65], expected [64]"),
        (lambda sd: sd["blocks.0.attn.qkv.bias_mask"].fill_(float("nan")), "'blocks.0.attn.qkv.bias_mask' holds non-finite"),
    ],
)
def test_bad_key_fails_with_one_line_naming_it(source, tmp_path, mutate, message):
    sd = to_official(source)
    mutate(sd)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        load_dinov3(path, TINY)
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_truncated_file_fails_cleanly(source, tmp_path):
    path = tmp_path / "cut.pth"
    torch.save(to_official(source), path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_dinov3(path, TINY)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({"cls_token": payload}, f, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_dinov3(path, TINY)
    assert not marker.exists()


def test_sha256_pin_is_checked(source, tmp_path):
    path = tmp_path / "w.pth"
    torch.save(to_official(source), path)
    with pytest.raises(CheckpointError, match="does not match the pinned"):
        load_dinov3(path, TINY, sha256="deadbeef" * 8)
    actual = sha256_file(path)
    assert load_dinov3(path, TINY, sha256=actual.upper()).cfg.depth == TINY.depth  # case and spaces do not matter
    with pytest.raises(ValueError, match="is not a SHA-256: give all 64 hex digits"):  # a prefix pins nothing
        load_dinov3(path, TINY, sha256=actual[:8])


@pytest.mark.parametrize("ffn", ["mlp", "swiglu"])
def test_hf_key_map_round_trips(ffn):
    cfg = replace(TINY, ffn_layer=ffn, ffn_ratio=6.0 if ffn == "swiglu" else 4.0)
    sd = to_official(DinoV3(cfg))
    back = hf_to_official(official_to_hf(sd, cfg), cfg)
    assert set(back) == set(sd)
    for k in sd:
        torch.testing.assert_close(back[k].float(), sd[k].float(), rtol=0, atol=0, msg=k)


def test_matches_the_transformers_implementation(tmp_path):
    """An independent implementation: HF's DINOv3ViTModel, loaded through our key map, gives our outputs."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(1)
    hf = DINOv3ViTModel(DINOv3ViTConfig(
        hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, image_size=224,
        num_register_tokens=4, layerscale_value=0.5,
    )).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "bias" in name or "token" in name:
                p.normal_(0, 0.1)
    path = tmp_path / "hf.safetensors"
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(path))
    ours = load_dinov3(path, TINY)
    # HF uses exact fp32 periods (the official checkpoints round them through bf16); compare like for like.
    j = torch.arange(TINY.head_dim // 4, dtype=torch.float32)
    ours.rope_embed.periods.copy_(100.0 ** (2 * j / (TINY.head_dim // 2)))
    ours.rope_embed.refresh()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = hf(pixel_values=x).last_hidden_state
        patches, cls, regs = ours(x)
    torch.testing.assert_close(cls, ref[:, 0], rtol=0, atol=1e-5)
    torch.testing.assert_close(regs, ref[:, 1:5], rtol=0, atol=1e-5)
    torch.testing.assert_close(patches, ref[:, 5:], rtol=0, atol=1e-5)


def test_rope_tables_follow_the_formula():
    periods = torch.tensor([1.0, 3.1, 10.0, 31.6])  # head_dim 16
    grid, prefix = 3, 5
    sin, cos = rope_tables(periods, grid, prefix)
    assert sin.shape == cos.shape == (prefix + grid * grid, 16)
    assert torch.all(sin[:prefix] == 0) and torch.all(cos[:prefix] == 1)
    for i in range(grid):
        for j in range(grid):
            y, x = 2 * (i + 0.5) / grid - 1, 2 * (j + 0.5) / grid - 1
            angles = [2 * math.pi * y / p for p in periods.tolist()] + [2 * math.pi * x / p for p in periods.tolist()]
            expected = torch.tensor(angles * 2)
            t = prefix + i * grid + j
            torch.testing.assert_close(sin[t], expected.sin(), rtol=0, atol=1e-6)
            torch.testing.assert_close(cos[t], expected.cos(), rtol=0, atol=1e-6)


def test_loading_periods_rebuilds_the_tables(source):
    sd = to_official(source)
    sd["rope_embed.periods"] = (sd["rope_embed.periods"].float() * 2).to(torch.bfloat16)
    model = DinoV3(TINY)
    model.load_state_dict(from_official(sd, TINY, "test"))
    sin, _ = rope_tables(sd["rope_embed.periods"].float(), TINY.grid, TINY.num_prefix_tokens)
    torch.testing.assert_close(model.rope_embed.sin, sin)


@pytest.mark.parametrize("name, params", [
    ("vits16", 21_601_152), ("vitb16", 85_669_632), ("vitl16", 303_154_176), ("vith16plus", 840_633_600),
])
def test_full_size_presets_have_the_documented_parameter_counts(name, params):
    with torch.device("meta"):
        model = DinoV3(PRESETS[name])
    assert sum(p.numel() for p in model.parameters()) == params


def test_wrong_input_size_is_refused(source):
    with pytest.raises(ValueError, match="built for 224x224"):
        source(torch.zeros(1, 3, 448, 448))


def test_declared_architecture_is_checked_against_the_tensors_before_allocating(source, tmp_path, monkeypatch):
    """A small file whose metadata claims ViT-L: refused by the key/shape check, and no ViT-L is ever allocated
    (DINOv3 modules are built on the meta device only, to read the expected shapes)."""
    from dfedge.models import dinov3 as lib
    from dfedge.models.checkpoint import save_safetensors

    path = tmp_path / "claims_vitl.safetensors"
    save_safetensors(path, to_official(source), {"dfedge_dinov3_config": lib.config_json(PRESETS["vitl16"])})
    devices, init = [], lib.DinoV3.__init__

    def recording_init(self, cfg):
        devices.append(torch.empty(0).device.type)  # the device torch.device(...) contexts put new tensors on
        init(self, cfg)

    monkeypatch.setattr(lib.DinoV3, "__init__", recording_init)
    with pytest.raises(CheckpointError, match="claims_vitl.safetensors: "):
        load_dinov3(path)
    assert devices and set(devices) == {"meta"}


def test_unknown_metadata_fields_are_one_line(source, tmp_path):
    from dfedge.models import dinov3 as lib
    from dfedge.models.checkpoint import save_safetensors

    path = tmp_path / "odd.safetensors"
    config = lib.config_json(TINY).replace('{"', '{"colour": 1, "', 1)
    save_safetensors(path, to_official(source), {"dfedge_dinov3_config": config})
    with pytest.raises(CheckpointError, match=r"odd.safetensors: bad 'dfedge_dinov3_config' metadata: .*colour"):
        load_dinov3(path)
