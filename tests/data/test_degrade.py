import cv2
import numpy as np
import pytest

from dfedge.data.degrade import FAMILIES, Degradation, apply, describe, parse_spec
from dfedge.data.synthetic import toy_sample

EVERY_FAMILY = "jpeg:q=30,resize:scale=0.4,blur:s=2,motion:k=11,noise:sigma=10,chroma,color:m=0.3,compound"
SEEDED = [name for name, family in FAMILIES.items() if family.random]
UNSEEDED = [name for name, family in FAMILIES.items() if not family.random]


@pytest.fixture(scope="module")
def face():
    image = toy_sample(0, "test").image
    assert image.shape == (448, 448, 3) and image.dtype == np.uint8
    return image


def ycrcb(image):
    return cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb).astype(np.float32)


def test_the_spec_covers_every_family():
    assert {d.family for d in parse_spec(EVERY_FAMILY)} == set(FAMILIES)
    assert set(SEEDED) == {"noise", "motion", "color", "compound"}


@pytest.mark.parametrize("degradation", parse_spec(EVERY_FAMILY), ids=lambda d: d.family)
def test_same_seed_gives_identical_bytes_and_leaves_the_input_alone(face, degradation):
    before = face.copy()
    a, b = apply(face, degradation, seed=7), apply(face, degradation, seed=7)
    assert a.tobytes() == b.tobytes()
    assert np.array_equal(face, before)
    assert not np.array_equal(a, face)


@pytest.mark.parametrize("family", SEEDED)
def test_seeded_families_change_with_the_seed(face, family):
    d = Degradation(family)
    assert not np.array_equal(apply(face, d, seed=1), apply(face, d, seed=2))


@pytest.mark.parametrize("family", UNSEEDED)
def test_fixed_families_ignore_the_seed(face, family):
    d = Degradation(family)
    assert np.array_equal(apply(face, d, seed=1), apply(face, d, seed=2))


@pytest.mark.parametrize("degradation", parse_spec(EVERY_FAMILY), ids=lambda d: d.family)
@pytest.mark.parametrize("shape", [(448, 448, 3), (101, 77, 3)])
def test_shape_and_dtype_are_kept(degradation, shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    for seed in range(3):
        out = apply(image, degradation, seed)
        assert out.shape == shape and out.dtype == np.uint8


@pytest.mark.parametrize(
    "spec",
    [
        "jpeg:q=90,jpeg:q=50,jpeg:q=10",
        "resize:scale=0.75,resize:scale=0.5,resize:scale=0.25",
        "blur:s=0.5,blur:s=1.5,blur:s=4",
        "noise:sigma=2,noise:sigma=8,noise:sigma=25",
        "motion:k=3;angle=30,motion:k=9;angle=30,motion:k=21;angle=30",
        "color:m=0.1,color:m=0.3,color:m=0.8",
    ],
    ids=lambda spec: spec.split(":")[0],
)
def test_psnr_falls_as_strength_grows(face, spec):
    psnr = [cv2.PSNR(face, apply(face, d, seed=0)) for d in parse_spec(spec)]
    assert psnr[0] < 60  # even the mildest setting degrades
    assert psnr[0] > psnr[1] + 0.5 > psnr[2] + 1.0, psnr


def test_chroma_keeps_luma_and_changes_chroma(face):
    before, after = ycrcb(face), ycrcb(apply(face, Degradation("chroma"), seed=0))
    luma = np.abs(after[..., 0] - before[..., 0])
    chroma = np.abs(after[..., 1:] - before[..., 1:])
    assert luma.mean() < 0.6 and luma.max() <= 4
    assert chroma.mean() > 3 * luma.mean() and chroma.max() >= 8


def test_motion_blur_follows_its_angle():
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::4] = 255  # vertical lines: blurring along them keeps them, across them washes them out
    along = apply(stripes, parse_spec("motion:k=9;angle=90")[0], seed=0)
    across = apply(stripes, parse_spec("motion:k=9;angle=0")[0], seed=0)
    assert cv2.PSNR(stripes, along) > cv2.PSNR(stripes, across) + 10


def test_spec_round_trips_through_labels():
    spec = "jpeg:q=30,jpeg:q=70,motion:k=9;angle=30,resize:scale=0.5;interp=area,chroma,compound"
    degradations = parse_spec(spec)
    assert [d.label for d in degradations] == [
        "jpeg:q=30", "jpeg:q=70", "motion:k=9;angle=30", "resize:scale=0.5;interp=area", "chroma", "compound",
    ]
    assert parse_spec(",".join(d.label for d in degradations)) == degradations
    assert parse_spec(" blur : s = 1.5 ") == [Degradation("blur", {"s": 1.5})]


def test_missing_params_take_the_defaults():
    jpeg, motion, resize = parse_spec("jpeg,motion:k=5,resize")
    assert jpeg == Degradation("jpeg") and jpeg.params == FAMILIES["jpeg"].defaults
    assert jpeg.label == f"jpeg:q={FAMILIES['jpeg'].defaults['q']}"
    assert motion.params == {"k": 5, "angle": None} and motion.label == "motion:k=5"
    assert resize.params == FAMILIES["resize"].defaults


@pytest.mark.parametrize(
    "spec, message",
    [
        ("jpeg:q=50,jepg:q=5", r"unknown degradation family 'jepg' \(known: jpeg, resize, .*compound\)"),
        ("blur:sigma=2", r"unknown parameter 'sigma' for blur \(known: s\)"),
        ("chroma:f=2", r"unknown parameter 'f' for chroma \(known: none\)"),
        ("jpeg:q", r"malformed parameter 'q'"),
        ("jpeg:q=high", r"jpeg: q=high is not an int"),
        ("jpeg:q=0", r"outside \[1, 100\]"),
        ("resize:interp=fancy", r"not one of nearest, bilinear"),
        ("jpeg:q=3;q=4", r"parameter 'q' given twice"),
        ("jpeg,,blur", r"empty entry"),
    ],
)
def test_spec_errors_name_the_culprit(spec, message):
    with pytest.raises(ValueError, match=message) as error:
        parse_spec(spec)
    assert "\n" not in str(error.value)


def test_compound_chains_differ_across_seeds_and_are_described(face):
    compound = Degradation("compound")
    chains = [describe(compound, seed) for seed in range(12)]
    assert len(set(chains)) >= 10
    assert describe(compound, 5) == chains[5]
    for chain in chains:
        assert chain.startswith("compound[") and chain.endswith("]")
        steps = parse_spec(chain[len("compound["):-1].replace(" > ", ","))
        assert 2 <= len(steps) <= 4 and "compound" not in {s.family for s in steps}
    assert len({s.split(":")[0] for c in chains for s in c[9:-1].split(" > ")}) >= 5  # the chains use most families
    outputs = [apply(face, compound, seed) for seed in range(4)]
    assert len({o.tobytes() for o in outputs}) == 4


def test_describe_gives_the_seeded_parameters(face):
    motion = Degradation("motion", {"k": 9})
    concrete = describe(motion, seed=3)
    assert concrete.startswith("motion:k=9;angle=")
    assert np.array_equal(apply(face, motion, seed=3), apply(face, parse_spec(concrete)[0], seed=0))
    assert describe(Degradation("jpeg", {"q": 20}), seed=3) == "jpeg:q=20"


@pytest.mark.parametrize(
    "image", [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8)],
    ids=["float32", "gray", "rgba"],
)
def test_other_inputs_are_refused(image):
    with pytest.raises(ValueError, match=r"expected a uint8 RGB image \[H, W, 3\]"):
        apply(image, Degradation("jpeg"), seed=0)
