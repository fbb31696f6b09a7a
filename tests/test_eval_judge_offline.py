"""The chat evaluation offline: the stand-in judge (what it scores, that it reads only the prompt, that it can be
served like a real endpoint), the judge chosen only by name, the score files, and hostile judge replies."""

import json

import pytest

from llavamed_lite.eval.judge import (
    REVIEWS_FILE, SCORES_FILE, chat_questions, judge_messages, judge_table, parse_judge_reply, run_judge,
)
from llavamed_lite.eval.judge_stand_in import StandInJudge, findings, stand_in_reply, yes_no
from llavamed_lite.instruct.client import Request, RequestFailed
from llavamed_lite.instruct.engine import RetryPolicy
from llavamed_lite.teaching_servers import LocalChatServer, Reply
from llavamed_lite.synth.world import build_tiny_world

NO_RETRY = RetryPolicy(max_retries=0)


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
    world = build_tiny_world(tmp_path_factory.mktemp("world"), n_train=1, n_heldout=4)
    return chat_questions(json.loads(world["captions_heldout"].read_text()), n_conversation=3, seed=0)


def as_answers(questions, texts):
    return [{"question_id": q["question_id"], "text": t} for q, t in zip(questions, texts)]


def wrong(q):
    """A wrong answer: the opposite reply to a yes/no question, else a finding the figure does not have."""
    ref = q["gpt4_answer"]
    if yes_no(ref) == "yes":
        return "No" + ref[3:]
    if yes_no(ref) == "no":
        return "Yes, there is a large mass with necrosis."
    return "There is a large mass with necrosis in the left lung and an enlarged heart."


def test_findings_read_negation_and_replies():
    assert findings("A frontal chest X-ray showing no lung nodule and a normal-sized heart.") == (
        {"frontal", "chest", "x", "ray", "normal", "sized", "heart"}, {"nodule"})
    assert findings("The heart isn't enlarged; without glands.") == ({"heart"}, {"enlarged", "gland"})
    assert findings("No, the heart is normal in size.") == ({"heart", "normal", "size"}, set())
    assert [yes_no(t) for t in ("No, it is not.", "Yes.", "No abnormality.", "yes", "Nodule seen")] == [
        "no", "yes", None, "yes", None]


def test_stand_in_scores_a_hallucinated_finding_and_a_flipped_reply_below_the_reference():
    q = {"question_id": 0, "text": "Describe the image.", "fig_caption": "Chest radiograph without nodules.",
         "gpt4_answer": "A chest X-ray with no nodule and a normal heart.", "in_text_mention": []}
    reply = stand_in_reply(judge_messages(q, "A chest X-ray with a small nodule in the left lung and a normal heart."))
    ref_score, model_score = parse_judge_reply(reply)
    assert ref_score == 10 and model_score < 6
    assert "contradiction(s): nodule" in reply and "(not: left, lung, small)" in reply
    assert "not a language model" in reply
    assert parse_judge_reply(stand_in_reply(judge_messages(q, q["gpt4_answer"]))) == (10, 10)

    q = {**q, "text": "Is the heart enlarged?", "gpt4_answer": "No, the heart is normal in size."}
    reply = stand_in_reply(judge_messages(q, "Yes, the heart is enlarged."))
    assert parse_judge_reply(reply)[1] < 4 and '"yes" where the reference says "no"' in reply
    assert parse_judge_reply(stand_in_reply(judge_messages(q, "")))[1] == 1


def test_the_docs_example_is_what_the_stand_in_replies():
    from pathlib import Path

    q = {"question_id": 0, "text": "Describe the image.", "fig_caption": "Chest radiograph without nodules.",
         "gpt4_answer": "A chest X-ray with no nodule and a normal heart.", "in_text_mention": []}
    reply = stand_in_reply(judge_messages(q, "A chest X-ray with a small nodule in the left lung and a normal heart."))
    page = (Path(__file__).parents[1] / "docs" / "chat-judge.md").read_text()
    assert f"```text\n{reply}\n```" in page


def test_stand_in_reads_only_a_judge_prompt():
    with pytest.raises(ValueError, match="not a judge prompt"):
        stand_in_reply([{"role": "user", "content": "Write a poem."}])
    request = Request("0", {}, [{"role": "user", "content": "Write a poem."}], "key")
    with pytest.raises(RequestFailed, match="not_a_judge_prompt"):
        import asyncio

        asyncio.run(StandInJudge().complete(request))


def test_offline_judge_ranks_the_reference_first_a_wrong_answer_lower_and_writes_its_files(questions, tmp_path):
    results = {}
    for name, texts in {"reference": [q["gpt4_answer"] for q in questions], "wrong": [wrong(q) for q in questions],
                        "empty": [""] * len(questions)}.items():
        results[name] = run_judge(questions, as_answers(questions, texts), out_dir=tmp_path / name, progress=False)
    overall = {name: r.scores["overall"]["relative_score"] for name, r in results.items()}
    assert overall["reference"] == pytest.approx(100)
    assert overall["empty"] < overall["wrong"] < 50
    assert all(r.scores["n_failed"] == 0 and r.scores["overall"]["n"] == len(questions) for r in results.values())
    assert results["wrong"].judge == {"backend": "stand-in", "model": "stand-in-judge"}
    table = judge_table(results["wrong"]).splitlines()
    assert table[0] == "Judge: **stand-in (stand-in-judge)**"
    mean_model = results["wrong"].scores["overall"]["mean_model"]
    assert table[4] == f"| overall | {len(questions)} | 10.0 | {mean_model:.1f} | {overall['wrong']:.1f} |"
    assert table[5].startswith("| type: conversation |") and any(r.startswith("| domain: MRI |") for r in table)

    written = json.loads((tmp_path / "wrong" / SCORES_FILE).read_text())
    assert set(written) == {"judge", "scores", "run"} and written["judge"]["backend"] == "stand-in"
    assert written["scores"] == json.loads(json.dumps(results["wrong"].scores))
    assert set(written["scores"]["by_type"]) == {"conversation", "detailed_description"}
    lines = [json.loads(line) for line in (tmp_path / "wrong" / REVIEWS_FILE).read_text().splitlines()]
    assert [line["question_id"] for line in lines] == [str(q["question_id"]) for q in questions]
    assert set(lines[0]) == {"question_id", "type", "domain", "score_ref", "score_model", "failed", "reply"}
    assert lines[0]["score_ref"] == 10 and lines[0]["reply"].startswith("10 ")


