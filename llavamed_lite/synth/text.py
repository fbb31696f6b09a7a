"""PMC-style text about a figure, from its findings: captions, inline mentions, paraphrases.

Real PMC captions vary: "Figure 2. Chest radiograph showing ...", "Fig 3 (A) Axial T2-weighted MRI ...",
with abbreviations (CXR, CECT, T2W, H&E) and asides ("arrow", patient age). These do too, chosen by `rng`,
while always stating every finding (so a model that reads the caption can learn the image).
Mentions are the sentences of an article's body that cite the figure ("... (Fig. 2)").
"""

from typing import Any

from .findings import as_rng, validate_findings

COUNT_WORDS = {1: "a single", 2: "two", 3: "three"}


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def fig_label(number: int, rng: Any) -> str:
    """The label of figure `number` as journals write it: "Figure 2", "Fig. 2" or "Fig 2"."""
    return f"{_pick(as_rng(rng), ['Figure', 'Fig.', 'Fig'])} {number}"


def modality_phrase(findings: dict, rng: Any) -> str:
    """How a caption names the image, e.g. "Posteroanterior chest radiograph" or "Axial T2-weighted MRI"."""
    f, rng = findings, as_rng(rng)
    d = f["domain"]
    if d == "chest_xray":
        return _pick(rng, ["Chest radiograph", "Posteroanterior chest radiograph", "Frontal chest X-ray",
                           "Chest X-ray (CXR)", "PA chest radiograph"])
    if d == "ct_scan":
        if f["contrast"]:
            return _pick(rng, ["Axial contrast-enhanced CT of the abdomen", "Contrast-enhanced CT (CECT), axial slice",
                               "Axial CT of the abdomen after intravenous contrast"])
        return _pick(rng, ["Axial non-contrast CT of the abdomen", "Unenhanced abdominal CT, axial slice",
                           "Non-contrast CT (NCCT) of the upper abdomen"])
    if d == "mri":
        s = f["sequence"]
        return _pick(rng, [f"Axial {s}-weighted MRI of the brain", f"Axial {s}W MR image of the brain",
                           f"Brain MRI, axial {s}-weighted sequence",
                           f"{s}-weighted magnetic resonance image (MRI), axial"])
    if d == "histology":
        return _pick(rng, ["Photomicrograph of the tissue (H&E)", "Histological section, haematoxylin and eosin stain",
                           "H&E-stained section", "Microscopic appearance of the lesion (H&E stain)"])
    return _pick(rng, [f"Gross photograph of the resected {f['organ']}", f"Cut surface of the {f['organ']} specimen",
                       f"Gross specimen of the {f['organ']}", f"Macroscopic view of the resected {f['organ']}"])


