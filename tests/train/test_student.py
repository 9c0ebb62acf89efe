"""The student backbone (issue 19): a smaller DINOv3-architecture ViT distilled from the teacher's tokens, read by
the teacher's probe and region head as they are."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dfedge.cli import app
from dfedge.eval.metrics import delong
from dfedge.models import dinov3 as dinov3_lib
from dfedge.models.checkpoint import CheckpointError, save_safetensors, sha256_file
from dfedge.models.factory import DetectorSpec, build_detector, dinov3_config, shipped_file
from dfedge.train.student import MANIFEST_FORMAT, backbone_gflops, student_backbone

pytestmark = pytest.mark.heavy  # minutes of building or training: .ci/run's second command (-m heavy)

runner = CliRunner()


def test_student_is_4x_cheaper_at_toy_size_and_vit_s_at_full_size():
    toy, full = backbone_gflops("toy"), backbone_gflops("full")
    assert toy["ratio"] >= 4.0, toy
    assert 10.0 <= full["ratio"] <= 15.0, full  # ViT-S/16 against ViT-L/16, plus the 384 -> 1024 adapter
    cfg = dinov3_config(DetectorSpec(preset="full", backbone="student"))
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.out_dim, cfg.width) == (384, 12, 6, 1024, 1024)
    assert dinov3_config(DetectorSpec(preset="full")).width == 1024


FACES = {"exact": 100, "distilled": 200}  # the exact index runs the parser: fewer faces (both AUCs move < 0.1 pp)


@pytest.fixture(scope="module")
def scored(toy_faces):
    """Logits and masks of the teacher and of the shipped student on toy:test, each on the exact (first 100 faces)
    and the distilled (200) region index."""
    faces = toy_faces("test", max(FACES.values()))
    out = {}
    for backbone in ("teacher", "student"):
        for index, n in FACES.items():
            det = build_detector(DetectorSpec(preset="toy", backbone=backbone, region_index=index))
            crops = faces.crops(n)
            with torch.no_grad():
                res = [det(torch.from_numpy(crops[i : i + 50])) for i in range(0, n, 50)]
            out[backbone, index] = (torch.cat([r.logit.reshape(-1) for r in res]).numpy(),
                                    torch.cat([r.token_mask for r in res]).numpy() > 0.5)
    return faces.labels(), out


@pytest.mark.parametrize("index", ["exact", "distilled"])
def test_shipped_student_keeps_the_teachers_auc_within_a_point(scored, index):
    """What the student costs on a region index: its AUC against the teacher's on the same index and faces
    (measured: +0.08 pp exact on 100 faces, +0.29 pp distilled on 200)."""
    labels, out = scored
    test = delong(labels[: FACES[index]], out["teacher", index][0], out["student", index][0])
    assert abs(test.delta) <= 0.01, (index, test)
    assert test.auc_b >= 0.85, test  # and it still detects


def test_shipped_student_distilled_masks_agree_with_the_teachers_parser(scored):
    _, out = scored
    exact = out["teacher", "exact"][1]
    assert (out["student", "exact"][1] == exact).all()  # exact: the same parser, the same masks
    assert (out["student", "distilled"][1][: len(exact)] == exact).mean() >= 0.95


def test_shipped_student_carries_its_manifest_and_teacher():
    path = shipped_file("toy", "student")
    assert path is not None and path.stat().st_size < 1_000_000
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["format"] == MANIFEST_FORMAT and manifest["weights_sha256"] == sha256_file(path)
    assert manifest["teacher"]["sha256"] == sha256_file(shipped_file("toy", "dinov3"))
    assert manifest["agreement"]["token_cosine"] >= 0.95 and manifest["agreement"]["region_feature_cosine"] >= 0.95
    assert {r["region_index"] for r in manifest["comparison"]} == {"exact", "distilled"}


def test_student_with_another_teacher_is_refused(tmp_path):
    other = dinov3_lib.DinoV3(dinov3_config(DetectorSpec(preset="toy")))
    path = tmp_path / "other_teacher.safetensors"
    save_safetensors(path, dinov3_lib.to_official(other), {"dfedge_dinov3_config": dinov3_lib.config_json(other.cfg)})
    with pytest.raises(CheckpointError, match="distilled from DINOv3 weights"):
        build_detector(DetectorSpec(preset="toy", backbone="student", dinov3=str(path)))
    with pytest.raises(ValueError, match="--backbone student only"):
        DetectorSpec(preset="toy", student=str(path))


def test_init_from_an_official_small_checkpoint_is_strict(tmp_path):
    spec = DetectorSpec(preset="toy")
    shape = dinov3_lib.PRESETS["toy-student"]
    trunk = dinov3_lib.DinoV3(shape)
    good = tmp_path / "small.pth"
    torch.save(dinov3_lib.to_official(trunk), good)  # the official layout, as Meta's .pth files hold it
    student = student_backbone(spec, good)
    assert torch.equal(student.blocks[0].attn.qkv.weight, trunk.blocks[0].attn.qkv.weight)
    assert student.adapter.weight.shape == (96, 48)
    wrong = tmp_path / "wrong.pth"
    torch.save(dinov3_lib.to_official(dinov3_lib.DinoV3(dinov3_lib.PRESETS["tiny"])), wrong)
    with pytest.raises(CheckpointError, match="wrong.pth"):
        student_backbone(spec, wrong)


def test_distill_backbone_command_writes_a_student_the_detector_reads(tmp_path):
    out = tmp_path / "student.safetensors"
    result = runner.invoke(app, ["distill-backbone", "--faces", "toy:24", "--steps", "30", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["data"]["count"] == 24 and manifest["comparison"] is None
    assert 0.0 < manifest["agreement"]["token_cosine"] <= 1.0
    det = build_detector(DetectorSpec(preset="toy", backbone="student", student=str(out), region_index="distilled"))
    assert det.dinov3.cfg.embed_dim == 48 and det.dinov3.cfg.width == 96
    x = torch.from_numpy(np.full((1, 3, 448, 448), 128.0, np.float32))
    assert det(x).logit.shape == (1,)
    bad = runner.invoke(app, ["distill-backbone", "--faces", "toy:4", "--out", str(tmp_path / "s.pt")])
    assert bad.exit_code != 0 and "must end in .safetensors" in bad.output
