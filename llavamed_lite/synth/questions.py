"""VQA questions with known answers, and a plain description, from a figure's findings.

`questions_for(findings, rng)` gives every question the findings can answer, in the VQA-RAD/SLAKE
style: CLOSED questions answered "yes"/"no" (about half of them "no": side and size questions
sometimes name the wrong side or size on purpose) and OPEN questions answered by a short phrase.
Each is a dict {question, answer, answer_type: "CLOSED" | "OPEN", question_type: modality | organ |
finding | side | zone | size | count | colour | sequence | stain | ..., about}. `question_type` is
the VQA category (all findings are "finding"); `about` names what exactly is asked (e.g. nodule,
cardiomegaly, oedema, glands; region for the body-region question; otherwise the question_type), so
an answer can be looked up (instruct/offline.py). Phrasings vary with `rng`.

`describe(findings)` is one deterministic sentence of what the image shows, for text-only
instruction writers.
"""

from typing import Any

from .findings import as_rng, validate_findings

# Words the questions and answers use for each domain.
MODALITY = {"chest_xray": "chest x-ray", "ct_scan": "ct", "mri": "mri", "histology": "histology",
            "gross": "gross pathology"}
MODALITY_LONG = {"chest_xray": "a chest X-ray", "ct_scan": "a CT scan", "mri": "an MRI scan",
                 "histology": "a histology slide", "gross": "a gross pathology specimen"}
REGION = {"chest_xray": "chest", "ct_scan": "abdomen", "mri": "brain"}


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


class _Asker:
    """Collects questions, choosing one phrasing of each with the rng."""

    def __init__(self, rng):
        self.rng = rng
        self.items: list[dict] = []

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def open(self, qtype: str, phrasings: list[str], answer: str, about: str | None = None) -> None:
        self.items.append({"question": self.pick(phrasings), "answer": answer, "answer_type": "OPEN",
                           "question_type": qtype, "about": about or qtype})

    def closed(self, qtype: str, phrasings: list[str], answer: bool, about: str | None = None) -> None:
        self.items.append({"question": self.pick(phrasings), "answer": _yes(answer), "answer_type": "CLOSED",
                           "question_type": qtype, "about": about or qtype})

    def other(self, value: str, values: tuple) -> str:
        """`value` half of the time, another of `values` otherwise (so closed answers are balanced)."""
        return value if self.rng.random() < 0.5 else self.pick([v for v in values if v != value])


def questions_for(findings: dict, rng: Any) -> list[dict]:
    """All questions the findings answer (see module docstring)."""
    f = validate_findings(findings)
    ask = _Asker(as_rng(rng))
    domain = f["domain"]
    ask.open("modality", ["What imaging modality is this?", "What type of image is shown?",
                          "What kind of image is this?"], MODALITY[domain])
    shown = ask.other(domain, tuple(MODALITY))
    ask.closed("modality", [f"Is this {MODALITY_LONG[shown]}?", f"Is this image {MODALITY_LONG[shown]}?"],
               shown == domain)
    if domain in REGION:
        ask.open("organ", ["Which part of the body is imaged?", "What body region is shown?"], REGION[domain],
                 "region")
    _DOMAIN_QUESTIONS[domain](f, ask)
    return ask.items


def _chest(f: dict, ask: _Asker) -> None:
    ask.closed("finding", ["Is there a nodule in the lungs?", "Is a pulmonary nodule present?",
                           "Does the radiograph show a lung nodule?"], f["nodule"], "nodule")
    ask.closed("finding", ["Is the heart enlarged?", "Is there cardiomegaly?", "Is the cardiac silhouette enlarged?"],
               f["cardiomegaly"], "cardiomegaly")
    ask.open("finding", ["What is the main abnormality?", "What abnormality is seen?"], _chest_abnormality(f),
             "abnormality")
    if f["nodule"]:
        ask.open("side", ["Which lung contains the nodule?", "On which side is the nodule?"], f["side"])
        side = ask.other(f["side"], ("left", "right"))
        ask.closed("side", [f"Is the nodule in the {side} lung?", f"Is the nodule on the {side} side?"],
                   side == f["side"])
        ask.open("zone", ["Is the nodule in the upper or the lower zone?", "Which zone of the lung holds the nodule?"],
                 f["zone"])
        size = ask.other(f["size"], ("small", "large"))
        ask.closed("size", [f"Is the nodule {size}?", f"Is it a {size} nodule?"], size == f["size"])


def _chest_abnormality(f: dict) -> str:
    parts = ([f"{f['size']} nodule in the {f['side']} {f['zone']} zone"] if f["nodule"] else []) + (
        ["cardiomegaly"] if f["cardiomegaly"] else [])
    return " and ".join(parts) if parts else "no abnormality"


def _ct(f: dict, ask: _Asker) -> None:
    n = f["lesion_count"]
    ask.closed("finding", ["Are there focal lesions?", "Is any lesion visible?", "Does the scan show a lesion?"], n > 0,
               "lesions")
    ask.open("count", ["How many lesions are there?", "How many hypodense lesions are seen?"], str(n))
    ask.closed("contrast", ["Was intravenous contrast given?", "Is this a contrast-enhanced scan?"], f["contrast"])
    if n:
        ask.open("organ", ["Which organ contains the lesions?", "In which organ are the lesions?"], f["organ"])
        organ = ask.other(f["organ"], ("liver", "spleen"))
        ask.closed("organ", [f"Are the lesions in the {organ}?", f"Is the {organ} affected?"], organ == f["organ"])
        size = ask.other(f["size"], ("small", "large"))
        ask.closed("size", [f"Are the lesions {size}?", f"Are these {size} lesions?"], size == f["size"])


