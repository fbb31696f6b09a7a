"""`llavamed-lite evaluate`: answer a VQA benchmark with a saved model, write answers.jsonl and scores.json."""

import argparse
import json
import sys

from ..cli import add_loading_arguments, count
from .vqa import BENCHMARKS, SPLITS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    parser.add_argument("--model", required=True,
                        help="a saved model folder (save_pretrained of model + processor)")
    parser.add_argument("--out", required=True,
                        help="output folder for answers.jsonl and scores.json")
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--data", default=None,
                        help="tiny: the tiny world folder (run_dir/data) or a VQA JSON; pathvqa: "
                             "its parquet folder; vqa-rad/slake: another copy of the data "
                             "(default: data_samples/)")
    parser.add_argument("--batch-size", type=count(1), default=16)
    parser.add_argument("--limit", type=count(1), default=None,
                        help="answer only the first N questions")
    parser.add_argument("--max-new-tokens", type=count(1), default=64,
                        help="cap on each answer (short VQA answers; LLaVA-Med's chat answers "
                             "took up to 1,024)")
    parser.add_argument("--closed-suffix", action="store_true",
                        help="append LLaVA-Med's ' Please choose from the following two options: "
                             "[yes, no]' to CLOSED questions")
    parser.add_argument("--model-id", default=None,
                        help="model_id in the answer file (default: the model folder's last two "
                             "path parts)")
    parser.add_argument("--restart", action="store_true",
                        help="delete the answers in --out and answer every question again "
                             "(needed when they were written by other weights, e.g. after "
                             "retraining the model in place)")
    add_loading_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from .evaluate import evaluate  # torch and transformers: not at `--help` or on a usage error

    try:
        scores = evaluate(args.model, args.benchmark, args.out, split=args.split, source=args.data,
                          batch_size=args.batch_size, limit=args.limit,
                          closed_suffix=args.closed_suffix, max_new_tokens=args.max_new_tokens,
                          model_id=args.model_id, device=args.device,
                          load_in_4bit=args.load_in_4bit, dtype=args.dtype, restart=args.restart)
    except (FileNotFoundError, ValueError) as e:  # bad input: what and where, no traceback
        print(f"llavamed-lite evaluate: {e}", file=sys.stderr)
        return 2
    summary = {k: v for k, v in scores.items() if k != "by_question_type"}
    print(json.dumps(summary, indent=2))
    return 0
