import cv2
import numpy as np
import pytest

from dfedge.data.degrade import FAMILIES, NTIRE, NTIRE_NAMES, NTIRE_OPS, Degradation, apply, as_rgb8, describe, parse_spec
from dfedge.data.synthetic import toy_sample

EVERY_FAMILY = ("jpeg:q=30,resize:scale=0.4,blur:s=2,motion:k=11,noise:sigma=10,chroma,color:m=0.3,compound,"
                "aniso:sx=3;sy=0.5,box:k=5,speckle:sigma=0.2,poisson:peak=20,saltpepper:amount=0.05,grey:m=1,cast:m=0.3,"
                "banding:levels=6,brightness:b=0.1;c=0.3,aberration:px=3,moire:a=15;period=3,glitch:lines=6,"
                "vignette:v=0.5,distractor:size=0.2,ntire:only=all")
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
    assert set(SEEDED) == {"noise", "motion", "color", "compound", "aniso", "speckle", "poisson", "saltpepper", "cast",
                           "moire", "glitch", "distractor", "ntire"}


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
        ("jpeg:q=50,jepg:q=5", r"unknown degradation family 'jepg' \(known: jpeg, resize, .*compound, .*ntire\)"),
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
    "image, message",
    [(np.zeros((8, 8, 3), np.float32), r"expected 8- or 16-bit unsigned samples, got float32 \[8, 8, 3\]"),
     (np.zeros((8, 8, 3), bool), r"got bool"), (np.zeros((8, 8, 3), np.int32), r"got int32"),
     (np.zeros((8, 8, 5), np.uint8), r"\[H, W, 1-4\].*got uint8 \[8, 8, 5\]"), (np.zeros(8, np.uint8), r"got uint8 \[8\]"),
     (np.zeros((0, 8, 3), np.uint8), r"got uint8 \[0, 8, 3\]"), ([[0, 1]], r"got list")],
    ids=["float32", "bool", "int32", "five-channels", "1-d", "empty", "list"],
)
def test_images_without_an_8_bit_scale_or_layout_are_refused(image, message):
    with pytest.raises(ValueError, match=message) as error:
        apply(image, Degradation("jpeg"), seed=0)
    assert "\n" not in str(error.value)


def test_grey_16_bit_and_transparent_images_become_8_bit_rgb_first(face):
    """As the kit's image reader converts files: grey repeated, 16-bit scaled (not clipped), alpha over white."""
    grey = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
    as_rgb = np.repeat(grey[..., None], 3, axis=2)
    for d in (Degradation("banding", {"levels": 6}), Degradation("ntire")):
        expected = apply(as_rgb, d, seed=4)
        assert np.array_equal(apply(grey, d, seed=4), expected) and np.array_equal(apply(grey[..., None], d, seed=4), expected)
        assert np.array_equal(apply(face.astype(np.uint16) * 257, d, seed=4), apply(face, d, seed=4))  # 257 x: exact
    assert as_rgb8(np.full((2, 2), 65535, np.uint16)).tolist() == [[[255] * 3] * 2] * 2  # scaled, not clipped
    assert as_rgb8(np.full((2, 2), 32896, np.uint16))[0, 0, 0] == 128
    rgba = np.dstack([face, np.full(face.shape[:2], 255, np.uint8)])
    assert np.array_equal(as_rgb8(rgba), face)  # opaque: the colour as it is
    rgba[..., 3] = 0
    assert (as_rgb8(rgba) == 255).all()  # transparent: white
    rgba[..., 3] = 128
    half = as_rgb8(rgba).astype(int)
    assert np.abs(half - (face.astype(int) * 128 / 255 + 255 * 127 / 255)).max() <= 1
    assert as_rgb8(np.dstack([grey, np.zeros_like(grey)])).min() == 255  # grey + alpha


# ------------------------------------------------------------------ the NTIRE 2026 engine (issue 20)


def test_ntire_is_seeded_and_its_report_lists_every_operation_then_the_engine(face):
    report = parse_spec("ntire")
    assert [d.label for d in report] == [f"ntire:only={n}" for n in (*NTIRE_NAMES, "all")] and len(NTIRE_OPS) == 15
    assert parse_spec(",".join(d.label for d in report)) == report  # the labels read back without re-expanding
    engine = Degradation("ntire")
    outputs = {apply(face, engine, seed).tobytes() for seed in range(6)}
    assert len(outputs) == 6
    assert apply(face, engine, 11).tobytes() == apply(face.copy(), engine, 11).tobytes()
    with pytest.raises(ValueError, match=r"ntire: only=sharpen is not one of all, cycle, blur"):
        parse_spec("ntire:only=sharpen")


