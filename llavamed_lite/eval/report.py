"""What notebook 06 shows of an evaluation: scores beside baselines and the paper, bars per
question type, a gallery of questions with their answers and predictions, and the closed answers
that only the paper's metric counts.

Columns marked "paper metric" are LLaVA-Med's scoring (`metrics.vqa_scores(mode="paper")`), the ones
comparable with the paper's table; "ours" marks our stricter figures beside them.

Everything takes `VQAItem`s and the answer records `generate_answers` writes (matched by
question_id), so it works the same for the tiny world, VQA-RAD, SLAKE or PathVQA.
"""

import textwrap
from typing import Iterable, Sequence

import matplotlib.pyplot as plt
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter
import numpy as np
from PIL import ImageOps

from ..images import load_image
from .baselines import always_yes, majority_answer
from .metrics import closed_hit, closed_hit_strict, forgiven_by_lenient, open_recall, vqa_scores
from .vqa import VQAItem


def predictions_for(items: Sequence[VQAItem], answers: Iterable[dict]) -> list[str]:
    """The answer text for each item, in the items' order (answer
    records matched by question_id)."""
    by_id = {str(a["question_id"]): a.get("text", "") for a in answers}
    missing = [it.question_id for it in items if str(it.question_id) not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} question(s) have no answer, e.g. {missing[:3]}")
    return [by_id[str(it.question_id)] for it in items]


def scores_of(items: Sequence[VQAItem], predictions: Sequence[str]) -> dict:
    """`vqa_scores` with the breakdown by question type."""
    return vqa_scores(list(predictions), [it.answer for it in items],
                      [it.answer_type for it in items], [it.question_type for it in items])


