"""`llavamed-lite chat --model DIR [--port N] [--host 127.0.0.1] [--device D] [--dtype T] [--4bit]`: the chat UI in
the browser."""

import argparse
import sys

from ..cli import count
from ..runs import RunDir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a saved model folder (e.g. runs/tiny/stage2/model)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=count(1, 65535), default=None, help="port (default: Gradio's, 7860 or the next free one)")
    parser.add_argument("--examples", default=None, metavar="WORLD_DIR",
                        help="a tiny world's folder whose held-out figures join the examples (default: run_dir/data "
                             "when --model is run_dir/<stage>/model, else figures drawn afresh)")
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help="auto: bfloat16 on a GPU, float32 on the CPU")
    parser.add_argument("--4bit", "--load-in-4bit", dest="load_in_4bit", action="store_true",
                        help="load the LM in 4-bit nf4 (bitsandbytes): a 7B model in about 5 GB of GPU memory, not 15")


def main(args: argparse.Namespace) -> int:
    from ..model.compose import load_llava

    try:
        model, processor = load_llava(args.model, dtype=args.dtype, device=args.device, load_in_4bit=args.load_in_4bit)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"llavamed-lite chat: {e}", file=sys.stderr)
        return 2
    from .app import build_app, example_images, launch  # gradio takes seconds to import: after the checks

    world = args.examples or RunDir.of_model(args.model).world
    app = build_app(model=model, processor=processor, examples=example_images(world))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"llavamed-lite chat: serving on {args.host}: reachable from other machines", file=sys.stderr)
    launch(app, host=args.host, port=args.port, block=True)
    return 0
