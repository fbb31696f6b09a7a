"""llavamed-lite: one command line for every stage of the LLaVA-Med reproduction.

Each command lives in its own module, imported only when called (so `--help` is instant), which
defines `add_arguments(parser)` and `main(args)`."""

import argparse
import importlib
import math
import os
import sys

from .config import SCALES, load_config

COMMANDS = {
    "run": ("llavamed_lite.run", "execute the pipeline's notebooks in order (papermill) and summarise"),
    "pretrain-tiny": ("llavamed_lite.synth.pretrain", "stage 0: train the tiny tokenizer, CLIP and LM"),
    "curate": ("llavamed_lite.data.curate", "PMC curation: download, parse, classify, filter, write records"),
    "synthesize": ("llavamed_lite.instruct.cli", "write instruction conversations from figure captions"),
    "train": ("llavamed_lite.train.cli", "train stage 1, stage 2 or VQA fine-tuning at any scale"),
    "evaluate": ("llavamed_lite.eval.cli", "answer a VQA benchmark and score it"),
    "chat": ("llavamed_lite.serve.cli", "chat with a checkpoint in the browser"),
    "convert-official": ("llavamed_lite.model.convert", "convert the official LLaVA-Med v1.5 checkpoint"),
    "make-mini": ("llavamed_lite.model.mini", "write random-weight miniature CLIP and Mistral towers for smoke tests"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse with usage errors on one line (`llavamed-lite train: error: ...`), exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def count(low: int = 0, high: int | None = None):
    """An argparse type: an integer in [low, high], e.g. `--limit`
    (count(1)) or `--retries` (count(0))."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be >= {low}" + (f" and <= {high}" if high is not None else "")
                                             + f", got {value}")
        return value
    return parse


def number(low: float = 0.0, strict: bool = True):
    """An argparse type: a finite number > low (>= low when not `strict`),
    e.g. seconds, rates, sizes."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low:g}, got {text}")
        return value
    return parse


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--scale, --seed and `key=value` overrides of llavamed_lite.config (e.g. stage2.lr=1e-4)."""
    parser.add_argument("--scale", default="tiny", choices=SCALES, help="preset: tiny (CPU), lora (1 GPU), full")
    parser.add_argument("--seed", type=count(0), default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set stage2.lr=1e-4 (repeatable)")


def add_loading_arguments(parser) -> None:
    """--device, --dtype and --4bit for the commands that load a saved model (evaluate, chat)."""
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help="auto: bfloat16 on a GPU, float32 on the CPU")
    parser.add_argument("--4bit", "--load-in-4bit", dest="load_in_4bit", action="store_true",
                        help="load the LM in 4-bit nf4 (bitsandbytes): a 7B model in about 5 GB of GPU memory, not 15")


def config_from_args(args: argparse.Namespace):
    cfg = load_config(args.scale, list(args.overrides))
    if args.seed is not None:
        cfg.seed = args.seed
    return cfg


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    top = ArgumentParser(prog="llavamed-lite", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        return _parse(top, argv)  # prints the help, or the unknown-command error
    module_name, help_text = COMMANDS[argv[0]]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            print(f"llavamed-lite {argv[0]}: not available yet ({module_name} is missing)", file=sys.stderr)
            return 2
        raise
    parser = ArgumentParser(prog=f"llavamed-lite {argv[0]}", description=help_text)
    module.add_arguments(parser)
    args = _parse(parser, argv[1:])
    if isinstance(args, int):  # --help, or a usage error
        return args
    try:
        return int(module.main(args) or 0)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError, KeyError) as e:
        # The safety net behind each command's own checks: bad input (a missing file, a
        # bad value, an unknown config key; RecordError and ConversionError are
        # ValueErrors) is one line, never a traceback.
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"llavamed-lite {argv[0]}: {' '.join(str(message).split())}", file=sys.stderr)
        return 2


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code of --help (0) or of a usage error (2): main returns
    it, so callers in the same process (tests, notebooks) get a code instead of SystemExit."""
    try:
        return parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2


if __name__ == "__main__":
    sys.exit(main())
