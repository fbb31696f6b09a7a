"""Read the findings a sentence states, in the tiny world's own words, to score text at the level of findings.

A caption or an answer can name the right domain and still invent what it shows ("an area of necrosis" on a slide
without necrosis). `read_findings` turns text back into a partial findings dict (only what the text states), and
`check_findings` compares it with the figure's true findings: which stated findings are right and which are wrong
(hallucinated). The vocabulary is `text.py`'s and `questions.py`'s, so it reads the world's captions exactly
(tested on every caption of a world) and the model's text as far as the model keeps to those words.
"""

import re

from .findings import validate_findings

# (field, value, pattern), tried in order per field: the first pattern that matches gives the field's value.
# Negations come before the bare word ("no necrosis" before "necrosis").
_RULES: dict[str, list[tuple[str, object, str]]] = {
    "chest_xray": [
        ("nodule", False, r"\bno (pulmonary |lung )?nodule|without nodules|clear lungs"),
        ("nodule", True, r"\bnodule|\bopacity"),
        ("side", "left", r"\bleft\b"), ("side", "right", r"\bright\b"),
        ("zone", "upper", r"\bupper\b"), ("zone", "lower", r"\blower\b"),
        ("size", "small", r"\bsmall\b"), ("size", "large", r"\blarge\b"),
        ("cardiomegaly", False, r"normal(-sized)? (heart|cardiac)|heart is not enlarged|no cardiomegaly"),
        ("cardiomegaly", True, r"cardiomegaly|enlarged (heart|cardiac)|(heart|silhouette) is enlarged"),
    ],
    "ct_scan": [
        ("lesion_count", 0, r"\bno (focal )?(hepatic or splenic )?lesion"),
        ("lesion_count", 1, r"\b(a single|one)\b"), ("lesion_count", 2, r"\btwo\b"),
        ("lesion_count", 3, r"\bthree\b"),
        ("organ", "liver", r"\bliver\b(?! or spleen)"), ("organ", "spleen", r"(?<!liver or )\bspleen\b"),
        ("size", "small", r"\bsmall\b"), ("size", "large", r"\blarge\b"),
        ("contrast", False, r"non-contrast|unenhanced|\bncct\b|no contrast"),
        ("contrast", True, r"contrast-enhanced|\bcect\b|intravenous contrast"),
    ],
    "mri": [
        ("sequence", "T1", r"\bt1"), ("sequence", "T2", r"\bt2"),
        ("mass", False, r"\bno (intracranial )?mass|without a mass"),
        ("mass", True, r"\bmass\b"),
        ("side", "left", r"\bleft\b"), ("side", "right", r"\bright\b"),
        ("size", "small", r"\bsmall\b"), ("size", "large", r"\blarge\b"),
        ("oedema", False, r"without (surrounding )?oedema|no (surrounding |perilesional )?oedema"),
        ("oedema", True, r"oedema"),
    ],
    "histology": [
        ("density", "sparse", r"\bsparse"), ("density", "dense", r"\bdense"),
        ("glands", False, r"\bno glands"), ("glands", True, r"\bglands?\b"),
        ("necrosis", False, r"\bno necrosis"), ("necrosis", True, r"necro"),
        ("atypia", False, r"\bbland\b|no atypia|not atypical"), ("atypia", True, r"atypi"),
    ],
    "gross": [
        ("organ", "kidney", r"\bkidney\b"), ("organ", "liver", r"\bliver\b"),
        ("lesion", False, r"\bno (focal )?lesion|without a focal lesion"),
        ("lesion", True, r"\blesion|discoloured area"),
        ("colour", "dark red", r"dark red"), ("colour", "yellow", r"\byellow\b"),
        ("size", "small", r"\bsmall\b"), ("size", "large", r"\blarge\b"),
    ],
}


def read_findings(text: str, domain: str) -> dict:
    """The findings of `domain` that `text` states, e.g. {"nodule": True, "side": "left"} (unstated fields absent)."""
    if domain not in _RULES:
        raise ValueError(f"read_findings: unknown domain {domain!r} (one of {', '.join(_RULES)})")
    text = text.lower()
    stated: dict = {}
    for field, value, pattern in _RULES[domain]:
        if field not in stated and re.search(pattern, text):
            stated[field] = value
    return stated


def check_findings(text: str, truth: dict) -> dict:
    """Which findings `text` states rightly and which wrongly against the figure's `truth` findings.

    Returns {"right": [field, ...], "wrong": [(field, stated, true), ...]}. A finding stated about something absent
    (the side of a nodule the figure does not have) counts as wrong: it is invented."""
    truth = validate_findings(truth)
    right, wrong = [], []
    for field, value in read_findings(text, truth["domain"]).items():
        if truth[field] == value:
            right.append(field)
        else:
            wrong.append((field, value, truth[field]))
    return {"right": right, "wrong": wrong}


def closed_answer_right(answer: str, truth: str, findings: dict) -> bool:
    """A yes/no answer is right by meaning: its yes/no is the true one and nothing else it states is false of the
    figure. "No, the nuclei show no atypia." to "Is this a CT scan?" starts right but invents a finding."""
    words = re.findall(r"[a-z]+", answer.lower())
    said = words[0] if words and words[0] in ("yes", "no") else None
    return said == truth.lower() and not check_findings(answer, findings)["wrong"]


def score_by_findings(predictions: list[str], answers: list[str], answer_types: list[str],
                      findings: list[dict]) -> dict:
    """Answers scored by what they mean, against each question's figure findings: closed answers right by meaning
    (closed_answer_right) and the findings every answer states, true or false (check_findings).

    Returns {closed_right, n_closed, findings_stated, findings_false, with_false}; with_false lists the indices of
    the answers that state at least one false finding (where the model hallucinates)."""
    if not len(predictions) == len(answers) == len(answer_types) == len(findings):
        raise ValueError(f"score_by_findings: predictions ({len(predictions)}), answers ({len(answers)}), "
                         f"answer_types ({len(answer_types)}) and findings ({len(findings)}) differ in length")
    closed_right = n_closed = stated = false = 0
    with_false = []
    for i, (prediction, answer, kind, truth) in enumerate(zip(predictions, answers, answer_types, findings)):
        checked = check_findings(prediction, truth)
        stated += len(checked["right"]) + len(checked["wrong"])
        false += len(checked["wrong"])
        if checked["wrong"]:
            with_false.append(i)
        if kind == "CLOSED":
            n_closed += 1
            closed_right += closed_answer_right(prediction, answer, truth)
    return {"closed_right": closed_right, "n_closed": n_closed, "findings_stated": stated,
            "findings_false": false, "with_false": with_false}
