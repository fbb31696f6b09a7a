"""`llavamed-lite pretrain-tiny --out DIR`: stage 0 of tiny mode (tokenizer, CLIP, LM) on a tiny world.

At full scale stage 0 is "download CLIP and Mistral"; tiny mode trains its own towers
in about 13 minutes on two CPU cores. The committed ones in
data_samples/tiny-foundation/ were made with the defaults:

    llavamed-lite pretrain-tiny --out data_samples/tiny-foundation
"""

import argparse
import json
import os
from pathlib import Path

from ..cli import add_config_arguments, config_from_args, count
from ..runs import RunDir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, help="folder for clip/, lm/, curves and metrics")
    parser.add_argument("--run-dir", default="runs/tiny",
                        help="the tiny world is built (or reused) in RUN_DIR/data")
    parser.add_argument("--world", default=None,
                        help="tiny-world folder to use instead of RUN_DIR/data")
    parser.add_argument("--clip-steps", type=count(1), default=None,
                        help="CLIP training steps (default 1500)")
    parser.add_argument("--lm-steps", type=count(1), default=None,
                        help="LM training steps (default 3000)")
    parser.add_argument("--vocab-size", type=count(16), default=512)
    parser.add_argument("--threads", type=count(1), default=None,
                        help="torch CPU threads (1 is faster when other processes share the cores)")


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # after HF_HUB_OFFLINE is set (the hub reads it at import), and not at
    # `--help` (torch takes seconds)
    import torch

    from .foundation import pretrain_tiny
    from .towers import ClipSettings, LMSettings
    from .world import build_tiny_world

    cfg = config_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    world = build_tiny_world(args.world or RunDir(args.run_dir).world, cfg.data.n_train_figures,
                             cfg.data.n_heldout_figures, cfg.data.image_size, cfg.seed,
                             progress=True)
    clip = ClipSettings(image_size=cfg.data.image_size)
    lm = LMSettings()
    if args.clip_steps is not None:
        clip.steps = args.clip_steps
    if args.lm_steps is not None:
        lm.steps = args.lm_steps
    metrics = pretrain_tiny(out, world, clip, lm, args.vocab_size, cfg.seed)
    print(json.dumps(metrics, indent=2))
    return 0
