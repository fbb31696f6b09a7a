"""The tiny world: findings, questions, drawing and the files build_tiny_world writes."""

import hashlib
import json

import numpy as np
import pytest

from llavamed_lite.data.formats import DOMAINS, read_caption_file, read_training_records
from llavamed_lite.synth.draw import render
from llavamed_lite.synth.findings import FindingsError, SCHEMA, sample_findings, validate_findings
from llavamed_lite.synth.questions import describe, questions_for
from llavamed_lite.synth.text import caption, mentions
from llavamed_lite.synth.world import build_tiny_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_tiny_world(tmp_path_factory.mktemp("world"), n_train=40, n_heldout=15, image_size=64, seed=3)


# ---- findings and questions ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("domain", DOMAINS)
def test_findings_have_four_or_more_kinds_and_are_json(domain):
    assert len(SCHEMA[domain]) >= 4
    rng = np.random.default_rng(0)
    for _ in range(20):
        f = sample_findings(domain, rng)
        assert f["domain"] == domain
        assert json.loads(json.dumps(f)) == f
        validate_findings(f)


def test_findings_bad_input_is_named():
    with pytest.raises(FindingsError, match="unknown domain 'xray'"):
        sample_findings("xray", 0)
    f = sample_findings("ct_scan", 1)
    with pytest.raises(FindingsError, match="lesion_count.*negative"):
        validate_findings({**f, "lesion_count": -1})
    with pytest.raises(FindingsError, match="missing field 'cardiomegaly'"):
        validate_findings({"domain": "chest_xray", "nodule": False, "side": None, "zone": None, "size": None})
    with pytest.raises(FindingsError, match="'nodule' = 1"):
        validate_findings({"domain": "chest_xray", "nodule": 1, "side": "left", "zone": "upper", "size": "small",
                           "cardiomegaly": False})
    with pytest.raises(FindingsError, match="must be None"):
        validate_findings({"domain": "mri", "sequence": "T1", "mass": False, "side": "left", "size": None, "oedema": None})
    with pytest.raises(FindingsError, match="expected a dict"):
        validate_findings(["chest_xray"])


@pytest.mark.parametrize("domain", DOMAINS)
def test_questions_have_types_and_balanced_closed_answers(domain):
    rng = np.random.default_rng(1)
    answers = []
    for _ in range(60):
        f = sample_findings(domain, rng)
        qs = questions_for(f, rng)
        assert {"OPEN", "CLOSED"} <= {q["answer_type"] for q in qs}
        for q in qs:
            assert set(q) == {"question", "answer", "answer_type", "question_type", "about"}
            assert q["question"].endswith("?") and q["answer"]
            if q["answer_type"] == "CLOSED":
                assert q["answer"] in ("yes", "no")
                answers.append(q["answer"] == "yes")
        assert describe(f).endswith(".")
    assert 0.3 < np.mean(answers) < 0.7


def test_caption_and_mentions_state_the_findings():
    f = {"domain": "chest_xray", "nodule": True, "side": "left", "zone": "upper", "size": "small", "cardiomegaly": False}
    for seed in range(10):
        text = caption(f, seed)
        assert "left" in text and "upper" in text and "small" in text
        assert all("Fig. 2" in m for m in mentions(f, seed, "Fig. 2"))
    assert "left upper zone" in describe(f)


# ---- drawing -----------------------------------------------------------------------------------------------------
def test_render_sizes_and_bad_size():
    f = sample_findings("histology", 0)
    for size in (64, 97, 336):
        assert render(f, size, 0).size == (size, size)
    for bad in (63, 337, 64.0, "64", True):
        with pytest.raises(ValueError, match="image size must be an integer from 64 to 336"):
            render(f, bad, 0)


