"""`llavamed-lite chat --model DIR [--port N] [--host 127.0.0.1] [--device D] [--dtype T] [--4bit]`: the chat UI in
the browser."""

import argparse
import sys

from ..cli import add_loading_arguments, count
from ..runs import RunDir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="a saved model folder (e.g. runs/tiny/stage2/model)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; "
                             "0.0.0.0 exposes it)")
    parser.add_argument("--port", type=count(1, 65535), default=None,
                        help="port (default: Gradio's, 7860 or the next free one)")
    parser.add_argument("--examples", default=None, metavar="WORLD_DIR",
                        help="a tiny world's folder whose held-out figures join the examples "
                             "(default: run_dir/data when --model is run_dir/<stage>/model, else "
                             "figures drawn afresh)")
    add_loading_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from ..model.compose import load_llava  # torch, transformers: not at `--help`, usage errors

    try:
        model, processor = load_llava(args.model, dtype=args.dtype, device=args.device,
                                      load_in_4bit=args.load_in_4bit)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"llavamed-lite chat: {e}", file=sys.stderr)
        return 2
    from .app import build_app, example_images, launch  # gradio takes seconds: after the checks

    world = args.examples or RunDir.of_model(args.model).world
    app = build_app(model=model, processor=processor, examples=example_images(world))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"llavamed-lite chat: serving on {args.host}: reachable from other machines",
              file=sys.stderr)
    launch(app, host=args.host, port=args.port, block=True)
    return 0
