"""The openai backend and the run engine against a real chat-completions server on 127.0.0.1 (stdlib, threaded),
with the real `openai` client: request shape, auth, retries, timeouts, bad answers, concurrency, kill and resume."""

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llavamed_lite.data.formats import DOMAINS, read_training_records
from llavamed_lite.instruct.cache import ResponseCache
from llavamed_lite.instruct.client import OpenAIBackend
from llavamed_lite.instruct.engine import RetryPolicy, run_requests
from llavamed_lite.teaching_servers import DEFAULT_ANSWER, LocalChatServer, Reply
from llavamed_lite.instruct.prompts import build_messages
from llavamed_lite.instruct.synthesize import build_requests, synthesize
from llavamed_lite.io import iter_jsonl
from llavamed_lite.paths import REPO_ROOT

FAST = RetryPolicy(max_retries=4, base_delay=0.01, max_delay=0.05)


def caption(i: int, domain: str = "chest_xray") -> dict:
    return {"pair_id": f"p{i:03d}", "pmid": "123", "fig_id": "F1", "fig_label": "Fig. 1",
            "fig_caption": f"Chest radiograph of case {i:03d} showing a small nodule in the right upper zone.",
            "in_text_mention": [f"The radiograph of case {i:03d} (Fig. 1) showed a nodule."],
            "domain": {d: d == domain for d in DOMAINS}}


def pair_id_of(body: dict) -> str:
    """Which caption a request was for (the id is written into each test caption)."""
    return "p" + re.search(r"case (\d{3})", body["messages"][-1]["content"]).group(1)


@pytest.fixture
def api_key(monkeypatch):
    key = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    return key


def run(server, captions, **kwargs):
    backend = OpenAIBackend(model="gpt-4o", base_url=server.base_url, timeout=kwargs.pop("timeout", 10.0))
    kwargs.setdefault("retry", FAST)
    return synthesize(captions, backend, progress=False, **kwargs)


def test_request_shape_and_authorization_header(api_key):
    with LocalChatServer() as server:
        result = run(server, [caption(0)], with_mentions=True)
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    headers = {k.lower(): v for k, v in req["headers"].items()}
    assert headers["authorization"] == f"Bearer {api_key}"
    body = req["body"]
    assert body["model"] == "gpt-4o" and body["temperature"] == 0 and body["max_tokens"] == 1024
    assert body["messages"] == build_messages(caption(0), with_mentions=True)
    assert body["messages"][-1]["content"].startswith("Figure Caption:\nFig. 1: Chest radiograph")
    assert "Figure Context:\n- The radiograph of case 000" in body["messages"][-1]["content"]
    (record,) = result.records
    assert record["id"] == "p000" and record["image"] == "p000.jpg" and len(record["conversations"]) == 4
    assert result.run["done"] == 1 and result.run["prompt_tokens"] == 100


def test_local_server_without_a_key_gets_a_placeholder(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with LocalChatServer() as server:
        result = run(server, [caption(0)])
    assert len(result.records) == 1
    assert server.requests[0]["headers"].get("authorization", "").startswith("Bearer ")


def test_no_key_and_no_base_url_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="OPENAI_API_KEY"):
        OpenAIBackend(model="gpt-4o")


def test_429_then_success_honours_retry_after(api_key):
    def reply(body, n):
        if n == 0:
            return Reply(status=429, headers={"Retry-After": "1"}, body={"error": {"message": "rate limited"}})
        return Reply()

    with LocalChatServer(reply) as server:
        result = run(server, [caption(0)])
    assert len(server.requests) == 2 and len(result.records) == 1
    assert result.run["retries"] == {"http_429": 1}
    assert result.run["failed"] == 0


def test_retry_after_is_the_wait(api_key):
    """The engine waits exactly what the server asks (not its own backoff), and says so in its stats."""
    waits = []

    async def fake_sleep(seconds):
        waits.append(seconds)

    replies = [Reply(status=429, headers={"Retry-After": "7"}, body={"error": {"message": "slow down"}}),
               Reply(status=503, headers={"retry-after-ms": "250"}, body="busy"), Reply()]
    with LocalChatServer(lambda body, n: replies[n]) as server:
        backend = OpenAIBackend(model="gpt-4o", base_url=server.base_url)
        requests = build_requests([caption(0)], backend)
        stats = asyncio.run(run_requests(requests, backend, ResponseCache(), retry=FAST, progress=False, sleep=fake_sleep))
    assert waits == [7.0, 0.25] and stats.waits == [7.0, 0.25] and stats.done == 1


def test_500s_are_retried_then_given_up(api_key):
    always_500 = LocalChatServer(lambda body, n: Reply(status=500, body={"error": {"message": "boom"}}))
    with always_500 as server:
        result = run(server, [caption(0)], retry=RetryPolicy(max_retries=2, base_delay=0.01))
    assert len(server.requests) == 3  # one try and two retries
    assert result.records == [] and result.rejected == {"http_500": 1}
    assert result.run["failures"] == {"http_500": 1} and result.run["retries"] == {"http_500": 2}

    flaky = LocalChatServer(lambda body, n: Reply(status=502, body="bad gateway") if n < 2 else Reply())
    with flaky as server:
        result = run(server, [caption(0)])
    assert len(result.records) == 1 and result.run["retries"] == {"http_502": 2}


