"""What each stage trains on, built on demand so `llavamed-lite train --stage 2 --scale tiny --run-dir R` works on a
fresh run dir. Every `ensure_*` is idempotent: it keeps a file that is already there.

    stage 1:  alignment records from the tiny world's TRAIN captions      run_dir/data/alignment_train.json
    stage 2:  instruction conversations (offline synthesis, tiny)          run_dir/instruct/instruct_train.json
    vqa:      the tiny world's vqa_train.json, or VQA-RAD's training split run_dir/data/vqa_rad_train.json
              (its images shrunk into run_dir/data/vqa_rad_images)
Each comes with its image folder: image paths in the records are relative to it (the tiny world lives in
run_dir/data, its figures in run_dir/data/images).
"""

from pathlib import Path

from ..data.formats import write_records
from ..runs import stage_dir

BENCHMARKS = ("tiny", "vqa-rad")


def ensure_world(cfg, run_dir: str | Path) -> dict[str, Path]:
    """The tiny world in run_dir/data with the config's sizes (build_tiny_world skips a complete one)."""
    from ..synth.world import build_tiny_world

    return build_tiny_world(stage_dir(run_dir, "data"), cfg.data.n_train_figures, cfg.data.n_heldout_figures,
                            cfg.data.image_size, cfg.seed)


def ensure_alignment(cfg, run_dir: str | Path) -> tuple[Path, Path]:
    """Stage-1 records (image + a brief-description instruction, answer = caption) from the TRAIN captions."""
    from ..data.alignment import alignment_records
    from ..data.formats import read_caption_file

    world = ensure_world(cfg, run_dir)
    path = world["root"] / "alignment_train.json"
    if not path.exists():
        captions = read_caption_file(world["captions_train"])
        write_records(path, alignment_records(captions, world["root"], seed=cfg.seed))
    return path, world["root"]


def ensure_instruct(cfg, run_dir: str | Path) -> tuple[Path, Path]:
    from ..instruct import synthesize_tiny_instruct

    path = Path(synthesize_tiny_instruct(run_dir, cfg))
    return path, ensure_world(cfg, run_dir)["root"]


def ensure_vqa(cfg, run_dir: str | Path, benchmark: str = "tiny") -> tuple[Path, Path]:
    if benchmark == "tiny":
        world = ensure_world(cfg, run_dir)
        return world["vqa_train"], world["root"]
    if benchmark == "vqa-rad":  # images shrunk once to 4x the model's size: resizing 1,000 px JPEGs at every step is slow
        from ..eval.vqa import load_benchmark, with_small_images, write_llava_vqa

        path, images = stage_dir(run_dir, "data") / "vqa_rad_train.json", stage_dir(run_dir, "data") / "vqa_rad_images"
        if not path.exists() or not images.is_dir():
            items = with_small_images(load_benchmark("vqa-rad", split="train"), images, 4 * cfg.data.image_size)
            write_llava_vqa(path, items, image_folder=images)
        return path, images
    raise ValueError(f"unknown benchmark {benchmark!r}: choose one of {', '.join(BENCHMARKS)}")


def stage_inputs(cfg, stage: str, run_dir: str | Path, benchmark: str = "tiny") -> tuple[Path, Path]:
    """(records file, image folder) for a stage."""
    if stage == "1":
        return ensure_alignment(cfg, run_dir)
    if stage == "2":
        return ensure_instruct(cfg, run_dir)
    return ensure_vqa(cfg, run_dir, benchmark)
