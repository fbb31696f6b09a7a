"""Domain classification (caption vocabulary, zero-shot CLIP code path, scores), filters and alignment records."""


import numpy as np
import pytest
from PIL import Image

from llavamed_lite.data.alignment import BRIEF_INSTRUCTIONS, alignment_records
from llavamed_lite.data.domains import (LABELS, ImageDomainClassifier, classify_caption, combine, score,
                                        slake_images, vqa_rad_images)
from llavamed_lite.data.filters import Deduplicator, FilterConfig, caption_key, hamming, open_image, phash
from llavamed_lite.data.formats import IMAGE_TOKEN, RecordError
from llavamed_lite.data.jats import parse_article
from llavamed_lite.paths import data_sample


@pytest.mark.parametrize("caption, domain", [
    ("Chest X-ray (CXR) showing clear lungs.", "chest_xray"),
    ("Frontal radiograph of the chest with bilateral infiltrates.", "chest_xray"),
    ("PA chest radiograph: cardiomegaly.", "chest_xray"),
    ("Plain X-ray of the left knee after trauma.", "other"),  # not a chest film
    ("Axial contrast-enhanced CT of the abdomen.", "ct_scan"),
    ("Computed tomography showed a hypodense lesion.", "ct_scan"),
    ("Sagittal T1-weighted MR image with gadolinium.", "mri"),
    ("FLAIR and DWI sequences of the brain.", "mri"),
    ("Haematoxylin and eosin staining, original magnification x400.", "histology"),
    ("Immunohistochemistry for CD20 in the biopsy.", "histology"),
    ("Gross photograph of the resected specimen; cut surface is yellow.", "gross"),
    ("Kaplan-Meier survival curves of both groups.", "other"),
    ("", "other"),
    ("CT (A) and MRI (B) of the same lesion.", "ct_scan"),  # a tie goes to the domain named first
])
def test_caption_vocabulary(caption, domain):
    assert classify_caption(caption) == domain


def test_real_articles_are_outside_the_five_domains():
    root = data_sample("real_pmc", "articles")
    captions = [f.caption for p in sorted(root.rglob("*.*xml")) for f in parse_article(p).figures if f.caption]
    assert len(captions) == 11 and {classify_caption(c) for c in captions} == {"other"}


def test_combine_prefers_the_caption():
    assert combine("mri", "ct_scan") == "mri"
    assert combine("other", "ct_scan") == "ct_scan"
    assert combine("other", None) == "other"


def test_scores():
    s = score(["mri", "mri", "ct_scan", "other"], ["mri", "ct_scan", "ct_scan", "mri"])
    assert s.per_domain["mri"] == {"precision": 0.5, "recall": 0.5, "support": 2}
    assert s.per_domain["ct_scan"] == {"precision": 0.5, "recall": 1.0, "support": 1}
    assert s.accuracy == 0.5 and s.confusion["mri"] == {"mri": 1, "ct_scan": 1}
    assert "accuracy 0.500" in s.table()
    with pytest.raises(ValueError, match="3 true labels but 2"):
        score(["a", "b", "c"], ["a", "b"])


def test_zero_shot_classifier_code_path(tiny_towers):
    """A tiny random CLIP saved locally, the tokenizer found in the sibling lm/ folder (the tiny foundation layout)."""
    clip_dir, lm_dir = tiny_towers
    clf = ImageDomainClassifier(clip_dir)
    images = [Image.new("RGB", (40, 30), (i * 40, 0, 0)) for i in range(5)]
    probs = clf.probabilities(images)
    assert probs.shape == (5, 5) and np.allclose(probs.sum(-1).numpy(), 1, atol=1e-5)
    assert set(clf.classify(images, batch_size=2)) <= set(LABELS)
    unsure = ImageDomainClassifier(clip_dir, lm_dir, other_prompts=["a diagram"], min_prob=0.99)
    assert unsure.labels[-1] == "other" and unsure.classify(images) == ["other"] * 5


def test_real_images_with_known_modality():
    slake = slake_images(data_sample("slake", "Slake1.0"))
    assert len(slake) == 96 and {d for _, d in slake} == {"chest_xray", "ct_scan", "mri"}
    assert all(p.is_file() for p, _ in slake)
    rad = vqa_rad_images(data_sample("vqa_rad", "data_RAD"))
    assert len(rad) >= 20 and all(p.is_file() for p, _ in rad)