def baseline_scores(train: Sequence[VQAItem], test: Sequence[VQAItem]) -> dict[str, dict]:
    """Scores of the image-free answers on `test`: always "yes", and the most frequent
    training answer per question type (learnt from `train`). A model has to beat these to show
    that it looks at the image."""
    return {'always "yes"': scores_of(test, always_yes(test)),
            "majority per question type": scores_of(test, majority_answer(train, test))}


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def scores_table(scores: dict[str, dict]) -> str:
    """A markdown table, one row per named `vqa_scores` dict: closed (paper metric, strict), open
    (recall as the paper, F1), counts (and the rows the paper's scorer skips)."""
    lines = ["| | closed (paper metric) | closed (strict, ours) | open recall (paper metric) "
             "| open F1 (ours) | closed / open questions (skipped) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, s in scores.items():
        skipped = f" ({s['n_skipped']})" if s.get("n_skipped") else ""
        lines.append(f"| {name} | {_pct(s['closed_accuracy'])} "
                     f"| {_pct(s['closed_accuracy_strict'])} | {_pct(s['open_recall'])} "
                     f"| {_pct(s['open_f1'])} "
                     f"| {s['n_closed']} / {s['n_open']}{skipped} |")
    return "\n".join(lines)


def paper_table(rows: Sequence[dict]) -> str:
    """`paper.vqa_table` rows as a markdown table (percent): the paper metric, our strict closed
    accuracy beside it (the paper gives none)."""
    lines = ["| method | open recall (paper metric) | closed (paper metric) "
             "| closed (strict, ours) |",
             "| --- | ---: | ---: | ---: |"]
    for r in rows:
        cells = ["" if r[k] is None else f"{r[k]:.2f}" for k in ("open", "closed", "closed_strict")]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_by_question_type(scores: dict[str, dict], ax_closed=None, ax_open=None,
                          min_questions: int = 1):
    """Bars per question type, one colour per named `scores_of` dict: closed accuracy (lenient bars,
    strict as black ticks) on the left, open recall on the right. Types with fewer than
    `min_questions` questions are left out."""
    if ax_closed is None or ax_open is None:
        fig, (ax_closed, ax_open) = plt.subplots(1, 2, figsize=(13, 4))
    else:
        fig = ax_closed.figure
    names = list(scores)
    for ax, kind, key, n_key in ((ax_closed, "closed", "closed_accuracy", "n_closed"),
                                 (ax_open, "open", "open_recall", "n_open")):
        first = scores[names[0]]["by_question_type"]
        types = [t for t, s in first.items() if s[n_key] >= min_questions]
        x, width = np.arange(len(types)), 0.8 / max(len(names), 1)
        for k, name in enumerate(names):
            by_type = scores[name]["by_question_type"]
            values = [by_type.get(t, {}).get(key) or 0.0 for t in types]
            ax.bar(x + k * width, values, width, label=name)
            if kind == "closed":  # strict accuracy as a black tick on each bar
                strict = [by_type.get(t, {}).get("closed_accuracy_strict") or 0.0 for t in types]
                ax.scatter(x + k * width, strict, marker="_", color="black", s=12 * 72 * width,
                           zorder=3)
        ax.set_xticks(x + width * (len(names) - 1) / 2)
        ax.set_xticklabels([f"{t or '(none)'}\n{first[t][n_key]}" for t in types], rotation=45,
                           ha="right", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{kind} questions per type (n below): "
                     + ("accuracy\n(bars: paper metric, black ticks: strict)" if kind == "closed"
                        else "recall (paper metric)"), fontsize=10)
    ax_open.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars, not on them
    fig.tight_layout()
    return fig


def pick_examples(items: Sequence[VQAItem], predictions: Sequence[str], n: int = 8,
                  seed: int = 0) -> list[int]:
    """Indices of n questions for a gallery: half closed, half open where
    possible, on distinct images."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    picked, images = [], set()
    for kind in ("CLOSED", "OPEN"):
        want = n // 2 if kind == "CLOSED" else n - len(picked)
        for i in order:
            if len([p for p in picked if items[p].answer_type == kind]) >= want:
                break
            if items[i].answer_type == kind and items[i].image not in images:
                picked.append(int(i))
                images.add(items[i].image)
    return picked


def _mark(item: VQAItem, prediction: str) -> str:
    if item.answer_type == "CLOSED":
        lenient = closed_hit(prediction, item.answer)
        strict = closed_hit_strict(prediction, item.answer)
        return "right" if strict else ("right only by the paper metric" if lenient else "wrong")
    return f"recall {open_recall(prediction, item.answer):.2f}"


def plot_gallery(items: Sequence[VQAItem], predictions: Sequence[str],
                 indices: Sequence[int] | None = None, columns: int = 4, seed: int = 0):
    """Image, question, answer and prediction for a few questions (default: `pick_examples`)."""
    indices = pick_examples(items, predictions, 8, seed) if indices is None else list(indices)
    if not indices:
        raise ValueError("no questions to show")
    rows = (len(indices) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 5.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    wrap = lambda s, w=36: "\n".join(textwrap.wrap(str(s), w)[:3])  # noqa: E731
    for ax, i in zip(axes.flat, indices):
        item, pred = items[i], predictions[i]
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.imshow(ImageOps.pad(load_image(item.image), (256, 256), color=(0, 0, 0)))
        ax.set_title(f"{item.answer_type.lower()} · {item.question_type or '-'}\n"
                     f"Q: {wrap(item.question)}", fontsize=8, loc="left")
        ax.set_xlabel(f"answer: {wrap(item.answer)}\nmodel: {wrap(pred or '(empty)')}\n"
                      f"[{_mark(item, pred)}]", fontsize=8, loc="left")
    fig.tight_layout()
    return fig


def forgiven_examples(items: Sequence[VQAItem], predictions: Sequence[str],
                      limit: int = 10) -> list[dict]:
    """Closed questions that the paper's substring metric counts as right
    and our strict one does not."""
    idx = forgiven_by_lenient(list(predictions), [it.answer for it in items],
                              [it.answer_type for it in items])
    return [{"question_id": items[i].question_id, "question": items[i].question,
             "answer": items[i].answer, "prediction": predictions[i]} for i in idx[:limit]]


def examples_table(rows: Sequence[dict],
                   columns: Sequence[str] = ("question", "answer", "prediction")) -> str:
    """Rows of dicts as a markdown table (`|` and newlines escaped)."""
    clean = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(clean(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def plot_loss(history: Sequence[dict] | dict[str, Sequence[dict]], title: str = "training loss",
              ax=None):
    """A stage's loss_history.json (step, loss) as a curve, or several ({label: history}) on one
    axis. The loss axis is logarithmic: late in training 0.012 against 0.044 is the difference that
    matters, and a linear axis flattens it to the floor."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    curves = history if isinstance(history, dict) else {None: history}
    for label, rows in curves.items():
        ax.plot([h["step"] for h in rows], [h["loss"] for h in rows], label=label)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # ticks 0.01, 0.02, 0.05, 0.1 ... as plain numbers
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (log scale)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    if len(curves) > 1:
        ax.legend()
    ax.figure.tight_layout()
    return ax.figure


def plot_heldout(curves: Sequence[dict] | dict[str, Sequence[dict]], title: str = "held-out metric",
                 consecutive: bool = False, ax=None):
    """A stage's heldout_curve.json (step, closed, open) as two lines, closed accuracy (solid) and
    open recall (dashed), or several runs ({label: curve}) in one colour each. `consecutive`: the
    runs followed each other (stage 2, then VQA fine-tuning), so each starts on the step axis where
    the one before ended, at a dotted line. The paper's metric, from 0 to 1."""
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.2))
    runs = curves if isinstance(curves, dict) else {None: curves}
    start = 0
    for i, (label, rows) in enumerate(runs.items()):
        steps = [start + p["step"] for p in rows]
        for key, style, name in (("closed", "-", "closed accuracy"), ("open", "--", "open recall")):
            values = [np.nan if p[key] is None else p[key] for p in rows]
            ax.plot(steps, values, style, marker="o", markersize=3, color=f"C{i}",
                    label=f"{label}: {name}" if label else name)
        if consecutive and i > 0:
            ax.axvline(start, color="grey", linestyle=":", linewidth=1)
        start = steps[-1] if consecutive and steps else start
    ax.set_ylim(0, 1)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))  # few ticks: 7,200 steps fit
    ax.set_xlabel("step")
    ax.set_ylabel("paper metric")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")  # beside the axes, off the lines
    ax.figure.tight_layout()
    return ax.figure


def plot_paper_comparison(rows: Sequence[dict], title: str = ""):
    """`paper.vqa_table` rows as horizontal bars, closed accuracy and open recall (paper metric) per method:
    the paper's rows in blue, ours in orange, question-only baselines (methods starting "baseline") in grey."""
    rows = [r for r in rows if r["closed"] is not None or r["open"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.42 * len(rows) + 1.4), sharey=True)
    y = np.arange(len(rows))[::-1]  # the first row on top
    colours = ["tab:grey" if r["method"].startswith("baseline") else
               "tab:orange" if "(ours" in r["method"] else "tab:blue" for r in rows]
    for ax, key, label in ((axes[0], "closed", "closed accuracy (paper metric), %"),
                           (axes[1], "open", "open recall (paper metric), %")):
        values = [r[key] or 0.0 for r in rows]
        ax.barh(y, values, color=colours)
        for yi, v, r in zip(y, values, rows):
            ax.text(v + 1, yi, "n/a" if r[key] is None else f"{v:.1f}", va="center", fontsize=8)
        ax.set_xlim(0, 105)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels([textwrap.shorten(r["method"], 48) for r in rows], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
