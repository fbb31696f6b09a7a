"""The published numbers our results are printed beside (LLaVA-Med, NeurIPS
2023, and LLaVA-Med++), in percent.

VQA: (open, closed) = (recall on OPEN questions, substring accuracy on CLOSED questions), as
LLaVA-Med's scorer computes them (`metrics.vqa_scores(mode="paper")`, the "paper metric"), each
model fine-tuned per benchmark except the zero-shot row. Chat: the relative score of the GPT-4
judge (model / reference x 100).
"""

VQA_BENCHMARKS = ("vqa-rad", "slake", "pathvqa")

PAPER_VQA = {
    "LLaVA (general)": {"vqa-rad": (50.00, 65.07), "slake": (78.18, 63.22), "pathvqa": (7.74, 63.20)},
    "LLaVA-Med from LLaVA": {"vqa-rad": (61.52, 84.19), "slake": (83.08, 85.34), "pathvqa": (37.95, 91.21)},
    "LLaVA-Med from Vicuna": {"vqa-rad": (64.39, 81.98), "slake": (84.71, 83.17), "pathvqa": (38.87, 91.65)},
    "LLaVA-Med BiomedCLIP": {"vqa-rad": (64.75, 83.09), "slake": (87.11, 86.78), "pathvqa": (39.60, 91.09)},
    "LLaVA-Med 60K-IM zero-shot": {"vqa-rad": (28.23, 61.40), "slake": (39.17, 52.16), "pathvqa": (12.30, 54.05)},
    "LLaVA-Med++ (MedTrinity)": {"vqa-rad": (65.1, 84.9), "slake": (86.4, 89.2), "pathvqa": (37.9, 92.7)},
}

# Test-set sizes: (questions, open, closed).
TEST_SIZES = {"vqa-rad": (451, 179, 272), "slake": (1061, 645, 416), "pathvqa": (6761, 3370, 3391)}

PAPER_CHAT = {"LLaVA": 36.1, "LLaVA-Med stage 1 only": 23.3, "LLaVA-Med 10K": 39.9, "LLaVA-Med 60K": 49.4,
              "LLaVA-Med 60K-IM": 50.2}


def vqa_table(benchmark: str, ours: dict[str, dict] | None = None) -> list[dict]:
    """Rows {method, open, closed, closed_strict} for one benchmark: the paper's, then ours (name ->
    `vqa_scores` dict in the paper's mode, in fractions; shown in percent, with our strict closed
    accuracy beside). Scores of another mode are refused: they would not be the paper's metric."""
    if benchmark not in VQA_BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}: choose one of {', '.join(VQA_BENCHMARKS)}")
    for name, s in (ours or {}).items():
        if s.get("mode") != "paper":
            raise ValueError(f"{name!r}: scores in mode {s.get('mode')!r}; the paper's table needs mode 'paper'")
    rows = [{"method": name, "open": v[benchmark][0], "closed": v[benchmark][1], "closed_strict": None}
            for name, v in PAPER_VQA.items()]
    for name, s in (ours or {}).items():
        pct = {k: None if s.get(k) is None else round(100 * s[k], 2)
               for k in ("open_recall", "closed_accuracy", "closed_accuracy_strict")}
        rows.append({"method": name, "open": pct["open_recall"], "closed": pct["closed_accuracy"],
                     "closed_strict": pct["closed_accuracy_strict"]})
    return rows