def test_ntire_draws_as_its_recipe_says():
    """Over many seeds: the cycle in ~30 % of images, each operation in ~30 % (the distractor ~15 %), every
    alternative of an operation used, operations in varying order."""
    n = 2000
    chains = [describe(Degradation("ntire"), seed)[len("ntire:only=all["):-1].split(" > ") for seed in range(n)]
    families = [[step.split(":")[0] for step in chain if step] for chain in chains]
    cycle = sum(chain[:2] == ["jpeg", "resize"] and "scale=0.5;interp=bilinear" in c[1] for chain, c in zip(families, chains))
    assert abs(cycle / n - NTIRE["cycle_p"]) < 0.04
    share = {name: sum(name in f for f in families) / n for name in ("vignette", "banding", "glitch", "distractor", "moire")}
    for name, p in share.items():
        assert abs(p - (0.15 if name == "distractor" else 0.3)) < 0.04, share
    for alternative in ("blur", "aniso", "box", "speckle", "poisson", "saltpepper", "grey", "cast"):
        assert any(alternative in f for f in families), alternative
    orders = {tuple(x for x in f if x in ("vignette", "banding")) for f in families}
    assert ("vignette", "banding") in orders and ("banding", "vignette") in orders


@pytest.mark.parametrize("name", NTIRE_NAMES)
def test_each_ntire_operation_alone_is_seeded_and_changes_the_image(face, name):
    d = Degradation("ntire", {"only": name})
    a = apply(face, d, seed=5)
    assert a.tobytes() == apply(face, d, seed=5).tobytes() and a.shape == face.shape and a.dtype == np.uint8
    assert not np.array_equal(a, face)
    steps = describe(d, 5)[len(f"ntire:only={name}["):-1].split(" > ")
    assert len(steps) >= 1 and all(parse_spec(step) for step in steps)


def test_jpeg_quality_is_monotone_in_file_size_and_in_loss(face):
    """Lower quality drops more detail: the degraded image is further from the original and, saved again at one
    fixed quality, a smaller file."""
    qualities = (10, 25, 50, 75, 95)
    degraded = [apply(face, Degradation("jpeg", {"q": q}), 0) for q in qualities]
    sizes = [len(cv2.imencode(".jpg", d, [cv2.IMWRITE_JPEG_QUALITY, 95])[1]) for d in degraded]
    assert sizes == sorted(sizes) and sizes[0] < 0.8 * sizes[-1], sizes
    psnr = [cv2.PSNR(face, d) for d in degraded]
    assert psnr == sorted(psnr), psnr


@pytest.mark.parametrize("levels", [2, 4, 7, 32])
def test_banding_leaves_at_most_its_levels(face, levels):
    out = apply(face, Degradation("banding", {"levels": levels}), seed=0)
    for channel in range(3):
        assert len(np.unique(out[..., channel])) <= levels
    assert {0, 255} >= set(np.unique(apply(face, Degradation("banding", {"levels": 2}), 0)).tolist())


def test_greyscale_cast_vignette_and_aberration_do_what_they_say(face):
    grey = apply(face, Degradation("grey", {"m": 1.0}), 0).astype(int)
    assert np.abs(grey[..., 0] - grey[..., 1]).max() <= 1 and np.abs(grey[..., 1] - grey[..., 2]).max() <= 1
    cast = apply(face, Degradation("cast", {"m": 0.4}), 3).astype(float)
    gains = cast.reshape(-1, 3).sum(0) / face.reshape(-1, 3).astype(float).sum(0)
    assert np.ptp(gains) > 0.05 and ((gains > 0.55) & (gains < 1.45)).all()  # one gain per channel, within +-40 %
    flat = np.full((64, 96, 3), 200, np.uint8)
    vignetted = apply(flat, Degradation("vignette", {"v": 0.6}), 0)
    assert vignetted[32, 48, 0] >= 199 and vignetted[0, 0, 0] < vignetted[16, 24, 0] < vignetted[32, 48, 0]
    shifted = apply(face, Degradation("aberration", {"px": 4}), 0)
    assert np.array_equal(shifted[..., 1], face[..., 1]) and not np.array_equal(shifted[..., 0], face[..., 0])


def test_noise_families_move_pixels_as_their_model_says(face):
    sp = apply(face, Degradation("saltpepper", {"amount": 0.1}), 0)
    changed = (sp != face).any(axis=2)
    assert 0.05 < changed.mean() < 0.11 and set(np.unique(sp[changed])) <= {0, 255}
    dark = np.full((64, 64, 3), 10, np.uint8)
    bright = np.full((64, 64, 3), 240, np.uint8)
    for family, params in (("speckle", {"sigma": 0.2}), ("poisson", {"peak": 50.0})):
        d = Degradation(family, params)  # signal-dependent noise: brighter pixels move more
        assert apply(bright, d, 1).astype(float).std() > 2 * apply(dark, d, 1).astype(float).std()
