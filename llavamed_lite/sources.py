"""What each stage trains on, from the configured data source (`data.source`)
and the run directory's contract.

    source      stage 1                                stage 2                                  vqa (data.benchmark)
    tiny        the tiny world's alignment records     offline conversations on its captions    its questions, or a
    llava-med   the release's alignment 500K           the release's instruct variant           benchmark's train
    curated     notebook 02's alignment records        notebook 03's conversations              split (vqa-rad ...)

At `tiny` the tiny world and its files are built on demand (seconds), so any stage runs
on a fresh run directory. The other sources are never replaced by the tiny world: a
missing input is a `MissingInput` error naming the file, the notebook or command that
makes it, and the parameter to set.
"""

from collections import defaultdict
from pathlib import Path

from .config import DATA_SOURCES, Config
from .data.alignment import alignment_records
from .data.formats import (IMAGE_TOKEN, conversations_of, load_records, read_caption_file,
                           record_domain, write_records)
from .data.release import domain_of, prepare_release_records
from .eval.vqa import BENCHMARKS, load_benchmark, with_small_images, write_llava_vqa
from .runs import MissingInput, Records, RunDir
from .synth.world import build_tiny_world


def check_source(source: str) -> str:
    if source not in DATA_SOURCES:
        raise ValueError(f"unknown data.source {source!r}: choose one of {', '.join(DATA_SOURCES)}")
    return source


def ensure_world(cfg: Config, run_dir: str | Path, progress: bool = False) -> dict[str, Path]:
    """The tiny world in run_dir/data with the config's sizes (a complete one is kept)."""
    return build_tiny_world(RunDir(run_dir).world, cfg.data.n_train_figures,
                            cfg.data.n_heldout_figures, cfg.data.image_size, cfg.seed,
                            progress=progress)


def ensure_alignment(cfg: Config, run_dir: str | Path) -> Records:
    """Stage-1 records of the tiny world (an image, a brief-description instruction,
    the caption as the answer)."""
    world = ensure_world(cfg, run_dir)
    records = RunDir(run_dir).world_records("alignment_train.json")
    if not records.path.exists():
        captions = read_caption_file(world["captions_train"])
        write_records(records.path,
                      alignment_records(captions, records.image_folder, seed=cfg.seed))
    return records


def ensure_instruct(cfg: Config, run_dir: str | Path, progress: bool = False) -> Records:
    """Stage-2 conversations of the tiny world: the offline backend on its train captions (03 writes
    the same file with the same call, or another backend's file that is then kept)."""
    # loads the OpenAI client (a second): other stages skip it
    from .instruct.synthesize import synthesize_offline

    world = ensure_world(cfg, run_dir)
    out = RunDir(run_dir).instruct("tiny")
    synthesize_offline(world["captions_train"], out.path, cfg.seed, progress)
    return out


def curated_captions(run_dir: str | Path) -> Path:
    """Notebook 02's caption file, the input of 03 on the curated chain."""
    path = RunDir(run_dir).curated()["captions"]
    if not path.is_file():
        raise MissingInput(f"{path} is missing: it is made by notebook 02 (or `llavamed-lite curate "
                           f"--run-dir {run_dir} --input PACKAGES`); or give notebook 03 a caption "
                           "file with its `captions` parameter")
    return path


def curated_instruct(run_dir: str | Path) -> Records:
    return RunDir(run_dir).instruct("curated").require(
        "notebook 03 with data_source='curated' (or `llavamed-lite synthesize --captions "
        f"{RunDir(run_dir).curated()['captions']} "
        f"--out {RunDir(run_dir).instruct('curated').path}`)")


def curated_alignment(run_dir: str | Path) -> Records:
    return RunDir(run_dir).curated_alignment().require(
        f"notebook 02 (or `llavamed-lite curate --run-dir {run_dir} --input PACKAGES`)")


def ensure_vqa(cfg: Config, run_dir: str | Path, benchmark: str | None = None) -> Records:
    """VQA fine-tuning records: the tiny world's questions, or a benchmark's training split (its first
    data.train_limit questions when set; images shrunk once to 4x the model's input size: resizing
    1,000 px JPEGs at every step is slow)."""
    benchmark = benchmark or cfg.data.benchmark
    if benchmark == "tiny":
        ensure_world(cfg, run_dir)
        return RunDir(run_dir).world_records("vqa_train.json")
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}: choose one of {', '.join(BENCHMARKS)}")
    out = RunDir(run_dir).benchmark_train(benchmark, cfg.data.train_limit)
    if not out.exists():
        try:
            items = load_benchmark(benchmark, "train", cfg.data.benchmark_data)[:cfg.data.train_limit]
        except FileNotFoundError as e:
            raise MissingInput(f"{benchmark} training split: {e}; set data.benchmark_data to its "
                               "folder") from None
        small = with_small_images(items, out.image_folder, 4 * cfg.data.image_size)
        write_llava_vqa(out.path, small, image_folder=out.image_folder)
    return out


