"""The run engine: many chat requests at once, within rate limits,
retried on transient errors, cached.

LLaVA-Med sent about three requests at a time and retried in whole passes. Here a fixed pool of
`concurrency` workers takes requests from one shared iterator; each request waits for the rate
limiter (requests and tokens per minute), retries 429 / 5xx / timeouts with exponential backoff (or
exactly the server's Retry-After, up to `max_retry_after`: a server asking for longer fails the
request instead of hanging the run), and writes its answer to the append-only cache the moment it
arrives. Answers already in the cache are not sent; an empty or oversized answer fails its request
and is not cached, so the next run asks again.
"""

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from tqdm.auto import tqdm

from .cache import ResponseCache, unusable
from .client import Completion, Request, RequestFailed, Retryable
from .cost import estimate_tokens, usage_cost

log = logging.getLogger(__name__)


@dataclass
class RetryPolicy:
    max_retries: int = 6
    base_delay: float = 1.0  # seconds; doubles each attempt
    max_delay: float = 60.0
    # seconds; a longer Retry-After (e.g. an HTTP date hours away) fails the request
    max_retry_after: float = 60.0

    def __post_init__(self):
        if (self.max_retries < 0 or self.base_delay < 0 or self.max_delay < 0
                or self.max_retry_after < 0):
            raise ValueError(f"retry settings must be >= 0, got {self}")

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """The server's Retry-After when it gives one, else base * 2^attempt with
        jitter, capped at max_delay."""
        if retry_after is not None:
            return retry_after
        return min(self.max_delay, self.base_delay * 2 ** attempt) * (0.5 + 0.5 * rng.random())


class RateLimiter:
    """Paces request starts so that at most `requests_per_minute` requests and `tokens_per_minute`
    tokens begin per minute. Each start reserves the next free slot (1/rpm minutes, or tokens/tpm
    minutes), so concurrent workers queue up evenly instead of bursting into 429s."""

    def __init__(self, requests_per_minute: float | None = None,
                 tokens_per_minute: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable] = asyncio.sleep):
        for name, value in (("requests_per_minute", requests_per_minute),
                            ("tokens_per_minute", tokens_per_minute)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.rpm, self.tpm = requests_per_minute, tokens_per_minute
        self.clock, self.sleep = clock, sleep
        self._next = None  # clock time of the next free slot

    async def acquire(self, tokens: int = 0) -> float:
        """Wait for a slot; returns the seconds waited."""
        interval = max(60.0 / self.rpm if self.rpm else 0.0,
                       60.0 * tokens / self.tpm if self.tpm else 0.0)
        now = self.clock()
        start = now if self._next is None else max(now, self._next)
        self._next = start + interval
        wait = start - now
        if wait > 0:
            await self.sleep(wait)
        return wait


@dataclass
class RunStats:
    requests: int = 0  # distinct requests (identical prompts are sent once)
    done: int = 0  # answered in this run
    cached: int = 0  # answered by the cache
    failed: int = 0
    failures: Counter = field(default_factory=Counter)  # reason -> count
    failed_keys: dict[str, str] = field(default_factory=dict)  # request key -> reason
    retries: Counter = field(default_factory=Counter)  # reason -> count
    waits: list[float] = field(default_factory=list)  # every backoff sleep, in order
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"requests": self.requests, "done": self.done, "cached": self.cached,
                "failed": self.failed, "failures": dict(self.failures), "retries": dict(self.retries),
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost_usd": round(self.cost_usd, 6), "seconds": round(self.seconds, 3)}


async def run_requests(requests: list[Request], backend, cache: ResponseCache, concurrency: int = 8,
                       limiter: RateLimiter | None = None, retry: RetryPolicy | None = None,
                       max_cost: float | None = None, price: tuple[float, float] | None = None,
                       progress: bool = True,
                       sleep: Callable[[float], Awaitable] = asyncio.sleep) -> RunStats:
    """Send every request whose key is not cached; answers land in `cache`. Returns the
    run's counts. With `max_cost`, no new request starts once the spent cost (from the
    answers' usage) reaches it."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    retry = retry or RetryPolicy()
    unique = list({r.key: r for r in requests}.values())
    stats = RunStats(requests=len(unique))
    pending = [r for r in unique if r.key not in cache]
    stats.cached = len(unique) - len(pending)
    rng = random.Random(0)
    bar = tqdm(total=len(unique), initial=stats.cached, desc=f"synthesize ({backend.name})",
               disable=not progress, unit="req")
    todo = iter(pending)
    t0 = time.perf_counter()

    def finish(request: Request, reason: str | None = None) -> None:
        if reason:
            stats.failed += 1
            stats.failures[reason] += 1
            stats.failed_keys[request.key] = reason
        else:
            stats.done += 1
        bar.set_postfix(done=stats.done, cached=stats.cached, failed=stats.failed, refresh=False)
        bar.update(1)

    async def one(request: Request) -> None:
        completion = await send_with_retries(request, backend, limiter, retry, stats, rng, sleep)
        if isinstance(completion, str):
            return finish(request, completion)
        stats.prompt_tokens += completion.usage.get("prompt_tokens") or 0
        stats.completion_tokens += completion.usage.get("completion_tokens") or 0
        stats.cost_usd += usage_cost(completion.usage, price)
        bad = unusable(completion.text)
        if bad:  # paid for, but not kept: the next run asks again
            log.warning("request %s failed (%s, not cached)", request.id, bad)
            return finish(request, bad)
        cache.put(request.key, request.id, backend.model, completion.text, completion.usage,
                  completion.finish_reason)
        return finish(request)

    async def worker() -> None:
        for request in todo:  # one iterator shared by all workers: each request is taken once
            if max_cost is not None and stats.cost_usd >= max_cost:
                finish(request, "budget_exhausted")
                continue
            await one(request)

    try:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, max(1, len(pending))))))
    finally:
        stats.seconds = time.perf_counter() - t0
        bar.close()
    return stats


async def send_with_retries(request: Request, backend, limiter: RateLimiter | None,
                            retry: RetryPolicy, stats: RunStats, rng: random.Random,
                            sleep: Callable[[float], Awaitable]) -> Completion | str:
    """One request, retried on transient errors: its completion, or the reason it
    failed. Each retry and backoff wait is counted in `stats`, so a run's report shows
    how hard the server pushed back."""
    for attempt in range(retry.max_retries + 1):
        if limiter:
            max_tokens = int(backend.params.get("max_tokens", 0))
            await limiter.acquire(estimate_tokens(request.messages) + max_tokens)
        try:
            return await backend.complete(request)
        except Retryable as e:
            if attempt == retry.max_retries:
                log.warning("request %s failed after %d retries (%s)", request.id, attempt,
                            e.reason)
                return e.reason
            if e.retry_after is not None and e.retry_after > retry.max_retry_after:
                log.warning("request %s: %s with Retry-After %.0f s, more than the %.0f s cap; "
                            "not retried", request.id, e.reason, e.retry_after,
                            retry.max_retry_after)
                return "retry_after_too_long"
            wait = retry.delay(attempt, e.retry_after, rng)
            stats.retries[e.reason] += 1
            stats.waits.append(wait)
            log.info("request %s: %s, retrying in %.1f s (attempt %d of %d)", request.id, e.reason,
                     wait, attempt + 1, retry.max_retries)
            await sleep(wait)
        except RequestFailed as e:
            log.warning("request %s failed (%s)", request.id, e.reason)
            return e.reason
