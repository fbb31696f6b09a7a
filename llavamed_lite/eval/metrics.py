"""LLaVA-Med's VQA metrics, written out so that users can see which number is which.

`mode="paper"` (the default) scores exactly as LLaVA-Med's published numbers were scored. Both
strings are lower-cased and normalised by the VQA challenge's rules (`normalize_paper`):
1. Punctuation: each of the 21 characters ; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? ! is deleted when
   it stands next to a space anywhere in the string, or when the string holds a digit-comma-digit
   anywhere; otherwise it becomes a space. The test is on the whole string, per character:
   "left-sided - lower lobe" loses every dash. `:`, `%` and apostrophes are kept.
2. Periods not followed by a digit are deleted, at most 32 of them, from the left.
3. The words: number words none, zero .. ten become digits (nothing above ten: "twelve" stays), the
   articles a / an / the go, apostrophe-less contractions get their apostrophe ("dont" -> "don't";
   "isn't" stays as it is). Rejoined with single spaces. (The official code then deletes commas;
   rule 1 has left none.)
Then
- CLOSED (`closed_accuracy`): 1 when the normalised answer occurs in the normalised prediction,
  character by character. It forgives a lot: "no" hits "not", "know" and "nodule" (but not "isn't").
- OPEN (`open_recall`, the paper's "Open" column): tp / (tp + fn) over the words of the two strings,
  where tp adds, for each word in both, the prediction's count of it (a word repeated in the
  prediction counts each time) and fn, for each answer word missing from the prediction, the
  answer's count. `open_accuracy` is the closed rule applied to open questions (a separate figure,
  not the paper's column).
- Rows pair predictions with answers by position; a row whose answer type is not exactly "OPEN" or
  "CLOSED" (e.g. "CLOSED " with a space) is skipped, as by the official scorer, and counted in
  `n_skipped`.

Ours, printed beside the paper's figures, never in their place:
- `closed_accuracy_strict`: our normalisation (`normalize`: contractions expanded, "isn't" -> "is
  not", punctuation to spaces, number words up to twenty), the answer's words as whole words in
  order; for a yes/no answer the prediction's first "yes" or "no" decides.
- `open_f1`: F1 of answer words in the prediction (our normalisation): recall with precision, so a
  long rambling prediction is not rewarded.
- `mode="lenient"`: our earlier figures, our normalisation throughout (substring closed accuracy,
  recall counted by the answer's words), answer types read case- and space-insensitively.
"""

import re
from collections import Counter, defaultdict
from typing import Sequence

MODES = ("paper", "lenient")
PAPER_METRIC_NOTE = ("paper metric (LLaVA-Med's scorer): closed_accuracy, open_recall (the paper's "
                     "Open column), open_accuracy; ours, beside them: closed_accuracy_strict, "
                     "open_f1")

