"""The tiny world on disk: figures, LLaVA-Med caption files and VQA records, in a train and a
held-out split.

    out_dir/
      images/{pair_id}.png         the figures (RGB PNG, image_size px square)
      captions_train.json          LLaVA-Med caption-file records (+ "findings" and "image", which readers ignore)
      captions_heldout.json
      vqa_train.json               VQA records: id, image, answer_type, question_type, conversations (+ domain, pair_id)
      vqa_heldout.json
      world.json                   the arguments it was built with (written last: its presence means "complete")

Figure i of a split comes from its own random streams (seed, split, i; one for findings and text,
one for drawing), so the first N figures are the same whatever n_train is, the same seed gives
identical bytes, and the same figure at another image_size has the same findings, caption and
questions. The splits share no image and no question record. Figures cycle through the five domains,
so any prefix is balanced. Three figures make one synthetic "article" (same pmid, figure numbers
1-3).
"""

from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..data.formats import DOMAINS, IMAGE_TOKEN, write_records
from ..io import atomic_write_json, read_json
from .draw import check_size, render
from .findings import sample_findings
from .questions import questions_for
from .text import caption, fig_label, mentions

SPLITS = ("train", "heldout")
FIGURES_PER_ARTICLE = 3
WORLD_VERSION = 2  # bump when the drawing or the text changes, so cached worlds are rebuilt


def check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def world_paths(out_dir: str | Path) -> dict[str, Path]:
    root = Path(out_dir)
    paths = {"root": root, "images": root / "images", "manifest": root / "world.json"}
    for split in SPLITS:
        paths[f"captions_{split}"] = root / f"captions_{split}.json"
        paths[f"vqa_{split}"] = root / f"vqa_{split}.json"
    return paths


def figure(split: str, index: int, seed: int, image_size: int) -> tuple[dict, Any, list[dict]]:
    """Figure `index` of `split`: (caption record, PIL image, VQA records). Deterministic."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index, 0])  # findings, text, questions
    domain = DOMAINS[index % len(DOMAINS)]
    findings = sample_findings(domain, rng)
    image = render(findings, image_size, np.random.default_rng([seed, SPLITS.index(split), index, 1]))
    pair_id = f"tw-{split}-{index:05d}"
    article, number = divmod(index, FIGURES_PER_ARTICLE)
    label = fig_label(number + 1, rng)
    panel = "A" if rng.random() < 0.2 else None
    ref = f"{label.split()[0]} {number + 1}{panel or ''}"
    record = {
        "pair_id": pair_id,
        "pmid": str(30_000_000 + 5_000_000 * SPLITS.index(split) + article),
        "fig_id": f"F{number + 1}",
        "fig_label": label,
        "fig_caption": caption(findings, rng, panel=panel),
        "in_text_mention": mentions(findings, rng, ref),
        "domain": {d: d == domain for d in DOMAINS},
        "findings": findings,
        "image": f"images/{pair_id}.png",
    }
    vqa = [{"id": f"{pair_id}-q{k}", "image": record["image"], "pair_id": pair_id, "domain": domain,
            "answer_type": q["answer_type"], "question_type": q["question_type"],
            "conversations": [{"from": "human", "value": f"{IMAGE_TOKEN}\n{q['question']}"},
                              {"from": "gpt", "value": q["answer"]}]}
           for k, q in enumerate(questions_for(findings, rng))]
    return record, image, vqa


def build_tiny_world(out_dir: str | Path, n_train: int, n_heldout: int, image_size: int = 64, seed: int = 0,
                     progress: bool = False) -> dict[str, Path]:
    """Write the tiny world under out_dir (see module docstring) and return its paths. Skips the
    work when out_dir already holds a complete world built with the same arguments."""
    args = {"version": WORLD_VERSION, "n_train": check_count("n_train", n_train),
            "n_heldout": check_count("n_heldout", n_heldout), "image_size": check_size(image_size),
            "seed": check_count("seed", seed)}
    paths = world_paths(out_dir)
    if paths["manifest"].exists() and _same_args(paths["manifest"], args) and all(p.exists() for p in paths.values()):
        return paths
    paths["manifest"].unlink(missing_ok=True)
    paths["images"].mkdir(parents=True, exist_ok=True)
    written = set()
    for split, n in (("train", args["n_train"]), ("heldout", args["n_heldout"])):
        records, vqa = [], []
        indices = range(n)
        if progress:
            indices = tqdm(indices, desc=f"tiny world ({split})")
        for i in indices:
            record, image, questions = figure(split, i, args["seed"], args["image_size"])
            image.save(paths["root"] / record["image"], format="PNG")
            written.add(Path(record["image"]).name)
            records.append(record)
            vqa.extend(questions)
        write_records(paths[f"captions_{split}"], records)
        write_records(paths[f"vqa_{split}"], vqa)
    for stale in paths["images"].glob("tw-*.png"):  # left by an earlier, larger build
        if stale.name not in written:
            stale.unlink()
    atomic_write_json(paths["manifest"], args)
    return paths


def _same_args(manifest: Path, args: dict) -> bool:
    try:
        return read_json(manifest) == args
    except ValueError:
        return False
