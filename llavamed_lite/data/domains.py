"""Domain classification of figures into LLaVA-Med's five domains (chest_xray, ct_scan, mri,
histology, gross) or "other", from the caption (a documented vocabulary) and from the image
(zero-shot CLIP).

The paper kept only figures of the five domains. A caption names its modality far more reliably than
pixels do, so the caption decides; the image classifier is the second opinion for captions that name
none, and the check on pixels that a caption can be wrong about.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..images import load_image
from .formats import DOMAINS

if TYPE_CHECKING:
    import torch

OTHER = "other"
LABELS = DOMAINS + (OTHER,)

# The caption vocabulary: regular expressions (case-insensitive, on word boundaries) per domain. A caption's
# domain is the one with most matches; a tie goes to the domain named first; no match is "other".
# "X-ray" alone is not chest_xray (a knee film is not in LLaVA-Med's five domains): it needs chest/lung/thorax.
VOCABULARY: dict[str, list[str]] = {
    "chest_xray": [r"(chest|thora\w*|lung|pulmonary)\W+(\w+\W+){0,2}(radiograph\w*|x-?\s?rays?|films?)",
                   r"(radiograph\w*|x-?\s?rays?|films?) of the (chest|thorax|lungs?)", r"cxr", r"posteroanterior",
                   r"pa (chest|view|radiograph)", r"anteroposterior chest"],
    "ct_scan": [r"ct", r"cect", r"ncct", r"hrct", r"cta", r"mdct", r"computed tomograph\w*", r"ct scans?",
                r"tomodensitometr\w*", r"hounsfield", r"hypodense", r"hyperdense", r"low-attenuation"],
    "mri": [r"mri", r"mr image\w*", r"mr imaging", r"magnetic resonance", r"t[12]-?\s?weighted", r"t[12]w",
            r"flair", r"diffusion-weighted", r"dwi", r"adc map", r"gadolinium"],
    "histology": [r"h\s?&\s?e", r"ha?ematoxylin", r"eosin", r"photomicrograph\w*", r"micrograph\w*",
                  r"histolog\w*", r"histopatholog\w*", r"immunohistochem\w*", r"ihc", r"stain(ed|ing)?",
                  r"original magnification", r"magnification", r"microscop\w+", r"nuclei", r"biopsy section"],
    "gross": [r"gross", r"macroscopic\w*", r"cut surface", r"resected \w+", r"specimen", r"en bloc",
              r"intraoperative (photograph|view|image)"],
}
_PATTERNS = {d: re.compile(r"(?<!\w)(?:" + "|".join(v) + r")(?!\w)", re.I) for d, v in VOCABULARY.items()}


def classify_caption(caption: str) -> str:
    """The caption's domain, or "other"."""
    scores: dict[str, tuple[int, int]] = {}
    for domain, pattern in _PATTERNS.items():
        hits = list(pattern.finditer(caption or ""))
        if hits:
            scores[domain] = (len(hits), -hits[0].start())
    if not scores:
        return OTHER
    return max(scores, key=scores.get)


def domain_flags(domain: str) -> dict[str, bool]:
    """The caption file's `domain` field: every one of the five domains mapped to true/false."""
    return {d: d == domain for d in DOMAINS}


