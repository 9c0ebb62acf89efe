import json
import warnings
from dataclasses import replace

import pytest
import torch
from torch import nn

from typer.testing import CliRunner

from dfedge.cli import app
from dfedge.models.checkpoint import CheckpointError, read_torchscript
from dfedge.models.factory import DetectorSpec, build_region_index, dinov3_config
from dfedge.models.farl import (
    HEADS_KEY, LABEL_SETS, PRESETS, FarlParser, PackedSelfAttention, archive_bound, convert_parser, expected_shapes,
    load_parser,
)

TINY = PRESETS["tiny"]


def facer_like_torchscript(parser: FarlParser, path) -> None:
    """Script the parser into a `.pt` with facer's layout: mmseg's AdaptiveAvgPool2d (no state) in the PPM,
    `backbone`/`head` submodules and an `out_size` attribute."""
    for seq, scale in zip(parser.head.head.psp_modules, parser.cfg.pool_scales):
        seq[0] = nn.AdaptiveAvgPool2d(scale)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(parser).save(str(path))


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    parser = FarlParser(TINY)
    with torch.no_grad():  # non-trivial BN statistics, so a BN key mix-up would show
        for m in parser.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return parser


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(1)
    return torch.rand(2, 3, 448, 448)


@pytest.fixture(scope="module")
def jit_file(source, tmp_path_factory):
    path = tmp_path_factory.mktemp("facer") / "face_parsing.farl.lapa.tiny_jit.pt"
    clone = FarlParser(TINY)
    clone.load_state_dict(source.state_dict())
    clone.out_size = [512, 512]
    facer_like_torchscript(clone, path)
    return path


def test_keys_follow_facer_layout():
    keys = set(expected_shapes(PRESETS["farl-b-lapa"]))
    for k in [
        "backbone.image_mean", "backbone.image_std", "backbone.visual.conv1.weight",
        "backbone.visual.class_embedding", "backbone.visual.positional_embedding", "backbone.visual.proj",
        "backbone.visual.transformer.resblocks.11.attn.in_proj_weight",
        "backbone.visual.transformer.resblocks.11.attn.out_proj.bias",
        "backbone.visual.transformer.resblocks.0.mlp.c_fc.weight", "backbone.fpns.0.0.weight",
        "backbone.fpns.0.1.num_batches_tracked", "backbone.fpns.0.3.bias", "backbone.fpns.1.weight",
        "head.head.psp_modules.3.1.conv.weight", "head.head.psp_modules.0.1.bn.running_var",
        "head.head.bottleneck.conv.weight", "head.head.lateral_convs.2.bn.weight", "head.head.fpn_convs.0.conv.weight",
        "head.head.fpn_bottleneck.conv.weight", "head.head.conv_seg.weight",
    ]:
        assert k in keys, k
    shapes = expected_shapes(PRESETS["farl-b-lapa"])
    assert shapes["backbone.visual.positional_embedding"] == (785, 768)
    assert shapes["head.head.fpn_bottleneck.conv.weight"] == (768, 3072, 3, 3)
    assert shapes["head.head.bottleneck.conv.weight"] == (768, 768 * 5, 3, 3)
    assert shapes["head.head.conv_seg.weight"] == (11, 768, 1, 1)


def test_full_size_parser_parameter_count():
    with torch.device("meta"):
        parser = FarlParser(PRESETS["farl-b-lapa"])
    assert sum(p.numel() for p in parser.parameters()) == 161_582_603


def test_label_sets_are_exact():
    assert LABEL_SETS["lapa"] == ("background", "face", "rb", "lb", "re", "le", "nose", "ulip", "imouth", "llip", "hair")
    assert len(LABEL_SETS["celebm"]) == 19
    assert LABEL_SETS["celebm"][11:14] == ("imouth", "llip", "ulip")


def test_facer_torchscript_loads_strictly_with_out_size(source, jit_file, image):
    parser = load_parser(jit_file)
    assert parser.cfg.label_set == "lapa" and parser.cfg.num_classes == 11
    assert parser.out_size == [512, 512]
    with torch.no_grad():
        torch.testing.assert_close(parser(image), source(image), rtol=0, atol=1e-5)
    assert parser(image).shape == (2, 11, 112, 112)