def test_client_errors_are_not_retried(api_key):
    with LocalChatServer(lambda body, n: Reply(status=400, body={"error": {"message": "bad request"}})) as server:
        result = run(server, [caption(0)])
    assert len(server.requests) == 1 and result.rejected == {"http_400": 1}


def test_timeouts_are_retried(api_key):
    with LocalChatServer(lambda body, n: Reply(delay=2.0 if n == 0 else 0.0)) as server:
        result = run(server, [caption(0)], timeout=0.3)
    assert len(result.records) == 1 and result.run["retries"] == {"timeout": 1}
    assert len(server.requests) == 2


@pytest.mark.parametrize("reply, reason", [
    (Reply(body="this is not json"), "malformed_response"),
    (Reply(body={"id": "x", "object": "chat.completion"}), "malformed_response"),  # no choices
    (Reply(body={"choices": []}), "malformed_response"),
    (Reply(content=""), "empty_response"),
    (Reply(content=None), "empty_response"),
    (Reply(content="The image shows a nodule."), "no_turns"),
    (Reply(content="Assistant: Hello.\n\nUser: Hi."), "not_human_first"),
    (Reply(content="User: What is the caption?\n\nAssistant: The caption says nodule."), "all_turns_dropped"),
])
def test_malformed_or_empty_answers_are_rejected_with_a_reason(api_key, reply, reason):
    with LocalChatServer(lambda body, n: reply) as server:
        result = run(server, [caption(0), caption(1)])
    assert result.records == [] and result.rejected == {reason: 2}


def test_requests_overlap_under_concurrency(api_key):
    with LocalChatServer(delay=0.2) as server:
        result = run(server, [caption(i) for i in range(8)], concurrency=4)
    assert len(result.records) == 8
    assert server.max_in_flight > 1


def test_concurrency_one_is_sequential(api_key):
    with LocalChatServer(delay=0.05) as server:
        run(server, [caption(i) for i in range(4)], concurrency=1)
    assert server.max_in_flight == 1


def test_rerun_with_cache_sends_nothing(api_key, tmp_path):
    cache = tmp_path / "cache.jsonl"
    with LocalChatServer() as server:
        first = run(server, [caption(i) for i in range(5)], cache=cache)
        again = run(server, [caption(i) for i in range(5)], cache=cache)
    assert len(server.requests) == 5
    assert again.run["cached"] == 5 and again.run["done"] == 0 and again.records == first.records


def test_failed_requests_are_not_cached_and_retried_on_rerun(api_key, tmp_path):
    cache = tmp_path / "cache.jsonl"
    with LocalChatServer(lambda body, n: Reply(status=400, body="no") if pair_id_of(body) == "p001" else Reply()) as server:
        first = run(server, [caption(i) for i in range(3)], cache=cache)
    assert first.rejected == {"http_400": 1} and len(first.records) == 2
    with LocalChatServer() as server:
        second = run(server, [caption(i) for i in range(3)], cache=cache)
    assert [pair_id_of(r["body"]) for r in server.requests] == ["p001"] and len(second.records) == 3


def _cli(args):
    return [sys.executable, "-m", "llavamed_lite.cli", "synthesize", *args]


def _write_captions(path: Path, n: int) -> Path:
    # LLaVA-Med's dict-of-domain layout, to exercise it
    path.write_text(json.dumps({"chest_xray": [caption(i) for i in range(n)]}))
    return path


