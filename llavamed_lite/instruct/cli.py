"""`llavamed-lite synthesize`: a LLaVA-Med caption file in, a JSON list of instruct records out.

    llavamed-lite synthesize --captions captions.json --out instruct.json --backend offline
    OPENAI_API_KEY=... llavamed-lite synthesize --captions c.json --out i.json --backend openai --model gpt-4o \\
        --cache runs/x/instruct/cache.jsonl --concurrency 16 --max-cost 20
    llavamed-lite synthesize ... --backend openai --base-url http://localhost:11434/v1 --model llama3.1   # Ollama

The key is read from OPENAI_API_KEY (AZURE_OPENAI_API_KEY with --azure-endpoint); there is no option for it.
Run it again with the same --cache after an interruption: finished requests are not sent again. A run in which a
request failed exits 1 and never replaces an existing --out (its answers stay in the cache for the rerun).
"""

import argparse
import logging
import sys
from pathlib import Path

from ..cli import count, number
from ..config import DataConfig
from ..data.formats import read_caption_file
from ..data.release import round_robin
from .cost import BudgetError
from .engine import RetryPolicy
from .synthesize import BACKENDS, make_backend, replace_instruct, stats_path, synthesize


def _price(text: str) -> tuple[float, float]:
    try:
        inp, out = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--price wants IN,OUT in USD per million tokens, e.g. 2.5,10; got {text!r}") from None
    return inp, out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--captions", required=True, help="LLaVA-Med caption file (a list, or a dict domain -> list)")
    parser.add_argument("--out", required=True, help="where to write the instruct records (JSON list)")
    parser.add_argument("--backend", choices=BACKENDS, default="offline")
    parser.add_argument("--model", default=None, help="model or Azure deployment name (default gpt-4o)")
    parser.add_argument("--base-url", default=None, help="an OpenAI-compatible server, e.g. http://localhost:8000/v1")
    parser.add_argument("--azure-endpoint", default=None, help="use Azure OpenAI at this endpoint")
    parser.add_argument("--api-version", default=None,
                        help="Azure API version (default: OPENAI_API_VERSION or 2024-10-21)")
    parser.add_argument("--with-mentions", action=argparse.BooleanOptionalAction, default=DataConfig.with_mentions,
                        help="give the writer the inline mentions (LLaVA-Med's 60K-IM; default: on, as "
                             "data.with_mentions; --no-with-mentions for the 60K variant)")
    parser.add_argument("--concurrency", type=count(1), default=8, help="requests in flight at once")
    parser.add_argument("--rpm", type=number(), default=None, help="at most this many requests per minute")
    parser.add_argument("--tpm", type=number(), default=None, help="at most this many tokens per minute")
    parser.add_argument("--cache", default=None,
                        help="append-only JSONL cache of answers (openai default: <out>.cache.jsonl)")
    parser.add_argument("--max-cost", type=number(strict=False), default=None,
                        help="refuse to start above this estimate (USD)")
    parser.add_argument("--price", type=_price, default=None, metavar="IN,OUT",
                        help="USD per million tokens for --model")
    parser.add_argument("--max-tokens", type=count(1), default=1024)
    parser.add_argument("--temperature", type=number(strict=False), default=0.0)
    parser.add_argument("--timeout", type=number(), default=120.0, help="seconds before a request is retried")
    parser.add_argument("--max-retries", type=count(0), default=6)
    parser.add_argument("--limit", type=count(1), default=None,
                        help="only N caption records, taken in turn from each domain (shuffled with --seed)")
    parser.add_argument("--seed", type=count(0), default=0, help="offline conversations and <image> placement")
    parser.add_argument("--log-file", default=None, help="also write the log here")
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    # Our own logger (not the root's): the log file holds this run's lines and nothing from other libraries.
    log = logging.getLogger("llavamed_lite")
    if args.log_file:
        Path(args.log_file).parent.mkdir(parents=True, exist_ok=True)
    handlers = [logging.StreamHandler(sys.stderr)] + ([logging.FileHandler(args.log_file)] if args.log_file else [])
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        return _run(args)
    finally:
        log.setLevel(level)
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()


def _run(args: argparse.Namespace) -> int:
    if Path(args.out).is_dir():
        print(f"llavamed-lite synthesize: --out {args.out} is a folder; give a file name, e.g. instruct.json",
              file=sys.stderr)
        return 2
    try:
        captions = round_robin(read_caption_file(args.captions), args.limit, seed=args.seed)
    except (OSError, ValueError) as e:  # RecordError is a ValueError; both name the file and the record
        print(f"llavamed-lite synthesize: {e}", file=sys.stderr)
        return 2
    try:
        backend = make_backend(args.backend, model=args.model, base_url=args.base_url, seed=args.seed,
                               **({} if args.backend == "offline" else dict(
                                   azure_endpoint=args.azure_endpoint, api_version=args.api_version,
                                   timeout=args.timeout, temperature=args.temperature, max_tokens=args.max_tokens)))
    except RuntimeError as e:
        print(f"llavamed-lite synthesize: {e}", file=sys.stderr)
        return 2
    prices = {backend.model: args.price} if args.price else None
    try:
        result = synthesize(captions, backend, seed=args.seed, with_mentions=args.with_mentions,
                            cache=args.cache or (f"{args.out}.cache.jsonl" if args.backend == "openai" else None),
                            concurrency=args.concurrency, requests_per_minute=args.rpm, tokens_per_minute=args.tpm,
                            max_cost=args.max_cost, prices=prices, retry=RetryPolicy(max_retries=args.max_retries),
                            progress=not args.no_progress)
    except BudgetError as e:
        print(f"llavamed-lite synthesize: {e}", file=sys.stderr)
        return 3
    except ValueError as e:  # a bad cache line, a bad caption record: the message names the file and line
        print(f"llavamed-lite synthesize: {e}", file=sys.stderr)
        return 2
    written = replace_instruct(args.out, result, {"captions": str(args.captions), "backend": args.backend,
                                                  "model": backend.model, "seed": args.seed,
                                                  "with_mentions": args.with_mentions})
    run = result.run
    counts = (f"requests: {run['done']} done, {run['cached']} cached, {run['failed']} failed "
              f"{run['failures']}; rejected: {dict(result.rejected)}")
    if not written:
        print(f"llavamed-lite synthesize: {run['failed']} request(s) failed; {args.out} was kept as it was "
              f"(run again to retry them; {counts})", file=sys.stderr)
        return 1
    print(f"{len(result.records)} instruct records -> {args.out} (stats: {stats_path(args.out)}); {counts}")
    if run["failed"]:
        print(f"llavamed-lite synthesize: {run['failed']} request(s) failed; run again to retry them", file=sys.stderr)
        return 1
    return 0