def _noise(seed, size=64):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).resize((size, size), Image.Resampling.BILINEAR)


def test_perceptual_hash_finds_near_duplicates():
    a = _noise(0)
    resized = a.resize((97, 97)).convert("RGB")
    other = _noise(1)
    assert hamming(phash(a), phash(resized)) <= 4
    assert hamming(phash(a), phash(other)) > 12
    d = Deduplicator(near_bits=4)
    d.add("h1", phash(a), "Figure 1. A chest radiograph.")
    assert d.check("h1", phash(other), "x") == "duplicate image"
    assert d.check("h2", phash(resized), "x") == "near-duplicate image"
    assert d.check("h3", phash(other), "Fig. 2: a chest  radiograph") == "duplicate caption"
    assert d.check("h3", phash(other), "A CT scan.") is None
    assert caption_key("Figure 3B. Chest, X-ray!") == "chest x ray"


def test_open_image_reasons(tmp_path):
    cfg = FilterConfig(min_image_side=32, max_image_side=1000)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really")
    _noise(0, 16).save(tmp_path / "small.png")
    _noise(0, 64).resize((1200, 40)).save(tmp_path / "wide.png")
    _noise(0, 64).save(tmp_path / "ok.png")
    assert open_image(tmp_path / "bad.jpg", cfg) == (None, "unreadable image")
    assert open_image(tmp_path / "small.png", cfg) == (None, "image too small")
    assert open_image(tmp_path / "wide.png", cfg) == (None, "image too large")
    image, reason = open_image(tmp_path / "ok.png", cfg)
    assert reason is None and image.mode == "RGB"


def test_alignment_records(tmp_path):
    (tmp_path / "images").mkdir()
    records = []
    for i in range(40):
        _noise(i, 8).save(tmp_path / "images" / f"tw-{i}.png")
        records.append({"pair_id": f"tw-{i}", "fig_caption": f"Caption {i}.", "image": f"images/tw-{i}.png"})
    out = alignment_records(records, tmp_path, seed=3)
    assert out == alignment_records(records, tmp_path, seed=3)
    assert out != alignment_records(records, tmp_path, seed=4)
    first_turns = [r["conversations"][0]["value"] for r in out]
    assert {t.startswith(IMAGE_TOKEN) for t in first_turns} == {True, False}  # both sides occur
    assert all(t.replace(IMAGE_TOKEN, "").strip() in BRIEF_INSTRUCTIONS for t in first_turns)
    assert out[5]["conversations"][1] == {"from": "gpt", "value": "Caption 5."} and out[5]["image"] == "images/tw-5.png"
    # LLaVA-Med's convention without an image field: {pair_id}.jpg under the image folder
    Image.new("RGB", (4, 4)).save(tmp_path / "p1.jpg")
    assert alignment_records([{"pair_id": "p1", "fig_caption": "c"}], tmp_path)[0]["image"] == "p1.jpg"
    with pytest.raises(RecordError, match=r"pair_id 'p2'.*does not exist"):
        alignment_records([{"pair_id": "p2", "fig_caption": "c"}], tmp_path)
    with pytest.raises(RecordError, match="empty 'fig_caption'"):
        alignment_records([{"pair_id": "p1", "fig_caption": " "}], tmp_path)
    assert len(BRIEF_INSTRUCTIONS) == 10


@pytest.mark.slow
def test_stage0_clip_classifies_tiny_world_figures(tmp_path):
    """The committed stage-0 CLIP, zero-shot as curation uses it at tiny scale (measured 1.00 on 300 held-out)."""
    from llavamed_lite.config import load_config
    from llavamed_lite.data.curate import image_classifier_for
    from llavamed_lite.data.domains import evaluate_image_classifier
    from llavamed_lite.data.formats import read_caption_file, record_domain
    from llavamed_lite.paths import TINY_FOUNDATION
    from llavamed_lite.synth.world import build_tiny_world

    if not (TINY_FOUNDATION / "clip" / "config.json").exists():
        pytest.skip("the stage-0 CLIP is not in data_samples/tiny-foundation")
    world = build_tiny_world(tmp_path, n_train=0, n_heldout=50, image_size=64)
    items = [(world["root"] / c["image"], record_domain(c)) for c in read_caption_file(world["captions_heldout"])]
    scores = evaluate_image_classifier(image_classifier_for("auto", load_config("tiny")), items)
    assert scores.accuracy >= 0.9, scores.table()