def test_convert_parser_writes_safetensors_and_manifest(source, jit_file, image, tmp_path):
    dst = tmp_path / "parser.safetensors"
    manifest = convert_parser(jit_file, dst)
    written = json.loads(dst.with_suffix(".json").read_text())
    assert written == manifest
    assert written["label_names"] == list(LABEL_SETS["lapa"])
    assert written["config"]["out_size"] == [512, 512]
    assert len(written["source_sha256"]) == 64
    converted = load_parser(dst)
    with torch.no_grad():
        torch.testing.assert_close(converted(image), source(image), rtol=0, atol=1e-5)


def test_truncated_torchscript_fails_cleanly(jit_file, tmp_path):
    bad = tmp_path / "cut.pt"
    bad.write_bytes(jit_file.read_bytes()[:4000])
    with pytest.raises(CheckpointError, match="unreadable TorchScript archive"):
        load_parser(bad)


def test_wrong_label_set_is_refused(jit_file):
    with pytest.raises(CheckpointError, match="label set 'celebm' has 19"):
        load_parser(jit_file, label_set="celebm")


def test_mis_shaped_parser_key_is_named(tmp_path):
    parser = FarlParser(TINY)
    parser.head.head.conv_seg = nn.Conv2d(32, 11, kernel_size=3)  # 3x3 instead of 1x1
    path = tmp_path / "bad_jit.pt"
    facer_like_torchscript(parser, path)
    with pytest.raises(CheckpointError, match=r"'head.head.conv_seg.weight' has shape \[11, 32, 3, 3\]"):
        load_parser(path)


def test_packed_attention_matches_nn_multihead_attention():
    torch.manual_seed(0)
    ours = PackedSelfAttention(64, 4)
    ref = nn.MultiheadAttention(64, 4, batch_first=True)
    with torch.no_grad():
        ours.in_proj_bias.normal_()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 10, 64)
    torch.testing.assert_close(ours(x), ref(x, x, x, need_weights=False)[0], rtol=0, atol=1e-6)


def test_parser_at_224_resizes_positional_embedding(jit_file):
    parser = load_parser(jit_file, input_size=224)
    assert parser.backbone.visual.positional_embedding.shape == (1 + 14 * 14, 64)
    assert parser(torch.rand(1, 3, 224, 224)).shape == (1, 11, 56, 56)


