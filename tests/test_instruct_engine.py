"""The engine's parts without a server: rate limiter, backoff, cache, cost estimate and budget guard."""

import asyncio
import datetime
import email.utils
import json
import random
import time

import pytest

from llavamed_lite.instruct.cache import MAX_RESPONSE_BYTES, ResponseCache, request_key
from llavamed_lite.instruct.client import Request, Retryable, retry_after_seconds
from llavamed_lite.instruct.cost import BudgetError, check_budget, estimate_cost, price_for, usage_cost
from llavamed_lite.instruct.engine import RateLimiter, RetryPolicy, run_requests


class FakeClock:
    def __init__(self, advance: bool = True):
        self.now, self.advance = 100.0, advance
        self.sleeps = []

    def __call__(self):
        return self.now

    async def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds if self.advance else 0.0


def test_rate_limiter_paces_requests_per_minute():
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=120, clock=clock, sleep=clock.sleep)

    async def go():
        for _ in range(4):
            await limiter.acquire()

    asyncio.run(go())
    assert clock.sleeps == [0.5, 0.5, 0.5]  # the first starts at once, then one every 0.5 s


def test_rate_limiter_paces_tokens_per_minute_and_concurrent_callers_queue():
    clock = FakeClock(advance=False)  # all three ask at the same moment
    limiter = RateLimiter(requests_per_minute=6000, tokens_per_minute=60_000, clock=clock, sleep=clock.sleep)

    async def go():
        return await asyncio.gather(*(limiter.acquire(tokens=2000) for _ in range(3)))

    # 2000 tokens at 1000 tokens/s: each start reserves 2 s; concurrent callers get 0, 2 and 4 s
    assert asyncio.run(go()) == [0.0, 2.0, 4.0]


def test_rate_limiter_rejects_nonsense():
    with pytest.raises(ValueError, match="requests_per_minute must be positive"):
        RateLimiter(requests_per_minute=0)


def test_retry_policy_backs_off_exponentially_and_honours_retry_after():
    policy, rng = RetryPolicy(base_delay=1.0, max_delay=10.0), random.Random(0)
    delays = [policy.delay(a, None, rng) for a in range(6)]
    for attempt, d in enumerate(delays):
        cap = min(10.0, 2.0 ** attempt)
        assert cap / 2 <= d <= cap
    assert policy.delay(0, 42.0, rng) == 42.0