@pytest.mark.slow
def test_killed_run_resumes_without_repeating_finished_requests(api_key, tmp_path):
    captions = _write_captions(tmp_path / "captions.json", 30)
    out, cache = tmp_path / "instruct.json", tmp_path / "cache.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with LocalChatServer(delay=0.1) as server:
        args = ["--captions", str(captions), "--out", str(out), "--backend", "openai", "--model", "gpt-4o",
                "--base-url", server.base_url, "--cache", str(cache), "--concurrency", "2", "--no-progress"]
        proc = subprocess.Popen(_cli(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline and (not cache.exists() or cache.read_text().count("\n") < 6):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL and not out.exists()
        finished = {entry["id"] for entry in iter_jsonl(cache)}  # a line cut short by the kill is not finished
        assert 6 <= len(finished) < 30
        n_before = len(server.requests)

        done = subprocess.run(_cli(args), env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        again = [pair_id_of(r["body"]) for r in server.requests[n_before:]]
    assert not set(again) & finished  # no finished item was requested again
    assert set(again) | finished == {f"p{i:03d}" for i in range(30)} and len(again) == len(set(again))
    records, _ = read_training_records(out)
    assert sorted(r["id"] for r in records) == [f"p{i:03d}" for i in range(30)]


def test_cli_max_cost_refuses_to_start(api_key, tmp_path):
    captions = _write_captions(tmp_path / "captions.json", 50)
    from llavamed_lite.cli import main

    with LocalChatServer() as server:
        rc = main(["synthesize", "--captions", str(captions), "--out", str(tmp_path / "o.json"), "--backend", "openai",
                   "--model", "gpt-4o", "--base-url", server.base_url, "--max-cost", "0.01", "--no-progress"])
    assert rc == 3 and server.requests == [] and not (tmp_path / "o.json").exists()


def test_cli_rejects_a_bad_caption_file(tmp_path, capsys):
    from llavamed_lite.cli import main

    bad = tmp_path / "captions.json"
    bad.write_text(json.dumps([{**caption(0), "fig_caption": ""}]))
    assert main(["synthesize", "--captions", str(bad), "--out", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert "record 0" in err and "fig_caption" in err and str(bad) in err


def test_azure_client_uses_deployment_path_api_version_and_api_key_header(monkeypatch):
    key = "azure-" + secrets.token_hex(16)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", key)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with LocalChatServer() as server:
        endpoint = server.base_url.removesuffix("/v1")
        backend = OpenAIBackend(model="my-gpt4o", azure_endpoint=endpoint, api_version="2024-10-21")
        result = synthesize([caption(0)], backend, progress=False, retry=FAST)
    (req,) = server.requests
    assert req["path"] == "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21"
    assert {k.lower(): v for k, v in req["headers"].items()}["api-key"] == key
    assert len(result.records) == 1


def test_azure_without_its_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("AZURE_OPENAI_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="AZURE_OPENAI_API_KEY"):
        OpenAIBackend(model="x", azure_endpoint="https://example.openai.azure.com")


def test_no_new_request_starts_once_spending_reaches_max_cost(api_key):
    # the server reports 100 + 20 tokens per answer; at 10,000 USD per million tokens that is 1.20 USD each
    with LocalChatServer() as server:
        backend = OpenAIBackend(model="gpt-4o", base_url=server.base_url)
        stats = asyncio.run(run_requests(build_requests([caption(i) for i in range(5)], backend), backend,
                                         ResponseCache(), concurrency=1, max_cost=2.0, price=(1e4, 1e4), progress=False))
    assert len(server.requests) == 2 and stats.done == 2
    assert stats.failures == {"budget_exhausted": 3} and stats.cost_usd == pytest.approx(2.4)


def test_a_truncated_answer_loses_its_last_exchange(api_key):
    text = "User: Is it a CT?\n\nAssistant: Yes.\n\nUser: Where?\n\nAssistant: In the li"
    body = {"choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1024}}
    with LocalChatServer(lambda b, n: Reply(body=body)) as server:
        result = run(server, [caption(0)])
    assert [t["value"] for t in result.records[0]["conversations"]][1:] == ["Yes."]
    assert result.dropped == {"truncated": 1}


def _synthesize(server, captions, out, *extra):
    from llavamed_lite.cli import main

    return main(["synthesize", "--captions", str(captions), "--out", str(out), "--backend", "openai", "--model",
                 "gpt-4o", "--base-url", server.base_url, "--max-retries", "0", "--no-progress", *extra])


def test_a_failed_run_never_replaces_a_good_file_and_exits_non_zero(api_key, tmp_path, capsys):
    """issue 18.3: every request failing (401) exited 0 and replaced a 4-record instruct.json with []."""
    captions, out = _write_captions(tmp_path / "captions.json", 4), tmp_path / "instruct.json"
    with LocalChatServer() as server:
        assert _synthesize(server, captions, out) == 0
    good = out.read_bytes()
    assert len(json.loads(good)) == 4
    capsys.readouterr()
    with LocalChatServer(lambda body, n: Reply(status=401, body="bad key")) as server:
        assert _synthesize(server, captions, out, "--cache", str(tmp_path / "other.jsonl")) == 1
    assert out.read_bytes() == good
    err = capsys.readouterr().err
    assert "4 request(s) failed" in err and "was kept" in err


def test_empty_and_oversized_answers_are_retried_on_the_next_run(api_key, tmp_path):
    """issue 18.3: an empty answer was cached for good; a 30 MB answer went into instruct.json."""
    captions, out = _write_captions(tmp_path / "captions.json", 3), tmp_path / "instruct.json"
    huge = "User: What is shown?\n\nAssistant: " + "A nodule. " * 7000  # about 70 KB

    def reply(body, n):
        return Reply(content={"p000": "", "p001": huge}.get(pair_id_of(body), DEFAULT_ANSWER))

    with LocalChatServer(reply) as server:
        assert _synthesize(server, captions, out) == 1  # no earlier file: the 1 good record is written
    assert len(json.loads(out.read_text())) == 1
    with LocalChatServer() as server:
        assert _synthesize(server, captions, out) == 0
    assert sorted(pair_id_of(r["body"]) for r in server.requests) == ["p000", "p001"]
    assert len(json.loads(out.read_text())) == 3 and out.stat().st_size < 20_000