# ---- zero-shot image classifier -------------------------------------------------------------------------------
# Prompts in the words of real captions, for real CLIPs. (The tiny CLIP is prompted with captions from the tiny
# world's own generator instead: see curate.image_classifier_for.)
PROMPTS: dict[str, list[str]] = {
    "chest_xray": ["Chest radiograph.", "Posteroanterior chest radiograph.", "Frontal chest X-ray.",
                   "Chest X-ray (CXR).", "PA chest radiograph."],
    "ct_scan": ["Axial contrast-enhanced CT of the abdomen.", "Axial non-contrast CT of the abdomen.",
                "Unenhanced abdominal CT, axial slice.", "Contrast-enhanced CT (CECT), axial slice.",
                "Computed tomography of the abdomen."],
    "mri": ["Axial T2-weighted MRI of the brain.", "Axial T1-weighted MRI of the brain.",
            "Brain MRI, axial T2-weighted sequence.", "T1-weighted magnetic resonance image (MRI), axial.",
            "Axial T2W MR image of the brain."],
    "histology": ["Photomicrograph of the tissue (H&E).", "Histological section, haematoxylin and eosin stain.",
                  "H&E-stained section.", "Microscopic appearance of the lesion (H&E stain).", "Histological section."],
    "gross": ["Gross photograph of the resected kidney.", "Cut surface of the liver specimen.",
              "Gross specimen of the kidney.", "Macroscopic view of the resected liver.",
              "Gross photograph of the resected specimen."],
}
OTHER_PROMPTS = ["a chart or a plot of data", "a diagram", "a flow chart", "a photograph of a plant",
                 "a western blot", "a map"]


