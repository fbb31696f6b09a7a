"""Answers that use no image, to put a model's VQA scores in context: always "yes", and the most
frequent training answer for the question's type (a question-only prior). A model that does not beat
them has not used the image."""

from collections import Counter, defaultdict
from typing import Iterable

from .metrics import normalize
from .vqa import VQAItem


def always_yes(items: Iterable[VQAItem]) -> list[str]:
    return ["yes" for _ in items]


def majority_answer(train: Iterable[VQAItem], items: Iterable[VQAItem]) -> list[str]:
    """For each item, the training answer seen most often for its (question_type, answer_type);
    answers are counted after normalisation, so "Yes" and "yes" are one answer. Unseen types fall
    back to the answer type's majority."""
    by_type, by_kind, spelling = defaultdict(Counter), defaultdict(Counter), {}
    for it in train:
        key = " ".join(normalize(it.answer))
        spelling.setdefault(key, it.answer)
        by_type[(it.question_type, it.answer_type)][key] += 1
        by_kind[it.answer_type][key] += 1
    if not by_kind:
        raise ValueError("majority_answer needs at least one training item")
    out = []
    for it in items:
        counts = (by_type.get((it.question_type, it.answer_type)) or by_kind.get(it.answer_type)
                  or sum(by_kind.values(), Counter()))
        # most_common breaks ties by first occurrence: deterministic for a fixed training order
        out.append(spelling[counts.most_common(1)[0][0]])
    return out
