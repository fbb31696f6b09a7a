"""Structured findings: what a tiny-world figure shows, before it is drawn or described.

Everything else in the tiny world derives from a findings dict: the pixels (`draw.py`), the caption and the
sentences that cite the figure (`text.py`), the VQA questions (`questions.py`). A findings dict is plain JSON
with a "domain" key (one of `llavamed_lite.data.formats.DOMAINS`) and one key per finding, e.g.

    {"domain": "chest_xray", "nodule": true, "side": "left", "zone": "upper", "size": "small", "cardiomegaly": false}

Findings that only make sense when something is present (the side of an absent nodule) are None.
Each finding is visible in the image and coarse enough for a 4-layer vision tower at 64 px to learn.
Sides are the PATIENT's: radiological convention puts the patient's left on the image's right (see draw.py).
"""

from typing import Any

import numpy as np

from ..data.formats import DOMAINS

# For every domain: finding name -> allowed values. None marks "not applicable" (nothing present).
SCHEMA: dict[str, dict[str, tuple]] = {
    "chest_xray": {
        "nodule": (True, False),  # a round opacity in one lung
        "side": ("left", "right", None),  # patient's side of the nodule
        "zone": ("upper", "lower", None),
        "size": ("small", "large", None),
        "cardiomegaly": (True, False),  # heart wider than half the chest
    },
    "ct_scan": {
        "organ": ("liver", "spleen", None),  # where the hypodense lesions are
        "lesion_count": (0, 1, 2, 3),
        "size": ("small", "large", None),
        "contrast": (True, False),  # contrast-enhanced: bright aorta and kidneys
    },
    "mri": {
        "sequence": ("T1", "T2"),  # T2: fluid (ventricles) bright; T1: fluid dark
        "mass": (True, False),
        "side": ("left", "right", None),  # hemisphere of the mass (patient's side)
        "size": ("small", "large", None),
        "oedema": (True, False, None),  # a halo of vasogenic oedema around the mass
    },
    "histology": {
        "density": ("sparse", "dense"),  # nuclei per area
        "glands": (True, False),  # round glands with a clear lumen
        "necrosis": (True, False),  # a pale area without nuclei
        "atypia": (True, False),  # large, dark, irregular nuclei
    },
    "gross": {
        "organ": ("kidney", "liver"),  # the specimen: a tan bean, or a red-brown wedge
        "lesion": (True, False),  # a discoloured area on the cut surface
        "colour": ("dark red", "yellow", None),  # haemorrhagic vs. pale/necrotic
        "size": ("small", "large", None),  # against the 1 cm ruler ticks
    },
}

# What each finding depends on: when the parent finding is absent, the dependent findings are None.
PRESENCE = {
    "chest_xray": ("nodule", ("side", "zone", "size")),
    "ct_scan": ("lesion_count", ("organ", "size")),
    "mri": ("mass", ("side", "size", "oedema")),
    "histology": (None, ()),
    "gross": ("lesion", ("colour", "size")),
}


class FindingsError(ValueError):
    """Findings that break the schema; the message names the domain and the field."""


def check_domain(domain: Any) -> str:
    if domain not in SCHEMA:
        raise FindingsError(f"unknown domain {domain!r}: choose one of {', '.join(DOMAINS)}")
    return domain


def as_rng(rng: Any) -> np.random.Generator:
    """A numpy Generator from a Generator, an int seed or a sequence of ints."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, bool):
        raise TypeError(f"expected a numpy Generator or an integer seed, got {rng!r}")
    return np.random.default_rng(rng)


def _present(findings: dict) -> bool:
    parent, _ = PRESENCE[findings["domain"]]
    return parent is None or bool(findings[parent])


def sample_findings(domain: str, rng: Any) -> dict:
    """Random findings for `domain`, balanced so that every closed question is about 50/50."""
    check_domain(domain)
    rng = as_rng(rng)
    pick = lambda values: values[int(rng.integers(len(values)))]  # noqa: E731
    present = bool(rng.random() < 0.5)
    f: dict[str, Any] = {"domain": domain}
    if domain == "chest_xray":
        f.update(nodule=present, side=pick(("left", "right")), zone=pick(("upper", "lower")),
                 size=pick(("small", "large")), cardiomegaly=bool(rng.random() < 0.5))
    elif domain == "ct_scan":
        f.update(organ=pick(("liver", "spleen")), lesion_count=int(rng.integers(1, 4)) if present else 0,
                 size=pick(("small", "large")), contrast=bool(rng.random() < 0.5))
    elif domain == "mri":
        f.update(sequence=pick(("T1", "T2")), mass=present, side=pick(("left", "right")),
                 size=pick(("small", "large")), oedema=bool(rng.random() < 0.5))
    elif domain == "histology":
        f.update(density=pick(("sparse", "dense")), glands=present, necrosis=bool(rng.random() < 0.5),
                 atypia=bool(rng.random() < 0.5))
    else:  # gross
        f.update(organ=pick(("kidney", "liver")), lesion=present, colour=pick(("dark red", "yellow")),
                 size=pick(("small", "large")))
    _, dependent = PRESENCE[domain]
    if not _present(f):
        f.update({name: None for name in dependent})
    return validate_findings(f)


def validate_findings(findings: Any, where: str = "findings") -> dict:
    """Check a findings dict against SCHEMA (e.g. one read back from JSON); returns it unchanged."""
    if not isinstance(findings, dict):
        raise FindingsError(f"{where}: expected a dict, got {type(findings).__name__}")
    if "domain" not in findings:
        raise FindingsError(f"{where}: missing field 'domain'")
    domain = findings["domain"]
    if domain not in SCHEMA:
        raise FindingsError(f"{where}: unknown domain {domain!r}: choose one of {', '.join(DOMAINS)}")
    schema = SCHEMA[domain]
    extra = set(findings) - set(schema) - {"domain"}
    if extra:
        raise FindingsError(f"{where}: unknown field(s) {sorted(extra)} for domain {domain!r}")
    for name, allowed in schema.items():
        if name not in findings:
            raise FindingsError(f"{where}: missing field {name!r} for domain {domain!r}")
        value = findings[name]
        if name == "lesion_count" and isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise FindingsError(f"{where}: field 'lesion_count' must not be negative, got {value}")
        if value not in allowed or isinstance(value, bool) != any(isinstance(a, bool) for a in allowed if a == value):
            raise FindingsError(f"{where}: field {name!r} = {value!r} not allowed for {domain!r}; "
                                f"choose from {allowed}")
    parent, dependent = PRESENCE[domain]
    present = _present(findings)
    for name in dependent:
        if present and findings[name] is None:
            raise FindingsError(f"{where}: field {name!r} must be set when {parent!r} is present")
        if not present and findings[name] is not None:
            raise FindingsError(f"{where}: field {name!r} must be None when {parent!r} is absent")
    return findings