class ImageDomainClassifier:
    """Zero-shot CLIP from a checkpoint (`llavamed_lite.zero_shot`): a domain's probability is the
    sum over its prompts. With `other_prompts` (large CLIPs), "other" is a class of its own;
    `min_prob` turns unsure answers into "other".

    Tiny scale: the stage-0 CLIP (data_samples/tiny-foundation/clip, its tokenizer beside it or in
    the sibling lm/); larger scales: any CLIP checkpoint name (e.g. the model's vision tower,
    openai/clip-vit-large-patch14-336).
    """

    def __init__(self, model_path: str | Path, tokenizer_path: str | Path | None = None,
                 prompts: dict[str, list[str]] | None = None, other_prompts: list[str] | None = None,
                 min_prob: float = 0.0, device: str = "cpu"):
        # torch and transformers load here: the caption classifier and the release readers that use it stay light
        from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel

        from ..zero_shot import ZeroShotClassifier

        self.min_prob = min_prob
        model = CLIPModel.from_pretrained(str(model_path)).to(device)
        self.processor = CLIPImageProcessorPil.from_pretrained(str(model_path))
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path or _tokenizer_dir(Path(str(model_path)))))
        prompts = dict(prompts or PROMPTS)
        if other_prompts:
            prompts[OTHER] = list(other_prompts)
        self.zero_shot = ZeroShotClassifier(model, tokenizer, prompts)
        self.labels = self.zero_shot.labels

    def probabilities(self, images: list) -> torch.Tensor:
        """(n_images, n_labels) softmax over labels, in the order of `self.labels`."""
        pixels = self.processor([im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        return self.zero_shot.probabilities(pixels)  # (n_images, n_labels)

    def classify(self, images: list, batch_size: int = 32) -> list[str]:
        out = []
        for i in range(0, len(images), batch_size):
            for p in self.probabilities(images[i:i + batch_size]):
                k = int(p.argmax())
                out.append(self.labels[k] if float(p[k]) >= self.min_prob else OTHER)
        return out


def _tokenizer_dir(model_path: Path) -> Path:
    """A local CLIP folder without a tokenizer borrows its sibling LM's (the tiny foundation's
    layout)."""
    if model_path.is_dir() and not any((model_path / f).exists() for f in ("tokenizer.json", "vocab.json")):
        sibling = model_path.parent / "lm"
        if (sibling / "tokenizer.json").exists():
            return sibling
    return model_path


def combine(caption_domain: str, image_domain: str | None) -> str:
    """The final domain: the caption's when it names one; otherwise the image's (None = no image
    classifier)."""
    if caption_domain != OTHER or image_domain is None:
        return caption_domain
    return image_domain


# ---- scoring -------------------------------------------------------------------------------------------------
@dataclass
class DomainScores:
    per_domain: dict[str, dict[str, float]]  # label -> {precision, recall, support}
    accuracy: float
    confusion: dict[str, dict[str, int]]  # truth -> predicted -> count

    def table(self) -> str:
        rows = [f"{'domain':<11} {'precision':>9} {'recall':>7} {'n':>5}"]
        for label, s in self.per_domain.items():
            rows.append(f"{label:<11} {s['precision']:>9.2f} {s['recall']:>7.2f} {int(s['support']):>5}")
        return "\n".join(rows + [f"accuracy {self.accuracy:.3f}"])


def score(truth: list[str], predicted: list[str]) -> DomainScores:
    """Precision and recall per label (labels that occur in truth or predictions)."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} true labels but {len(predicted)} predictions")
    confusion: dict[str, Counter] = {}
    for t, p in zip(truth, predicted):
        confusion.setdefault(t, Counter())[p] += 1
    labels = [label for label in LABELS if label in set(truth) | set(predicted)]
    per = {}
    for label in labels:
        tp = sum(1 for t, p in zip(truth, predicted) if t == p == label)
        n_pred = sum(1 for p in predicted if p == label)
        n_true = sum(1 for t in truth if t == label)
        per[label] = {"precision": tp / n_pred if n_pred else 0.0, "recall": tp / n_true if n_true else 0.0,
                      "support": n_true}
    acc = sum(t == p for t, p in zip(truth, predicted)) / len(truth) if truth else 0.0
    return DomainScores(per, acc, {t: dict(c) for t, c in confusion.items()})


# ---- real images with a known modality --------------------------------------------------------------------
def slake_images(slake_dir: str | Path) -> list[tuple[Path, str]]:
    """(image path, domain) for SLAKE's English test images present under imgs/: X-Ray of the lung
    -> chest_xray, CT, MRI."""
    root = Path(slake_dir)
    rows = json.loads((root / "test.json").read_text(encoding="utf-8"))
    mapping = {"X-Ray": "chest_xray", "CT": "ct_scan", "MRI": "mri"}
    seen = {}
    for r in rows:
        if r.get("q_lang", "en") != "en" or not (root / "imgs" / r["img_name"]).is_file():
            continue
        domain = mapping.get(r.get("modality"))
        if domain == "chest_xray" and r.get("location") != "Lung":
            domain = OTHER
        if domain and r["img_name"] not in seen:
            seen[r["img_name"]] = domain
    return [(root / "imgs" / name, d) for name, d in sorted(seen.items())]


def vqa_rad_images(vqa_rad_dir: str | Path) -> list[tuple[Path, str]]:
    """(image path, domain) for the VQA-RAD images whose modality a MODALITY question (train or test
    file) answers openly ("CT with contrast", "T2 weighted MRI", "Plain film x-ray"); a chest plain
    film is chest_xray."""
    root = Path(vqa_rad_dir)
    rows = [r for name in ("testset.json", "trainset.json") if (root / name).is_file()
            for r in json.loads((root / name).read_text(encoding="utf-8"))]
    found: dict[str, str] = {}
    for r in rows:
        if not str(r.get("question_type", "")).upper().startswith("MODALITY"):
            continue
        a = str(r.get("answer", "")).lower()
        if a in ("yes", "no"):
            continue
        if re.search(r"\bct\b", a):
            domain = "ct_scan"
        elif re.search(r"mri|\bmr\b|t1|t2|flair|dwi|diffusion", a):
            domain = "mri"
        elif re.search(r"x-?ray|\bxr\b|plain film|radiograph", a):
            domain = "chest_xray" if r.get("image_organ", "").upper() == "CHEST" else OTHER
        else:
            continue
        found.setdefault(r["image_name"], domain)
    return [(root / "images" / name, d) for name, d in sorted(found.items())]


def evaluate_image_classifier(classifier: ImageDomainClassifier, items: list[tuple[Path, str]],
                              batch_size: int = 32) -> DomainScores:
    """Score the classifier on (image path, true domain) pairs, images opened with
    llavamed_lite.images."""
    predicted = []
    for i in range(0, len(items), batch_size):
        predicted += classifier.classify([load_image(p) for p, _ in items[i:i + batch_size]], batch_size)
    return score([d for _, d in items], predicted)
