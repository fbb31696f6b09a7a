"""Caption records in, LLaVA-Med instruct records out: prompts -> backend (cached,
concurrent) -> post-processing.

    result = synthesize(captions, make_backend("openai", model="gpt-4o"), cache="runs/x/instruct/cache.jsonl")
    write_instruct("instruct.json", result)

Every caption record ends as one instruct record or one counted rejection (a failed request, or a
response that post-processing refused), so `result.stats` accounts for all of them.
"""

import asyncio
import concurrent.futures
import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..data.formats import RecordError, read_caption_file, validate_caption_record, write_records
from ..io import atomic_write_json, read_json
from .cache import ResponseCache, request_key
from .client import OpenAIBackend, Request
from .cost import CostEstimate, check_budget, estimate_cost, price_for
from .engine import RateLimiter, RetryPolicy, run_requests
from .offline import OFFLINE_VERSION, OfflineBackend
from .postprocess import clean_response, instruct_record
from .prompts import build_messages

log = logging.getLogger(__name__)
BACKENDS = ("offline", "openai")


def make_backend(backend: str, model: str | None = None, base_url: str | None = None, seed: int = 0,
                 **openai_kwargs):
    """`offline` (the tiny world's findings -> conversations, no network) or
    `openai` (any compatible server)."""
    if backend == "offline":
        return OfflineBackend(seed=seed)
    if backend == "openai":
        return OpenAIBackend(model=model or "gpt-4o", base_url=base_url, **openai_kwargs)
    raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")


@dataclass
class SynthesisResult:
    records: list[dict]
    estimate: CostEstimate
    run: dict  # RunStats.to_dict()
    # caption records without an instruct record, by reason
    rejected: Counter = field(default_factory=Counter)
    # exchanges removed from kept conversations, by reason
    dropped: Counter = field(default_factory=Counter)
    stripped_lead_ins: int = 0

    @property
    def stats(self) -> dict:
        n_turns = [len(r["conversations"]) for r in self.records]
        estimate = self.estimate
        return {"records": len(self.records), "rejected": dict(self.rejected),
                "dropped_exchanges": dict(self.dropped),
                "stripped_lead_ins": self.stripped_lead_ins,
                "mean_turns": round(sum(n_turns) / len(n_turns), 3) if n_turns else 0.0,
                "estimate": {"requests": estimate.n_requests, "input_tokens": estimate.input_tokens,
                             "output_tokens": estimate.output_tokens, "usd": estimate.usd},
                "run": self.run}


def build_requests(captions: list[dict], backend, with_mentions: bool = False) -> list[Request]:
    """One request per caption record (validated; pair ids must be unique)."""
    requests, seen = [], {}
    for i, record in enumerate(captions):
        validate_caption_record(record, f"caption record {i}")
        pair_id = str(record["pair_id"])
        if pair_id in seen:
            raise RecordError(f"caption record {i}: pair_id {pair_id!r} repeats record "
                              f"{seen[pair_id]}")
        seen[pair_id] = i
        messages = build_messages(record, with_mentions=with_mentions)
        extra = record if getattr(backend, "reads_record", False) else None
        key = request_key(backend.model, messages, backend.params, extra)
        requests.append(Request(pair_id, record, messages, key))
    return requests


