"""The offline backend: conversations written from the tiny world's findings, without a model or a
network.

It stands where GPT-4 stood and returns the same raw `User: ...\\n\\nAssistant: ...` text, so its
output goes through the same cache and post-processing. The questions are the tiny world's own
(synth.questions: every one answerable from the image); each answer is one short sentence built from
the findings ("Yes, there is a small nodule in the left upper zone."), so the 3-4M-parameter tiny
model gets consistent, learnable targets. Each conversation holds 2-4 exchanges, chosen and phrased
by a generator seeded with (seed, pair_id): the same seed gives the same text whatever the order or
concurrency of the run.

A caption record without `findings` (a real PMC caption) gets a generic two-exchange conversation
from its domain flag and its caption: the kind of image, then "What does this image show?" answered
with the caption's text. A record with no domain flag set fails with the reason `no_domain`.
"""

import hashlib
import re

import numpy as np

from ..data.formats import record_domain
from ..synth.questions import MODALITY_LONG, REGION, describe, questions_for
from .client import Completion, Request, RequestFailed

OFFLINE_VERSION = 1  # bump when the text changes, so cached offline answers are not reused
MODALITY_QUESTIONS = ("What kind of image is this?", "What type of image is shown?",
                      "What imaging modality is this?")
DESCRIBE_QUESTIONS = ("Describe the image.", "What does this image show?",
                      "What can you see in this image?")
_LABEL = re.compile(r"^\s*(?:fig(?:ure)?\.?)\s*\d+[a-z]?[.:)]?\s*", re.IGNORECASE)


def _count(n: int, noun: str) -> str:
    if n == 1:
        return f"there is one {noun}"
    return f"there are {n} {noun}s" if n else f"there are no {noun}s"


def _nodule(f: dict) -> str:
    return f"a {f['size']} nodule in the {f['side']} {f['zone']} zone"


def _chest_abnormality(f: dict) -> str:
    parts = ([_nodule(f)] if f["nodule"] else []) + (["cardiomegaly"] if f["cardiomegaly"] else [])
    return "there is " + " and ".join(parts) if parts else "there is no abnormality"


def _lesions(f: dict) -> str:
    return "the lesion is" if f["lesion_count"] == 1 else "the lesions are"


# The true statement for each domain and what a question is `about` (synth.questions): in lower
# case, without a full stop.
FACTS = {
    "chest_xray": {
        "nodule": lambda f: (f"there is {_nodule(f)}" if f["nodule"]
                             else "there is no nodule in the lungs"),
        "cardiomegaly": lambda f: ("the heart is enlarged" if f["cardiomegaly"]
                                   else "the heart is normal in size"),
        "abnormality": _chest_abnormality,
        "side": lambda f: f"the nodule is in the {f['side']} lung",
        "zone": lambda f: f"the nodule is in the {f['zone']} zone",
        "size": lambda f: f"the nodule is {f['size']}",
    },
    "ct_scan": {
        "lesions": lambda f: (f"{_count(f['lesion_count'], f['size'] + ' lesion')} in the "
                              f"{f['organ']}" if f["lesion_count"] else "there is no focal lesion"),
        "count": lambda f: _count(f["lesion_count"], "lesion"),
        "contrast": lambda f: ("the scan is contrast-enhanced" if f["contrast"]
                               else "the scan was done without contrast"),
        "organ": lambda f: f"{_lesions(f)} in the {f['organ']}",
        "size": lambda f: f"{_lesions(f)} {f['size']}",
    },
    "mri": {
        "sequence": lambda f: f"this is a {f['sequence']}-weighted image",
        "mass": lambda f: (f"there is a {f['size']} mass in the {f['side']} hemisphere" if f["mass"]
                           else "there is no mass in the brain"),
        "oedema": lambda f: ("there is oedema around the mass" if f["oedema"]
                             else "there is no oedema around the mass"),
        "side": lambda f: f"the mass is in the {f['side']} hemisphere",
        "size": lambda f: f"the mass is {f['size']}",
    },
    "histology": {
        "stain": lambda f: "the section is stained with H&E",
        "density": lambda f: f"the nuclei are {f['density']}",
        "glands": lambda f: "glands are present" if f["glands"] else "there are no glands",
        "necrosis": lambda f: ("there is an area of necrosis" if f["necrosis"]
                               else "there is no necrosis"),
        "atypia": lambda f: ("the nuclei are atypical" if f["atypia"]
                             else "the nuclei show no atypia"),
    },
    "gross": {
        "organ": lambda f: f"the specimen is a {f['organ']}",
        "colour": lambda f: f"the lesion is {f['colour']}",
        "size": lambda f: f"the lesion is {f['size']}",
        "lesion": lambda f: (f"there is a {f['size']} {f['colour']} lesion on the cut surface"
                             if f["lesion"] else "there is no lesion on the cut surface"),
    },
}
ANY_DOMAIN = {"modality": lambda f: f"this is {MODALITY_LONG[f['domain']]}",
              "region": lambda f: f"the image shows the {REGION[f['domain']]}"}