class SetstateMarker(nn.Module):
    """A submodule whose scripted __setstate__ prints: what torch.jit.load runs from a file, and the kit must not."""

    def __init__(self) -> None:
        super().__init__()
        self.x = 1

    @torch.jit.export
    def __getstate__(self) -> tuple[int, bool]:
        return (self.x, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[int, bool]) -> None:
        print("dfedge-setstate-ran")
        self.x = state[0]
        self.training = state[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_a_scripted_setstate_never_runs(source, tmp_path, capfd):
    parser = FarlParser(TINY)
    parser.load_state_dict(source.state_dict())
    parser.marker = SetstateMarker()
    path = tmp_path / "setstate_jit.pt"
    facer_like_torchscript(parser, path)
    with pytest.raises(CheckpointError, match="restores its state with its own code .* --trust-torchscript"):
        load_parser(path)
    assert "dfedge-setstate-ran" not in capfd.readouterr().out
    load_parser(path, trust_torchscript=True)  # trusted, torch.jit.load runs the file's code: what the flag says
    assert "dfedge-setstate-ran" in capfd.readouterr().out


def test_torchscript_is_read_as_data_equal_to_what_torch_jit_load_reads(jit_file):
    from dfedge.models.checkpoint import read_torchscript

    tensors, attributes = read_torchscript(jit_file, archive_bound())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jit = torch.jit.load(str(jit_file))
    assert tensors.keys() == jit.state_dict().keys()
    assert all(torch.equal(tensors[k], v) for k, v in jit.state_dict().items())
    assert attributes["out_size"] == [512, 512] and attributes["backbone.output_indices"] == [0, 1, 2, 3]


def test_block_indices_come_from_the_file_not_the_width(tmp_path, image):
    """A 12-layer parser of width 64 (the tiny preset's width): its taps are (3, 5, 7, 11), read from the archive;
    a plain state_dict of the same parser gets the 12-layer preset's taps (and needs its heads); an unknown depth is
    refused."""
    deep = replace(TINY, layers=12, output_indices=(3, 5, 7, 11))
    torch.manual_seed(3)
    source = FarlParser(deep).eval()
    path = tmp_path / "deep_jit.pt"
    clone = FarlParser(deep)
    clone.load_state_dict(source.state_dict())
    facer_like_torchscript(clone, path)
    for loaded in (load_parser(path), convert_and_load(path, tmp_path / "deep.safetensors")):
        assert loaded.cfg.layers == 12 and loaded.cfg.output_indices == (3, 5, 7, 11)
        with torch.no_grad():
            torch.testing.assert_close(loaded(image), source(image), rtol=0, atol=1e-5)
    plain = tmp_path / "deep_state_dict.pt"
    torch.save(source.state_dict(), plain)
    assert load_parser(plain, heads=2).cfg.output_indices == (3, 5, 7, 11)  # no 12-layer preset is 64 wide
    odd = replace(TINY, layers=6, output_indices=(1, 2, 3, 5))
    torch.save(FarlParser(odd).state_dict(), tmp_path / "six.pt")
    with pytest.raises(CheckpointError, match="6-layer parser and no output_indices in the file"):
        load_parser(tmp_path / "six.pt")


def convert_and_load(src, dst):
    convert_parser(src, dst)
    return load_parser(dst)


def test_a_plain_state_dict_pt_is_accepted_and_a_pickle_is_refused(source, tmp_path, image):
    path = tmp_path / "parser_state_dict.pt"
    torch.save(source.state_dict(), path)
    with torch.no_grad():
        torch.testing.assert_close(load_parser(path)(image), source(image), rtol=0, atol=1e-5)
    torch.save({"model": source}, tmp_path / "module.pt")  # a whole pickled module: code, not weights
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_parser(tmp_path / "module.pt")


# 96 wide, 4 layers: the depth of the tiny preset, a width no preset has, 3 heads (not CLIP's 96 // 64 = 1)
ODD = replace(TINY, width=96, heads=3, input_size=64)
SMALL = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def odd_parser() -> FarlParser:
    torch.manual_seed(5)
    return FarlParser(ODD).eval()


def attention_heads(parser: FarlParser) -> set[int]:
    return {blk.attn.num_heads for blk in parser.backbone.visual.transformer.resblocks}


def test_a_parser_of_non_preset_shape_needs_its_head_count(tmp_path):
    """A state_dict records no head count and no preset has its shape: refused, naming --parser-heads; with the
    count given (load_parser, the DetectorSpec of every command, convert-parser) it loads as the source."""
    source, path = odd_parser(), tmp_path / "odd_state_dict.pt"
    torch.save(source.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"96-wide 4-layer parser .* pass --parser-heads N$"):
        load_parser(path)
    loaded = load_parser(path, heads=3)
    assert loaded.cfg == ODD and attention_heads(loaded) == {3}
    with torch.no_grad():
        torch.testing.assert_close(loaded(SMALL), source(SMALL), rtol=0, atol=1e-5)
    with pytest.raises(CheckpointError, match="attention heads do not split the width 96"):
        load_parser(path, heads=5)
    spec = DetectorSpec(preset="tiny", parser=str(path), parser_heads=3)
    assert build_region_index(spec, dinov3_config(spec))[0].cfg.heads == 3
    refused = CliRunner().invoke(app, ["convert-parser", str(path), str(tmp_path / "no.safetensors")])
    assert refused.exit_code != 0 and "--parser-heads N" in refused.output
    dst = tmp_path / "odd.safetensors"
    result = CliRunner().invoke(app, ["convert-parser", str(path), str(dst), "--parser-heads", "3"])
    assert result.exit_code == 0, result.output
    assert load_parser(dst).cfg.heads == 3


def test_the_head_count_a_torchscript_archive_records_is_read_and_never_overridden(tmp_path):
    """A scripted parser records `num_heads` in its attention modules: read as data and by torch.jit.load, kept in
    the converted file; a different --parser-heads is refused, not chosen."""
    source, path = odd_parser(), tmp_path / "odd_jit.pt"
    clone = FarlParser(ODD)
    clone.load_state_dict(source.state_dict())
    facer_like_torchscript(clone, path)
    assert read_torchscript(path, archive_bound())[1][HEADS_KEY] == 3
    dst = tmp_path / "odd.safetensors"
    convert_parser(path, dst)
    for loaded in (load_parser(path), load_parser(path, trust_torchscript=True), load_parser(dst, heads=3)):
        assert loaded.cfg.heads == 3 and attention_heads(loaded) == {3}
        with torch.no_grad():
            torch.testing.assert_close(loaded(SMALL), source(SMALL), rtol=0, atol=1e-5)
    for file in (path, dst):
        with pytest.raises(CheckpointError, match="records 3 attention heads, not the 1 of --parser-heads"):
            load_parser(file, heads=1)