def stage_inputs(cfg: Config, stage: str, run_dir: str | Path, benchmark: str | None = None,
                 progress: bool = True) -> Records:
    """The records and image folder a stage trains on, from
    cfg.data.source (vqa: from the benchmark)."""
    stage, source = str(stage), check_source(cfg.data.source)
    if stage == "vqa":
        if (benchmark or cfg.data.benchmark) == "tiny" and source != "tiny":
            raise ValueError(f"VQA fine-tuning at data.source={source!r} trains on a benchmark's "
                             "training split: set data.benchmark (vqa-rad, slake or pathvqa); the "
                             "tiny world's questions go with the tiny source only")
        return ensure_vqa(cfg, run_dir, benchmark)
    if source == "tiny":
        return ensure_alignment(cfg, run_dir) if stage == "1" else ensure_instruct(cfg, run_dir)
    if source == "curated":
        return curated_alignment(run_dir) if stage == "1" else curated_instruct(run_dir)
    return prepare_release_records(RunDir(run_dir), stage, cfg.data.release,
                                   cfg.data.instruct_variant, cfg.data.max_pairs, cfg.seed, progress)


def caption_samples(cfg: Config, run_dir: str | Path, records: Records, n: int = 300) -> list[dict]:
    """Figures to caption before and after stage 1, each {image, domain, caption}: the tiny world's
    held-out figures at source tiny; otherwise the last n stage-1 records (seen in training: a smoke
    check, not a held-out score)."""
    if cfg.data.source == "tiny":
        world = ensure_world(cfg, run_dir)
        return [{"image": str(world["root"] / r["image"]), "domain": record_domain(r),
                 "caption": r["fig_caption"]}
                for r in read_caption_file(world["captions_heldout"])[:n]]
    rows = load_records(records.path)[-n:]
    return [{"image": str(records.image_folder / r["image"]), "domain": domain_of(r),
             "caption": r.get("conversations", r.get("conversatons"))[1]["value"]} for r in rows]


# What stage 1 already answers from a caption-style reply (the domain and the body part); a chat that only asks
# these shows nothing stage 2 adds, so the tiny chat asks about findings, sides, sizes, counts ...
CAPTION_QUESTION_TYPES = ("modality", "organ")


def chat_samples(cfg: Config, run_dir: str | Path, records: Records, n: int = 3,
                 turns: int = 3) -> list[dict]:
    """Figures to chat about before and after stage 2, each {id, image, questions, answers,
    answer_types, findings}: at source tiny the first n held-out figures with `turns` questions
    beyond modality and organ (and their true findings); otherwise the first n stage-2
    conversations' own questions (answer types and findings unknown: None). With `data.eval_limit`
    (quick mode) the chats ask at most that many questions."""
    if cfg.data.eval_limit:
        n = min(n, max(1, cfg.data.eval_limit // turns))
    if cfg.data.source == "tiny":
        world = ensure_world(cfg, run_dir)
        findings = {r["pair_id"]: r["findings"] for r in read_caption_file(world["captions_heldout"])}
        by_pair = defaultdict(list)
        for q in load_records(world["vqa_heldout"]):
            if q["question_type"] not in CAPTION_QUESTION_TYPES:
                by_pair[q["pair_id"]].append(q)
        chosen = [(pid, qs[:turns]) for pid, qs in by_pair.items() if len(qs) >= turns][:n]
        groups = [(pid, world["root"] / qs[0]["image"], [q["conversations"] for q in qs],
                   [q["answer_type"] for q in qs], findings[pid]) for pid, qs in chosen]
    else:
        groups = [(r["id"], records.image_folder / r["image"],
                   [conversations_of(r)[k:k + 2] for k in range(0, 2 * turns, 2)], None, None)
                  for r in load_records(records.path)[:n]]
    return [{"id": gid, "image": str(image),
             "questions": [c[0]["value"].replace(IMAGE_TOKEN, "").strip()
                           for c in convs if len(c) == 2],
             "answers": [c[1]["value"] for c in convs if len(c) == 2],
             "answer_types": types, "findings": truth}
            for gid, image, convs, types, truth in groups]
