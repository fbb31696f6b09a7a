"""`llavamed-lite chat --model DIR [--port N] [--host 127.0.0.1]`: the chat UI in the browser."""

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a saved model folder (e.g. runs/tiny/stage2/model)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free one)")
    parser.add_argument("--examples", default=None, metavar="WORLD_DIR",
                        help="a tiny world's folder whose held-out figures join the examples (default: run_dir/data "
                             "when --model is run_dir/<stage>/model, else figures drawn afresh)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: float32 on CPU, "
                                                      "bfloat16 on GPU)")


def main(args: argparse.Namespace) -> int:
    from ..eval.evaluate import resolve_device
    from ..model.compose import load_llava
    from .app import build_app, example_images, launch

    device = resolve_device(args.device)
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    try:
        model, processor = load_llava(args.model, dtype=dtype, device=device)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"llavamed-lite chat: {e}", file=sys.stderr)
        return 2
    world = args.examples or Path(args.model).resolve().parent.parent / "data"
    app = build_app(model=model, processor=processor, examples=example_images(world))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"llavamed-lite chat: serving on {args.host}: reachable from other machines", file=sys.stderr)
    launch(app, host=args.host, port=args.port, block=True)
    return 0