def findings_phrase(findings: dict, rng: Any) -> str:
    """The findings as a caption states them, e.g. "a small nodule in the left upper zone and a normal heart size"."""
    f, rng = findings, as_rng(rng)
    d = f["domain"]
    if d == "chest_xray":
        nodule = (_pick(rng, [f"a {f['size']} nodule in the {f['side']} {f['zone']} zone",
                              f"a {f['size']} {f['side']} {f['zone']}-zone pulmonary nodule",
                              f"a {f['size']} rounded opacity in the {f['zone']} zone of the {f['side']} lung"])
                  if f["nodule"] else _pick(rng, ["clear lungs without nodules", "no pulmonary nodule"]))
        heart = (_pick(rng, ["cardiomegaly", "an enlarged cardiac silhouette"]) if f["cardiomegaly"]
                 else _pick(rng, ["a normal heart size", "a normal cardiac silhouette"]))
        return f"{nodule} and {heart}"
    if d == "ct_scan":
        n = f["lesion_count"]
        if not n:
            return _pick(rng, ["no focal hepatic or splenic lesion", "no focal lesion in the liver or spleen"])
        noun = "lesion" if n == 1 else "lesions"
        return _pick(rng, [f"{COUNT_WORDS[n]} {f['size']} hypodense {noun} in the {f['organ']}",
                           f"{COUNT_WORDS[n]} {f['size']} low-attenuation {noun} within the {f['organ']}"])
    if d == "mri":
        if not f["mass"]:
            return _pick(rng, ["no intracranial mass", "normal brain parenchyma without a mass"])
        oedema = (_pick(rng, ["with surrounding vasogenic oedema", "with perilesional oedema"]) if f["oedema"]
                  else _pick(rng, ["without surrounding oedema", "with no perilesional oedema"]))
        return _pick(rng, [f"a {f['size']} mass in the {f['side']} hemisphere {oedema}",
                           f"a {f['size']} {f['side']} hemispheric mass {oedema}"])
    if d == "histology":
        how = "densely" if f["density"] == "dense" else "sparsely"
        cells = _pick(rng, [f"{f['density']} nuclei", f"{how} cellular tissue"])
        parts = [cells, "glands" if f["glands"] else "no glands", "necrosis" if f["necrosis"] else "no necrosis",
                 "nuclear atypia" if f["atypia"] else "bland nuclei"]
        return f"{', '.join(parts[:-1])} and {parts[-1]}"
    if not f["lesion"]:
        return _pick(rng, ["a homogeneous cut surface without a focal lesion", "no focal lesion"])
    return _pick(rng, [f"a {f['size']} {f['colour']} lesion", f"a {f['size']} {f['colour']} discoloured area",
                       f"a {f['size']} well-circumscribed {f['colour']} lesion"])


def caption(findings: dict, rng: Any, panel: str | None = None) -> str:
    """A PMC-style caption body (without the figure label), e.g. "Chest radiograph showing a small nodule ..."."""
    f, rng = validate_findings(findings), as_rng(rng)
    verb = _pick(rng, ["showing", "demonstrating", "reveals", "shows", "with"])
    text = f"{modality_phrase(f, rng)} {verb} {findings_phrase(f, rng)}."
    if rng.random() < 0.15:
        text = text[:-1] + f" in a {int(rng.integers(25, 85))}-year-old {_pick(rng, ['man', 'woman', 'patient'])}."
    if rng.random() < 0.2 and _has_lesion(f):
        text += _pick(rng, [" The arrow indicates the lesion.", " Arrowhead marks the abnormality."])
    if panel:
        text = f"({panel}) {text}"
    return text


def _has_lesion(f: dict) -> bool:
    return bool(f.get("nodule") or f.get("lesion_count") or f.get("mass") or f.get("lesion"))


def mentions(findings: dict, rng: Any, ref: str) -> list[str]:
    """One or two sentences that cite the figure as `ref` (e.g. "Fig. 2" or "Figure 1B"), as an article body would."""
    f, rng = validate_findings(findings), as_rng(rng)
    found = findings_phrase(f, rng)
    exam = {"chest_xray": "chest radiography", "ct_scan": "abdominal CT", "mri": "brain MRI",
            "histology": "histological examination", "gross": "gross examination"}[f["domain"]]
    first = _pick(rng, [f"{exam.capitalize()} revealed {found} ({ref}).",
                        f"As shown in {ref}, {exam} demonstrated {found}.",
                        f"{exam.capitalize()} showed {found} ({ref})."])
    out = [first]
    if rng.random() < 0.4:
        out.append(_pick(rng, [f"These findings ({ref}) guided further management.",
                               f"The appearance in {ref} was discussed at the multidisciplinary meeting."]))
    return out


def paraphrase(findings: dict, rng: Any) -> str:
    """A short description in other words than the caption, for "Describe the image" answers in LM pretraining."""
    f, rng = validate_findings(findings), as_rng(rng)
    name = _pick(rng, ["The image is", "This is", "We see"])
    kind = {"chest_xray": "a chest X-ray", "ct_scan": "an abdominal CT scan", "mri": "a brain MRI",
            "histology": "an H&E histology slide", "gross": "a gross pathology photograph"}[f["domain"]]
    return f"{name} {kind} with {findings_phrase(f, rng)}."