def test_a_key_in_the_environment_never_picks_a_network_judge(monkeypatch, questions):
    import openai

    def no_client(*args, **kwargs):
        raise AssertionError("a network client was made")

    monkeypatch.setenv("OPENAI_API_KEY", "placeholder-never-sent")
    monkeypatch.setattr(openai, "AsyncOpenAI", no_client)
    monkeypatch.setattr(openai, "AsyncAzureOpenAI", no_client)
    result = run_judge(questions[:2], as_answers(questions, ["x", "y"]), progress=False)
    assert result.judge["backend"] == "stand-in" and result.run["requests"] == 2
    with pytest.raises(AssertionError, match="a network client was made"):  # the patch does catch a real client
        run_judge(questions[:2], as_answers(questions, ["x", "y"]), backend="openai", progress=False)


def test_the_stand_in_served_like_a_real_endpoint_gives_the_same_scores(questions, tmp_path):
    answers = as_answers(questions, [wrong(q) for q in questions])
    offline = run_judge(questions, answers, progress=False)

    def serve(body, n):  # the first request fails once: the engine retries it
        return Reply(status=503, body={"error": {"message": "busy"}}) if n == 0 else Reply(
            stand_in_reply(body["messages"]))

    with LocalChatServer(serve) as server:
        served = run_judge(questions, answers, model="stand-in-judge", base_url=server.base_url, progress=False,
                           retry=RetryPolicy(max_retries=1, base_delay=0), concurrency=1)
    assert served.scores == offline.scores and served.run["retries"] == {"http_503": 1}
    assert served.judge == {"backend": "openai", "model": "stand-in-judge"}


def test_hostile_judge_replies_are_counted_and_nothing_written_is_lost(questions, tmp_path):
    questions = questions[:7]
    answers = as_answers(questions, [f"answer {i}" for i in range(len(questions))])
    truncated = '{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"content": "8 6'
    hostile = {"answer 1": Reply("eight and six"), "answer 2": Reply("12 7\nvery good"),
               "answer 3": Reply(body=truncated), "answer 4": Reply("9 9 " + "x" * 100_000),
               "answer 5": Reply(content=None), "answer 6": Reply("  \n**Scores:** 7.5/10 6/10\n")}

    def reply(body, n):
        user = body["messages"][1]["content"]
        return next((r for marker, r in hostile.items() if f"[Assistant 2]\n{marker}\n" in user), Reply("8 4\nok"))

    cache, out = tmp_path / "judge_cache.jsonl", tmp_path / "out"
    with LocalChatServer(reply) as server:
        first = run_judge(questions, answers, base_url=server.base_url, model="m", cache=cache, out_dir=out,
                          retry=NO_RETRY, progress=False)
    assert [r.failed for r in first.reviews] == [
        None, "unparsed: not two scores", "unparsed: score outside 0-10", "malformed_response", "oversized_response",
        "empty_response", None]
    assert first.scores["n_failed"] == 5 and first.scores["overall"]["n"] == 2
    assert judge_table(first).endswith("Left out: 5 review(s), unparsed: not two scores: 1, unparsed: score outside "
                                       "0-10: 1, malformed_response: 1, oversized_response: 1, empty_response: 1")
    assert first.scores["overall"]["relative_score"] == pytest.approx(100 * (4 / 8 + 6 / 7.5) / 2)
    cached_lines = cache.read_text().splitlines()
    assert len(cached_lines) == 4  # every reply that arrived whole, parsed or not; the failed requests are not
    saved = (out / SCORES_FILE).read_text()

    with cache.open("a") as f:  # a crash in the middle of writing the next cache line
        f.write('{"key": "abc", "resp')
    with LocalChatServer(lambda body, n: Reply(status=500, body="down")) as server:
        again = run_judge(questions, answers, base_url=server.base_url, model="m", cache=cache, out_dir=out,
                          retry=NO_RETRY, progress=False)
        assert len(server.requests) == 3  # only what the cache lacks is asked again
    assert [r.score_model for r in again.reviews] == [r.score_model for r in first.reviews]
    assert again.scores["overall"] == first.scores["overall"] and again.scores["failures"]["http_500"] == 3
    assert cache.read_text().splitlines()[:4] == cached_lines

    with pytest.raises(ValueError, match="1 chat question\\(s\\) have no model answer"):
        run_judge(questions, answers[1:], cache=cache, out_dir=out, progress=False)
    with pytest.raises(ValueError, match="chat question 0: missing field\\(s\\) gpt4_answer"):
        run_judge([{"question_id": 0, "text": "?", "fig_caption": "c"}], answers[:1], out_dir=out, progress=False)
    with pytest.raises(ValueError, match="answer 0: not an answer record"):
        run_judge(questions, ["a plain string"], out_dir=out, progress=False)
    assert json.loads((out / SCORES_FILE).read_text())["scores"] == json.loads(json.dumps(again.scores))
    assert saved != (out / SCORES_FILE).read_text()  # the second run rewrote it whole (its failures differ)