# ---- the paper's normalisation (the VQA challenge's) ---------------------------------------------
PAPER_PUNCTUATION = ";/[]\"{}()=+\\_-><@`,?!"
PAPER_NUMBER_WORDS = {"none": "0", **{w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten".split())}}
ARTICLES = {"a", "an", "the"}
# The contracted forms of the VQA table. Its keys drop one apostrophe of a form ("dont" -> "don't",
# "couldnt've" and "couldn'tve" -> "couldn't've"). Its forms with a capital I ("I'm", "I've",
# "I'd've") can never match lower-cased text, so they are not here.
_CONTRACTED = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't
haven't he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've
might've mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've
shouldn't shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've someone'll
someone's something'd something'd've something'll that's there'd there'd've there're there's they'd
they'd've they'll they're they've 'twas wasn't we'd've we've weren't what'll what're what's what've
when's where'd where's where've who'd who'd've who'll who's who've why'll why're why's won't
would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're
you've""".split()
PAPER_CONTRACTIONS = {form[:i] + form[i + 1:]: form
                      for form in _CONTRACTED for i, c in enumerate(form) if c == "'"}
PAPER_CONTRACTIONS["somebody'd"] = "somebodyd"  # the table's one entry that goes the other way
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD = re.compile(r"\.(?!\d)")
PERIODS_REMOVED = 32  # the official code passes re.UNICODE (32) where re.sub takes its count


def normalize_paper(text: str) -> str:
    """The string the paper's metrics compare (module docstring, rules 1-3)."""
    text = str(text).lower()
    keep_together = bool(_DIGIT_COMMA_DIGIT.search(text))
    out = text
    # the condition looks at the whole original string, once per character
    for c in PAPER_PUNCTUATION:
        out = out.replace(c, "" if keep_together or f"{c} " in text or f" {c}" in text else " ")
    out = _PERIOD.sub("", out, count=PERIODS_REMOVED)
    words = [PAPER_NUMBER_WORDS.get(w, w) for w in out.split()]
    words = [PAPER_CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return " ".join(words)


def closed_hit(prediction: str, answer: str) -> float:
    """The paper's closed score: the normalised answer occurs in the normalised
    prediction (as a substring)."""
    return float(normalize_paper(answer) in normalize_paper(prediction))


def open_recall(prediction: str, answer: str) -> float:
    """The paper's open score: recall over word counts, the prediction's
    count for each shared word."""
    pred = Counter(normalize_paper(prediction).split())
    gt = Counter(normalize_paper(answer).split())
    tp = sum(n for w, n in pred.items() if w in gt)
    fn = sum(n for w, n in gt.items() if w not in pred)
    return tp / (tp + fn) if tp + fn else 0.0


# ---- our normalisation and metrics ---------------------------------------------------------------
NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
CONTRACTIONS = {
    "aren't": "are not", "can't": "cannot", "couldn't": "could not", "didn't": "did not",
    "doesn't": "does not", "don't": "do not", "hadn't": "had not", "hasn't": "has not",
    "haven't": "have not", "isn't": "is not", "it's": "it is", "let's": "let us",
    "shouldn't": "should not", "that's": "that is", "there's": "there is", "they're": "they are",
    "wasn't": "was not", "we're": "we are", "weren't": "were not", "what's": "what is",
    "won't": "will not", "wouldn't": "would not", "you're": "you are", "i'm": "i am",
    "he's": "he is", "she's": "she is", "there're": "there are", "where's": "where is", "who's": "who is",
}
_CONTRACTION = re.compile(r"\b(" + "|".join(re.escape(k)
                                             for k in sorted(CONTRACTIONS, key=len, reverse=True))
                         + r")\b")
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_PUNCTUATION = re.compile(r"[^\w\s\x00]|_")
YES_NO = ("yes", "no")


def normalize(text: str) -> list[str]:
    """Our tokens (strict closed accuracy, F1, the lenient mode, the baselines): lower-case,
    contractions expanded, punctuation to spaces (periods between digits kept: "2.5"), number words
    up to twenty to digits, no articles."""
    text = str(text).lower().replace("\u2019", "'")
    text = _CONTRACTION.sub(lambda m: CONTRACTIONS[m.group(1)], text)
    text = text.replace("'", "")  # possessives: "patient's" -> "patients"
    text = _DECIMAL_POINT.sub("\x00", text)  # protect "2.5" while punctuation goes
    text = _PUNCTUATION.sub(" ", text).replace("\x00", ".")
    return [NUMBER_WORDS.get(w, w) for w in text.split() if w not in ARTICLES]


def closed_hit_lenient(prediction: str, answer: str) -> float:
    """Ours, lenient: our normalised answer is a substring of our normalised
    prediction (0 for an empty answer)."""
    gt = " ".join(normalize(answer))
    return float(bool(gt) and gt in " ".join(normalize(prediction)))


def closed_hit_strict(prediction: str, answer: str) -> float:
    """Ours, strict: whole words in order; for yes/no answers, the
    prediction's first yes/no word decides."""
    gt, pred = normalize(answer), normalize(prediction)
    if not gt:
        return 0.0
    if gt in (["yes"], ["no"]):
        first = next((w for w in pred if w in YES_NO), None)
        return float(first == gt[0])
    n = len(gt)
    return float(any(pred[i:i + n] == gt for i in range(len(pred) - n + 1)))


def open_recall_f1(prediction: str, answer: str) -> tuple[float, float]:
    """Ours: (recall, F1) of answer tokens in the prediction, each counted
    at most as often as in both."""
    gt, pred = Counter(normalize(answer)), Counter(normalize(prediction))
    common = sum((gt & pred).values())
    if not gt or not common:
        return 0.0, 0.0
    recall, precision = common / sum(gt.values()), common / sum(pred.values())
    return recall, 2 * precision * recall / (precision + recall)


# ---- scoring a benchmark -------------------------------------------------------------------------
def answer_kind(value, mode: str = "paper") -> str | None:
    """"OPEN" or "CLOSED". The paper's scorer takes only these exact strings
    (None: the row is skipped); the lenient mode reads them case- and
    space-insensitively and refuses anything else."""
    if mode == "paper":
        return value if value in ("OPEN", "CLOSED") else None
    kind = value.strip().upper() if isinstance(value, str) else None
    if kind not in ("OPEN", "CLOSED"):
        raise ValueError(f"unknown answer_type {value!r} (expected OPEN or CLOSED)")
    return kind


def score_one(prediction: str, answer: str, answer_type: str, mode: str = "paper") -> dict:
    """Per-question scores: closed and closed_strict for CLOSED; recall, hit and
    f1 for OPEN; {} when skipped."""
    kind = answer_kind(answer_type, mode)
    if kind is None:
        return {}
    prediction = "" if prediction is None else prediction
    hit = closed_hit if mode == "paper" else closed_hit_lenient
    if kind == "CLOSED":
        return {"closed": hit(prediction, answer),
                "closed_strict": closed_hit_strict(prediction, answer)}
    ours_recall, f1 = open_recall_f1(prediction, answer)
    return {"recall": open_recall(prediction, answer) if mode == "paper" else ours_recall,
            "hit": hit(prediction, answer), "f1": f1}


def vqa_scores(predictions: Sequence[str], answers: Sequence[str], answer_types: Sequence[str],
               question_types: Sequence[str] | None = None, mode: str = "paper") -> dict:
    """Predictions and answers paired by position. Returns `mode`, closed_accuracy, open_recall,
    open_accuracy (the paper's in paper mode) and ours beside them, closed_accuracy_strict and
    open_f1 (fractions in [0, 1]; None when there is no question of that kind), n_closed, n_open,
    n_skipped; with question_types also `by_question_type`."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    if not len(predictions) == len(answers) == len(answer_types):
        raise ValueError(f"predictions ({len(predictions)}), answers ({len(answers)}) and "
                         f"answer_types ({len(answer_types)}) must have the same length")
    if question_types is not None and len(question_types) != len(answers):
        raise ValueError(f"question_types ({len(question_types)}) and answers ({len(answers)}) "
                         "differ in length")
    rows = []
    for i, (pred, ans, kind) in enumerate(zip(predictions, answers, answer_types)):
        try:
            rows.append(score_one(pred, ans, kind, mode))
        except ValueError as e:
            raise ValueError(f"question {i}: {e}") from None
    scores = {"mode": mode, **_summarise(rows)}
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

    return {"closed_accuracy": mean(closed, "closed"),
            "closed_accuracy_strict": mean(closed, "closed_strict"),
            "open_recall": mean(open_, "recall"), "open_accuracy": mean(open_, "hit"),
            "open_f1": mean(open_, "f1"), "n_closed": len(closed), "n_open": len(open_),
            "n_skipped": len(rows) - len(closed) - len(open_)}


def forgiven_by_lenient(predictions: Sequence[str], answers: Sequence[str],
                        answer_types: Sequence[str]) -> list[int]:
    """Indices of CLOSED questions the paper's substring metric counts as right but our strict one
    does not (e.g. answer "no", prediction "I do not know")."""
    return [i for i, (pred, ans, kind) in enumerate(zip(predictions, answers, answer_types))
            if answer_kind(kind) == "CLOSED"
            and closed_hit(pred or "", ans) > closed_hit_strict(pred or "", ans)]
