"""`llavamed-lite train --stage 1|2|vqa --scale tiny|lora|full --run-dir DIR [--set key=value ...] [--resume]`.

One entry point for every stage and scale. On one device it runs as is; on many, under a launcher:

    accelerate launch --config_file configs/accelerate/fsdp_8gpu.yaml -m llavamed_lite.cli train --stage 2 \\
        --scale full --run-dir runs/full
"""

import argparse
import json

from ..cli import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", required=True, choices=("1", "2", "vqa"),
                        help="1: alignment, 2: instruction tuning, vqa: fine-tuning on a VQA "
                        "benchmark")
    parser.add_argument("--run-dir", required=True,
                        help="the run directory (see llavamed_lite/runs.py); the inputs come from "
                        "data.source (--set data.source=tiny|llava-med|curated, see "
                        "llavamed_lite/sources.py)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the stage's last checkpoint")
    parser.add_argument("--benchmark", default=None,
                        choices=("tiny", "vqa-rad", "slake", "pathvqa"),
                        help="VQA data for --stage vqa (default: data.benchmark: tiny at tiny, "
                        "vqa-rad at lora/full)")
    parser.add_argument("--records", default=None,
                        help="train on this records file instead of the data source's")
    parser.add_argument("--image-folder", default=None,
                        help="image paths in --records are relative to this folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)  # a bad key or value is refused before the imports below
    # torch, transformers and accelerate load here, not at `--help` or on a usage error (seconds)
    from accelerate import PartialState

    from .stages import train_stage

    result = train_stage(cfg, args.stage, args.run_dir, resume=args.resume, records=args.records,
                         image_folder=args.image_folder, benchmark=args.benchmark,
                         progress=not args.no_progress)
    if PartialState().is_main_process:
        print(json.dumps({"stage": result.stage, "final_loss": result.final_loss,
                          "seconds": round(result.seconds, 1),
                          "steps": result.steps, "processes": PartialState().num_processes,
                          "model_dir": str(result.model_dir), "records": result.n_records,
                          "skipped": len(result.skipped), "truncated": result.truncated}))
    return 0