def test_retry_after_header_forms():
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_an_http_date_without_a_zone_is_utc(monkeypatch):
    """A "-0000" date read as local time was hours off (a wait of 0 s, or of hours) away from UTC."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=30)
        header = email.utils.format_datetime(soon).replace("+0000", "-0000")
        assert 25 < retry_after_seconds({"retry-after": header}) <= 30
    finally:
        monkeypatch.undo()
        time.tzset()


def test_request_key_depends_on_model_messages_and_params():
    m = [{"role": "user", "content": "hi"}]
    k = request_key("gpt-4o", m, {"temperature": 0})
    assert k == request_key("gpt-4o", [{"content": "hi", "role": "user"}], {"temperature": 0})
    assert len({k, request_key("gpt-4o-mini", m, {"temperature": 0}), request_key("gpt-4o", m, {"temperature": 1}),
                request_key("gpt-4o", [{"role": "user", "content": "hi!"}], {"temperature": 0})}) == 4


def test_cache_appends_and_survives_a_truncated_tail(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = ResponseCache(path)
    cache.put("k1", "p1", "gpt-4o", "User: a\n\nAssistant: b", {"prompt_tokens": 3}, "stop")
    cache.put("k2", "p2", "gpt-4o", "User: c\n\nAssistant: d", {}, "stop")
    with path.open("a") as f:
        f.write('{"key": "k3", "respo')  # a process killed mid-write
    again = ResponseCache(path)
    assert set(again.entries) == {"k1", "k2"} and again.get("k1")["response"].startswith("User:")
    again.put("k3", "p3", "gpt-4o", "x", {}, None)
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["k1", "k2", "k3"]


@pytest.mark.parametrize("content, message", [
    ('{"key": "k1", "response": "x"}\nnot json\n{"key": "k2", "response": "y"}\n', r"line 2"),
    ('{"response": "x"}\n', r"line 1 is not a cache entry"),
    ('[1, 2]\n', r"line 1 is not a cache entry"),
])
def test_cache_names_the_file_and_line_of_a_bad_entry(tmp_path, content, message):
    path = tmp_path / "cache.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as e:
        ResponseCache(path)
    assert str(path) in str(e.value)


def test_cost_estimate_and_budget_guard():
    messages = [[{"role": "user", "content": "x" * 400}]] * 10
    est = estimate_cost("gpt-4o-2024-08-06", messages, max_tokens=1000)
    assert est.price == (2.50, 10.00) and est.input_tokens == 10 * (4 + 100 + 3) and est.output_tokens == 10_000
    assert est.usd == pytest.approx((1070 * 2.5 + 10_000 * 10) / 1e6)
    check_budget(est, max_cost=1.0)
    with pytest.raises(BudgetError, match=r"exceeds --max-cost \$0\.01"):
        check_budget(est, max_cost=0.01)
    assert price_for("gpt-4o-mini") == (0.15, 0.60)  # the longest prefix wins
    assert price_for("llama3.1:8b") is None
    assert price_for("llama3.1:8b", {"llama3.1:8b": (0.0, 0.0)}) == (0.0, 0.0)
    with pytest.raises(BudgetError, match="has no price"):
        check_budget(estimate_cost("my-local-model", messages, 10), max_cost=1.0)
    assert "unknown" in str(estimate_cost("my-local-model", messages, 10))
    assert usage_cost({"prompt_tokens": 1_000_000, "completion_tokens": 100_000}, (2.5, 10.0)) == pytest.approx(3.5)


class TooBusy:
    """A backend whose server always answers 429 with the given Retry-After (seconds)."""
    name, model, params = "fake", "fake-model", {}

    def __init__(self, retry_after):
        self.retry_after, self.calls = retry_after, 0

    async def complete(self, request):
        self.calls += 1
        raise Retryable("http_429", self.retry_after)


@pytest.mark.parametrize("header", [{"retry-after": "3600"}, {"retry-after": "Thu, 01 Jan 2099 00:00:00 GMT"}])
def test_a_retry_after_beyond_the_cap_fails_the_request_instead_of_waiting(header):
    """issue 18.2: "retrying in 3600.0 s" (or 2300130093 s for a date in 2099) hung the run."""
    sleeps = []

    async def sleep(seconds):
        sleeps.append(seconds)

    backend = TooBusy(retry_after_seconds(header))
    request = Request("p1", {}, [{"role": "user", "content": "hi"}], "k1")
    stats = asyncio.run(run_requests([request], backend, ResponseCache(), retry=RetryPolicy(max_retry_after=60),
                                     progress=False, sleep=sleep))
    assert stats.failures == {"retry_after_too_long": 1} and backend.calls == 1 and sleeps == []
    backend = TooBusy(30.0)  # within the cap: obeyed exactly, then retried
    stats = asyncio.run(run_requests([request], backend, ResponseCache(), retry=RetryPolicy(max_retries=2),
                                     progress=False, sleep=sleep))
    assert sleeps == [30.0, 30.0] and backend.calls == 3 and stats.failures == {"http_429": 1}


def test_empty_and_oversized_answers_are_never_cached(tmp_path):
    """issue 18.3: an empty answer cached for good was never asked again; a 30 MB answer was kept."""
    path = tmp_path / "cache.jsonl"
    cache = ResponseCache(path)
    for bad in ("", "  \n", None, "x" * (MAX_RESPONSE_BYTES + 1)):
        with pytest.raises(ValueError, match="is not cached"):
            cache.put("k", "p1", "gpt-4o", bad, {}, "stop")
    assert not path.exists()
    lines = [{"key": "k1", "response": ""}, {"key": "k2", "response": "y" * (MAX_RESPONSE_BYTES + 1)},
             {"key": "k3", "response": "User: a\n\nAssistant: b"}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))  # written by an older version
    assert set(ResponseCache(path).entries) == {"k3"}  # k1 and k2 are sent again