def fact(f: dict, question: dict) -> str:
    """The true statement that answers `question` about findings `f`, in lower case, without a
    full stop."""
    about = question["about"]
    return (ANY_DOMAIN.get(about) or FACTS[f["domain"]][about])(f)


def answer_sentence(f: dict, question: dict) -> str:
    """"Yes, ..." / "No, ..." for CLOSED questions, the plain fact for OPEN ones; one sentence."""
    text = fact(f, question)
    if question["answer_type"] == "CLOSED":
        return f"{'Yes' if question['answer'] == 'yes' else 'No'}, {text}."
    return f"{text[0].upper()}{text[1:]}."


def item_generator(seed: int, pair_id: str) -> np.random.Generator:
    digest = hashlib.sha256(f"offline:{seed}:{pair_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def findings_exchanges(findings: dict, rng: np.random.Generator) -> list[tuple[str, str]]:
    """2-4 (question, answer) pairs: often first the kind of image or a description, then other questions,
    never two whose answers state the same fact."""
    questions = questions_for(findings, rng)
    n = int(rng.integers(2, 5))
    opening = rng.random()
    pairs = []
    if opening < 0.4:
        first = [q for q in questions if q["question_type"] == "modality"]
        q = first[int(rng.integers(len(first)))]
        pairs.append((q["question"], answer_sentence(findings, q)))
    elif opening < 0.6:
        pairs.append((_pick(rng, DESCRIBE_QUESTIONS), describe(findings)))
    rest = [q for q in questions if q["question_type"] != "modality"]
    seen = set()
    for i in rng.permutation(len(rest)):
        q = rest[int(i)]
        topic = fact(findings, q)  # one question per fact
        if len(pairs) >= n or topic in seen:
            continue
        seen.add(topic)
        pairs.append((q["question"], answer_sentence(findings, q)))
    return pairs


def caption_exchanges(record: dict, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Without findings: the kind of image, and what it shows in the caption's words (its label removed)."""
    domain = record_domain(record)
    if domain is None:
        raise RequestFailed("no_domain")
    text = _LABEL.sub("", record["fig_caption"]).strip()
    return [(_pick(rng, MODALITY_QUESTIONS), f"This is {MODALITY_LONG[domain]}."),
            (_pick(rng, DESCRIBE_QUESTIONS), text[0].upper() + text[1:])]


def offline_conversation(record: dict, seed: int = 0) -> str:
    """The raw conversation text for one caption record, as a model would write it."""
    rng = item_generator(seed, str(record["pair_id"]))
    findings = record.get("findings")
    pairs = findings_exchanges(findings, rng) if findings else caption_exchanges(record, rng)
    return "\n\n".join(f"User: {q}\n\nAssistant: {a}" for q, a in pairs)


class OfflineBackend:
    """The engine's backend interface (see client.OpenAIBackend), answered locally."""

    name = model = "offline"
    reads_record = True  # its answer depends on the record's findings and id, not only on the messages

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.params = {"seed": seed, "version": OFFLINE_VERSION}

    async def complete(self, request: Request) -> Completion:
        return Completion(offline_conversation(request.record, self.seed), usage={}, finish_reason="stop")