def _lr_difference(findings, n=12, size=64):
    """Mean over renders of (right half - left half) brightness."""
    diffs = []
    for seed in range(n):
        a = np.asarray(render(findings, size, seed), np.float32).mean(axis=2)
        diffs.append(a[:, size // 2:].mean() - a[:, : size // 2].mean())
    return float(np.mean(diffs))


def test_patient_left_is_image_right():
    """Radiological convention: an opacity in the patient's left lung brightens the image's right half."""
    base = {"domain": "chest_xray", "nodule": True, "zone": "lower", "size": "large", "cardiomegaly": False}
    assert _lr_difference({**base, "side": "left"}) > _lr_difference({**base, "side": "right"}) + 2
    mass = {"domain": "mri", "sequence": "T2", "mass": True, "size": "large", "oedema": True}
    assert _lr_difference({**mass, "side": "left"}) > _lr_difference({**mass, "side": "right"}) + 2
    # The liver (patient's right) is on the image's left: dark lesions there darken the left half.
    ct = {"domain": "ct_scan", "lesion_count": 3, "size": "large", "contrast": True}
    assert _lr_difference({**ct, "organ": "liver"}) > _lr_difference({**ct, "organ": "spleen"})


def test_findings_are_visible_in_pixels():
    def mean(f, seed):
        return np.asarray(render(f, 64, seed), np.float32).mean()

    heart = {"domain": "chest_xray", "nodule": False, "side": None, "zone": None, "size": None}
    big = np.mean([mean({**heart, "cardiomegaly": True}, s) for s in range(8)])
    normal = np.mean([mean({**heart, "cardiomegaly": False}, s) for s in range(8)])
    assert big > normal + 1
    tissue = {"domain": "histology", "glands": False, "necrosis": False, "atypia": False}
    dense = np.mean([mean({**tissue, "density": "dense"}, s) for s in range(8)])
    sparse = np.mean([mean({**tissue, "density": "sparse"}, s) for s in range(8)])
    assert dense < sparse - 3  # more purple nuclei: darker


# ---- the world on disk ---------------------------------------------------------------------------------------------
def test_world_files_follow_the_llavamed_formats(world):
    train = read_caption_file(world["captions_train"])
    heldout = read_caption_file(world["captions_heldout"])
    assert len(train) == 40 and len(heldout) == 15
    assert {d for r in train for d, v in r["domain"].items() if v} == set(DOMAINS)
    for r in train:
        assert (world["root"] / r["image"]).exists()
        validate_findings(r["findings"])
    vqa, errors = read_training_records(world["vqa_train"])
    assert not errors and {r["answer_type"] for r in vqa} == {"OPEN", "CLOSED"}
    assert all(r["conversations"][0]["value"].startswith("<image>\n") for r in vqa)


def test_splits_share_no_image_or_question(world):
    train = read_caption_file(world["captions_train"])
    heldout = read_caption_file(world["captions_heldout"])
    assert not {r["pair_id"] for r in train} & {r["pair_id"] for r in heldout}
    digests = lambda records: {hashlib.sha256((world["root"] / r["image"]).read_bytes()).hexdigest()  # noqa: E731
                               for r in records}
    assert not digests(train) & digests(heldout)
    vqa_train = json.loads(world["vqa_train"].read_text())
    vqa_heldout = json.loads(world["vqa_heldout"].read_text())
    assert not {r["id"] for r in vqa_train} & {r["id"] for r in vqa_heldout}
    assert not {r["image"] for r in vqa_train} & {r["image"] for r in vqa_heldout}


def test_same_seed_same_bytes_other_seed_differs(world, tmp_path):
    again = build_tiny_world(tmp_path / "again", n_train=40, n_heldout=15, image_size=64, seed=3)
    other = build_tiny_world(tmp_path / "other", n_train=40, n_heldout=15, image_size=64, seed=4)
    for key in ("captions_train", "captions_heldout", "vqa_train", "vqa_heldout"):
        assert again[key].read_bytes() == world[key].read_bytes()
        assert other[key].read_bytes() != world[key].read_bytes()
    name = "images/tw-heldout-00007.png"
    assert (again["root"] / name).read_bytes() == (world["root"] / name).read_bytes()
    assert (other["root"] / name).read_bytes() != (world["root"] / name).read_bytes()


def test_a_small_world_is_byte_identical_to_the_one_before_the_refactor(tmp_path, tree_digest):
    """The digest of every file of an 8 + 2 figure world (seed 5, 64 px), as the code before the question records
    gained `about` and the oa_file_list writer moved wrote it. A PIL or zlib upgrade that re-encodes PNGs changes it
    too: check the world by eye, then update the digest."""
    build_tiny_world(tmp_path, n_train=8, n_heldout=2, image_size=64, seed=5)
    assert tree_digest(tmp_path) == ("d7c34cc9cf9bb7ba", 15)


def test_build_is_idempotent_and_rebuilds_on_new_arguments(tmp_path):
    paths = build_tiny_world(tmp_path, n_train=10, n_heldout=5, seed=0)
    stamp = paths["captions_train"].stat().st_mtime_ns
    build_tiny_world(tmp_path, n_train=10, n_heldout=5, seed=0)
    assert paths["captions_train"].stat().st_mtime_ns == stamp
    build_tiny_world(tmp_path, n_train=5, n_heldout=5, seed=0)
    assert len(json.loads(paths["captions_train"].read_text())) == 5
    assert len(list(paths["images"].glob("*.png"))) == 10


@pytest.mark.parametrize("kwargs, match", [
    ({"n_train": -1}, "n_train must be a non-negative integer"),
    ({"n_heldout": 2.5}, "n_heldout must be a non-negative integer"),
    ({"image_size": 400}, "image size must be an integer from 64 to 336"),
    ({"seed": -3}, "seed must be a non-negative integer"),
])
def test_build_bad_arguments(tmp_path, kwargs, match):
    args = {"n_train": 2, "n_heldout": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_tiny_world(tmp_path, **args)


def test_a_figure_says_the_same_at_every_size():
    from llavamed_lite.synth.world import figure

    small, image64, questions64 = figure("train", 7, 0, 64)
    large, image256, questions256 = figure("train", 7, 0, 256)
    assert small == large and questions64 == questions256
    assert image64.size == (64, 64) and image256.size == (256, 256)


def test_more_findings_are_visible_in_pixels():
    def pixel(f, x, y, seed, size=128):
        """Mean grey level around normalised point (x, y)."""
        a = np.asarray(render(f, size, seed), np.float32).mean(axis=2)
        j, i = int((x + 1) / 2 * size), int((y + 1) / 2 * size)
        return a[i - 2:i + 3, j - 2:j + 3].mean()

    brain = {"domain": "mri", "mass": False, "side": None, "size": None, "oedema": None}
    t2 = np.mean([pixel({**brain, "sequence": "T2"}, 0.1, -0.05, s) for s in range(6)])
    t1 = np.mean([pixel({**brain, "sequence": "T1"}, 0.1, -0.05, s) for s in range(6)])
    assert t2 > t1 + 60  # fluid in the ventricles: bright on T2, dark on T1
    ct = {"domain": "ct_scan", "organ": None, "lesion_count": 0, "size": None}
    aorta_enhanced = np.mean([pixel({**ct, "contrast": True}, 0.06, 0.15, s) for s in range(6)])
    aorta_plain = np.mean([pixel({**ct, "contrast": False}, 0.06, 0.15, s) for s in range(6)])
    assert aorta_enhanced > aorta_plain + 60
    specimen = {"domain": "gross", "organ": "kidney"}
    for seed in range(4):  # the same specimen (same seed) with a dark red lesion, none, or a yellow one
        dark, none, yellow = (np.asarray(render(f, 128, seed), np.float32).mean() for f in (
            {**specimen, "lesion": True, "colour": "dark red", "size": "large"},
            {**specimen, "lesion": False, "colour": None, "size": None},
            {**specimen, "lesion": True, "colour": "yellow", "size": "large"}))
        assert dark < none - 1 < yellow - 2
