"""Instruction synthesis: what bounded concurrency buys against a slow endpoint.

    python benchmarks/instruct_concurrency.py [--n 200] [--latency 0.2] [--concurrency 16] [--out benchmarks/results/instruct.json]

A local chat-completions server (llavamed_lite.teaching_servers.LocalChatServer) answers every request after `latency`
seconds, like a hosted model would (GPT-4-class models take seconds; 200 ms keeps the benchmark short). The same
`n` caption records are synthesised through the real `openai` client and the run engine, once one request at a
time and once with `concurrency` requests in flight, each with an empty cache. LLaVA-Med's generator sent about
three at a time. The requirement: at least 10x faster at concurrency 16.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def captions(n: int) -> list[dict]:
    """n tiny-world caption records with distinct captions (identical prompts would be sent only once)."""
    from llavamed_lite.synth.world import figure

    records, seen, i = [], set(), 0
    while len(records) < n:
        record = figure("train", i, 0, 64)[0]
        i += 1
        if (record["fig_label"], record["fig_caption"]) not in seen:
            seen.add((record["fig_label"], record["fig_caption"]))
            records.append(record)
    return records


def timed_run(records: list[dict], base_url: str, concurrency: int) -> dict:
    from llavamed_lite.instruct.client import OpenAIBackend
    from llavamed_lite.instruct.synthesize import synthesize

    backend = OpenAIBackend(model="gpt-4o", base_url=base_url)
    t = time.perf_counter()
    result = synthesize(records, backend, concurrency=concurrency, progress=False)  # cache=None: nothing reused
    seconds = time.perf_counter() - t
    assert result.run["done"] == len(records) and len(result.records) == len(records), result.stats
    return {"concurrency": concurrency, "seconds": round(seconds, 3), "requests_per_s": round(len(records) / seconds, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "instruct.json"))
    args = parser.parse_args()
    os.environ.pop("OPENAI_API_KEY", None)  # a local server: the client sends a placeholder, never a real key

    from llavamed_lite.teaching_servers import LocalChatServer
    from llavamed_lite.io import atomic_write_json

    records = captions(args.n)
    with LocalChatServer(delay=args.latency) as server:
        sequential = timed_run(records, server.base_url, 1)
        concurrent = timed_run(records, server.base_url, args.concurrency)
        max_in_flight = server.max_in_flight
    ratio = sequential["seconds"] / concurrent["seconds"]
    result = {
        "benchmark": "instruct_concurrency", "requests": args.n, "server_latency_s": args.latency,
        "sequential": sequential, "concurrent": concurrent, "speedup": round(ratio, 2),
        "ideal_speedup": args.concurrency, "server_max_in_flight": max_in_flight, "required_speedup": 10.0,
        "passed": ratio >= 10.0, "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                             "platform": platform.platform()},
    }
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