async def synthesize_async(captions: list[dict], backend, *, seed: int = 0,
                           with_mentions: bool = False,
                           cache: str | Path | ResponseCache | None = None, concurrency: int = 8,
                           requests_per_minute: float | None = None,
                           tokens_per_minute: float | None = None,
                           max_cost: float | None = None, prices: dict | None = None,
                           retry: RetryPolicy | None = None,
                           progress: bool = True) -> SynthesisResult:
    """Estimate the cost (refuse above max_cost), send what the cache lacks,
    post-process every answer. `cache`: a JSONL path (answers survive the process), a
    ResponseCache, or None (in memory)."""
    requests = build_requests(captions, backend, with_mentions)
    cache = cache if isinstance(cache, ResponseCache) else ResponseCache(cache)
    pending = list({r.key: r for r in requests if r.key not in cache}.values())
    max_tokens = int(backend.params.get("max_tokens", 0))
    estimate = estimate_cost(backend.model, [r.messages for r in pending], max_tokens, prices)
    log.info("cost estimate: %s (%d answers already cached)", estimate,
             len(requests) - len(pending))
    check_budget(estimate, max_cost)
    limiter = (RateLimiter(requests_per_minute, tokens_per_minute)
               if requests_per_minute or tokens_per_minute else None)
    try:
        stats = await run_requests(requests, backend, cache, concurrency, limiter, retry, max_cost,
                                   price_for(backend.model, prices), progress)
    finally:
        if hasattr(backend, "aclose"):
            await backend.aclose()
    result = SynthesisResult([], estimate, stats.to_dict())
    for r in requests:
        entry = cache.get(r.key)
        if entry is None:  # the request failed: its reason (http_400, timeout, ...)
            result.rejected[stats.failed_keys.get(r.key, "request_failed")] += 1
            continue
        cleaned = clean_response(entry["response"],
                                 truncated=entry.get("finish_reason") == "length")
        result.dropped.update(cleaned.dropped)
        result.stripped_lead_ins += cleaned.stripped_lead_ins
        if cleaned.reject:
            result.rejected[cleaned.reject] += 1
            continue
        result.records.append(instruct_record(r.record, cleaned.turns, seed))
    log.info("kept %d instruct records; rejected %s; dropped exchanges %s", len(result.records),
             dict(result.rejected), dict(result.dropped))
    return result


def synthesize(captions: list[dict], backend, **kwargs) -> SynthesisResult:
    """synthesize_async from plain code, or from a notebook whose event loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(synthesize_async(captions, backend, **kwargs))
    # a loop is running (Jupyter): run ours in a thread of its own
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, synthesize_async(captions, backend, **kwargs)).result()


def stats_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".stats.json")


def write_instruct(out: str | Path, result: SynthesisResult, source: dict | None = None) -> Path:
    """The instruct records (a JSON list, atomically) and their statistics beside them
    (`<name>.stats.json`, with `source`: what they were made from)."""
    write_records(out, result.records)
    atomic_write_json(stats_path(out), {**result.stats, "source": source or {}})
    return Path(out)


def replace_instruct(out: str | Path, result: SynthesisResult, source: dict | None = None) -> bool:
    """`write_instruct`, unless `out` exists and this run is incomplete (a request failed: an HTTP
    error, the budget, an empty answer): then the earlier file is kept and False returned. A good
    file is never replaced by a worse one; rerun with the same cache to fill the gaps."""
    if result.run["failed"] and Path(out).exists():
        return False
    write_instruct(out, result, source)
    return True


def synthesize_offline(captions: str | Path, out: str | Path, seed: int = 0,
                       progress: bool = False) -> Path:
    """Offline conversations for a caption file, written to `out` (the tiny world's stage-2
    data). Idempotent: a file made from the same captions with the same seed and offline
    version is kept, and so is one written by another backend (notebook 03 with
    `backend="openai"`): it was made on purpose."""
    captions, out = Path(captions), Path(out)
    source = {"captions": captions.name,
              "captions_sha256": hashlib.sha256(captions.read_bytes()).hexdigest(),
              "backend": "offline", "offline_version": OFFLINE_VERSION, "seed": seed}
    if out.exists() and stats_path(out).exists():
        try:
            made_from = read_json(stats_path(out)).get("source", {})
            if made_from == source or made_from.get("backend", "offline") != "offline":
                return out
        except ValueError:
            pass  # an unreadable stats file: rebuild
    result = synthesize(read_caption_file(captions), make_backend("offline", seed=seed), seed=seed,
                        progress=progress)
    return write_instruct(out, result, source)
