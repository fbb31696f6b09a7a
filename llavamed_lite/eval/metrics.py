"""LLaVA-Med's VQA metrics, written out so that users can see which number is which (reference.md, Evaluation).

Both strings are normalised the same way (`normalize`): lower-case, contractions expanded, punctuation dropped
(periods between digits kept: "2.5"), number words turned into digits, articles a/an/the dropped, split on
whitespace. Then
- CLOSED, lenient (`closed_accuracy`, the paper's): 1 when the normalised answer is a substring of the normalised
  prediction. It forgives a lot: the answer "no" hits "not", "know" and "abnormal".
- CLOSED, strict (`closed_accuracy_strict`): the answer's words must occur as whole words, in order; for a yes/no
  answer the first "yes" or "no" word of the prediction decides.
- OPEN, recall (`open_recall`, the paper's "open" number): answer tokens found in the prediction, counted with
  multiplicity, over the number of answer tokens. `open_f1` adds precision (a long rambling prediction scores high
  recall but low F1).
An answer that normalises to nothing cannot be matched and scores 0 everywhere.
"""

import re
from collections import Counter, defaultdict
from typing import Sequence

NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
ARTICLES = {"a", "an", "the"}
CONTRACTIONS = {
    "aren't": "are not", "can't": "cannot", "couldn't": "could not", "didn't": "did not", "doesn't": "does not",
    "don't": "do not", "hadn't": "had not", "hasn't": "has not", "haven't": "have not", "isn't": "is not",
    "it's": "it is", "let's": "let us", "shouldn't": "should not", "that's": "that is", "there's": "there is",
    "they're": "they are", "wasn't": "was not", "we're": "we are", "weren't": "were not", "what's": "what is",
    "won't": "will not", "wouldn't": "would not", "you're": "you are", "i'm": "i am", "he's": "he is",
    "she's": "she is", "there're": "there are", "where's": "where is", "who's": "who is",
}
_CONTRACTION = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(CONTRACTIONS, key=len, reverse=True)) + r")\b")
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_PUNCTUATION = re.compile(r"[^\w\s\x00]|_")
YES_NO = ("yes", "no")


def normalize(text: str) -> list[str]:
    """The tokens both the answer and the prediction are compared on (see module docstring)."""
    text = str(text).lower().replace("\u2019", "'")
    text = _CONTRACTION.sub(lambda m: CONTRACTIONS[m.group(1)], text)
    text = text.replace("'", "")  # possessives: "patient's" -> "patients"
    text = _DECIMAL_POINT.sub("\x00", text)  # protect "2.5" while punctuation goes
    text = _PUNCTUATION.sub(" ", text).replace("\x00", ".")
    return [NUMBER_WORDS.get(w, w) for w in text.split() if w not in ARTICLES]


def closed_hit(prediction: str, answer: str) -> float:
    """LLaVA-Med's closed score: the normalised answer is a substring of the normalised prediction."""
    gt = " ".join(normalize(answer))
    return float(bool(gt) and gt in " ".join(normalize(prediction)))


def closed_hit_strict(prediction: str, answer: str) -> float:
    """Whole words in order; for yes/no answers, the prediction's first yes/no word decides."""
    gt, pred = normalize(answer), normalize(prediction)
    if not gt:
        return 0.0
    if gt in (["yes"], ["no"]):
        first = next((w for w in pred if w in YES_NO), None)
        return float(first == gt[0])
    n = len(gt)
    return float(any(pred[i:i + n] == gt for i in range(len(pred) - n + 1)))


def open_recall_f1(prediction: str, answer: str) -> tuple[float, float]:
    """(recall, F1) of answer tokens in the prediction, counted with multiplicity."""
    gt, pred = Counter(normalize(answer)), Counter(normalize(prediction))
    common = sum((gt & pred).values())
    if not gt or not common:
        return 0.0, 0.0
    recall, precision = common / sum(gt.values()), common / sum(pred.values())
    return recall, 2 * precision * recall / (precision + recall)


def score_one(prediction: str, answer: str, answer_type: str) -> dict:
    """Per-question scores: closed and closed_strict for CLOSED, recall and f1 for OPEN."""
    kind = _answer_type(answer_type)
    if kind == "CLOSED":
        return {"closed": closed_hit(prediction, answer), "closed_strict": closed_hit_strict(prediction, answer)}
    recall, f1 = open_recall_f1(prediction, answer)
    return {"recall": recall, "f1": f1}


def vqa_scores(predictions: Sequence[str], answers: Sequence[str], answer_types: Sequence[str],
               question_types: Sequence[str] | None = None) -> dict:
    """closed_accuracy, closed_accuracy_strict, open_recall, open_f1 (fractions in [0, 1]; None when there is no
    question of that kind), n_closed, n_open; with question_types also `by_question_type` of the same per type."""
    if not len(predictions) == len(answers) == len(answer_types):
        raise ValueError(f"predictions ({len(predictions)}), answers ({len(answers)}) and answer_types "
                         f"({len(answer_types)}) must have the same length")
    if question_types is not None and len(question_types) != len(answers):
        raise ValueError(f"question_types ({len(question_types)}) and answers ({len(answers)}) differ in length")
    rows = []
    for i, (pred, ans, kind) in enumerate(zip(predictions, answers, answer_types)):
        try:
            rows.append(score_one("" if pred is None else pred, ans, kind))
        except ValueError as e:
            raise ValueError(f"question {i}: {e}") from None
    scores = _summarise(rows)
    if question_types is not None:
        groups = defaultdict(list)
        for row, qtype in zip(rows, question_types):
            groups[str(qtype)].append(row)
        scores["by_question_type"] = {q: _summarise(groups[q]) for q in sorted(groups)}
    return scores


def _summarise(rows: list[dict]) -> dict:
    closed = [r for r in rows if "closed" in r]
    open_ = [r for r in rows if "recall" in r]

    def mean(group: list[dict], key: str) -> float | None:
        return sum(r[key] for r in group) / len(group) if group else None

    return {"closed_accuracy": mean(closed, "closed"), "closed_accuracy_strict": mean(closed, "closed_strict"),
            "open_recall": mean(open_, "recall"), "open_f1": mean(open_, "f1"),
            "n_closed": len(closed), "n_open": len(open_)}


def _answer_type(value: str) -> str:
    kind = value.strip().upper() if isinstance(value, str) else None
    if kind not in ("OPEN", "CLOSED"):
        raise ValueError(f"unknown answer_type {value!r} (expected OPEN or CLOSED)")
    return kind


def forgiven_by_lenient(predictions: Sequence[str], answers: Sequence[str], answer_types: Sequence[str]) -> list[int]:
    """Indices of CLOSED questions the paper's substring metric counts as right but the strict one does not
    (e.g. answer "no", prediction "I do not know")."""
    return [i for i, (pred, ans, kind) in enumerate(zip(predictions, answers, answer_types))
            if _answer_type(kind) == "CLOSED" and closed_hit(pred or "", ans) > closed_hit_strict(pred or "", ans)]