def _mri(f: dict, ask: _Asker) -> None:
    ask.open("sequence", ["Which MRI sequence is this?", "Is this T1- or T2-weighted?"], f["sequence"])
    ask.closed("finding", ["Is there a mass in the brain?", "Is a mass lesion present?",
                           "Does the brain contain a mass?"], f["mass"], "mass")
    if f["mass"]:
        ask.open("side", ["Which hemisphere contains the mass?", "On which side is the mass?"], f["side"])
        side = ask.other(f["side"], ("left", "right"))
        ask.closed("side", [f"Is the mass in the {side} hemisphere?", f"Is the mass on the {side} side?"],
                   side == f["side"])
        size = ask.other(f["size"], ("small", "large"))
        ask.closed("size", [f"Is the mass {size}?", f"Is it a {size} mass?"], size == f["size"])
        ask.closed("finding", ["Is there oedema around the mass?", "Is there perilesional oedema?"], f["oedema"],
                   "oedema")


def _histology(f: dict, ask: _Asker) -> None:
    ask.open("stain", ["What stain was used?", "Which staining method is shown?"], "H&E")
    ask.open("density", ["How dense are the nuclei?", "Is the tissue sparsely or densely cellular?"], f["density"])
    density = ask.other(f["density"], ("sparse", "dense"))
    ask.closed("density", [f"Are the nuclei {density}?", f"Is the cellularity {density}?"], density == f["density"])
    ask.closed("finding", ["Are glands present?", "Does the tissue contain glands?"], f["glands"], "glands")
    ask.closed("finding", ["Is there necrosis?", "Is a necrotic area present?"], f["necrosis"], "necrosis")
    ask.closed("finding", ["Do the nuclei show atypia?", "Are the nuclei atypical?"], f["atypia"], "atypia")


def _gross(f: dict, ask: _Asker) -> None:
    ask.open("organ", ["What organ is this specimen?", "Which organ is shown?"], f["organ"])
    organ = ask.other(f["organ"], ("kidney", "liver"))
    ask.closed("organ", [f"Is this a {organ}?", f"Is the specimen a {organ}?"], organ == f["organ"])
    ask.closed("finding", ["Is there a lesion on the cut surface?", "Is a discoloured lesion present?"], f["lesion"],
               "lesion")
    if f["lesion"]:
        ask.open("colour", ["What colour is the lesion?", "What is the colour of the lesion?"], f["colour"])
        ask.open("size", ["How large is the lesion?", "What size is the lesion?"], f["size"])
        size = ask.other(f["size"], ("small", "large"))
        ask.closed("size", [f"Is the lesion {size}?", f"Is it a {size} lesion?"], size == f["size"])


_DOMAIN_QUESTIONS = {"chest_xray": _chest, "ct_scan": _ct, "mri": _mri, "histology": _histology, "gross": _gross}


def describe(findings: dict) -> str:
    """One plain sentence of what the image shows (deterministic)."""
    f = validate_findings(findings)
    d = f["domain"]
    if d == "chest_xray":
        nodule = (f"a {f['size']} nodule in the {f['side']} {f['zone']} zone" if f["nodule"] else "no lung nodule")
        heart = "an enlarged heart" if f["cardiomegaly"] else "a normal-sized heart"
        return f"A frontal chest X-ray showing {nodule} and {heart}."
    if d == "ct_scan":
        phase = "contrast-enhanced" if f["contrast"] else "non-contrast"
        n = f["lesion_count"]
        if not n:
            return f"An axial {phase} CT scan of the abdomen with no focal lesion."
        lesions = "a single" if n == 1 else ["", "", "two", "three"][n]
        noun = "lesion" if n == 1 else "lesions"
        return (f"An axial {phase} CT scan of the abdomen showing {lesions} {f['size']} hypodense {noun} "
                f"in the {f['organ']}.")
    if d == "mri":
        if not f["mass"]:
            return f"An axial {f['sequence']}-weighted MRI of the brain with no mass."
        oedema = "surrounding oedema" if f["oedema"] else "no surrounding oedema"
        return (f"An axial {f['sequence']}-weighted MRI of the brain showing a {f['size']} mass in the "
                f"{f['side']} hemisphere with {oedema}.")
    if d == "histology":
        extras = [("glands" if f["glands"] else "no glands"),
                  ("an area of necrosis" if f["necrosis"] else "no necrosis"),
                  ("atypical nuclei" if f["atypia"] else "bland nuclei")]
        return f"An H&E-stained section with {f['density']} nuclei, {extras[0]}, {extras[1]} and {extras[2]}."
    lesion = f"a {f['size']} {f['colour']} lesion" if f["lesion"] else "no focal lesion"
    return f"A gross photograph of a {f['organ']} specimen beside a ruler, with {lesion} on the cut surface."
