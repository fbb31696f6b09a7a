"""The LLM judge: chat questions from the tiny world, the prompt, reply parsing, relative scores, and a full run
against a local chat-completions server on 127.0.0.1."""

import json

import pytest

from llavamed_lite.eval.judge import (
    JudgeParseError, Review, chat_items, chat_questions, judge, judge_messages, judge_status, parse_judge_reply,
    preview_prompt, relative_scores,
)
from llavamed_lite.instruct.engine import RetryPolicy
from llavamed_lite.teaching_servers import LocalChatServer, Reply
from llavamed_lite.instruct.synthesize import make_backend
from llavamed_lite.synth.world import build_tiny_world

CHAT_FIELDS = {"question_id", "image", "pair_id", "text", "gpt4_answer", "fig_caption", "in_text_mention", "domain",
               "type", "fig_label"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_tiny_world(tmp_path_factory.mktemp("world"), n_train=1, n_heldout=5)


@pytest.fixture(scope="module")
def questions(world):
    return chat_questions(json.loads(world["captions_heldout"].read_text()), n_conversation=3, seed=0)


def test_chat_questions_in_llava_med_format(world, questions):
    assert all(set(q) == CHAT_FIELDS for q in questions)
    assert [q["question_id"] for q in questions] == list(range(len(questions)))
    assert sum(q["type"] == "detailed_description" for q in questions) == 5
    assert sum(q["type"] == "conversation" for q in questions) == 15
    assert all((world["root"] / q["image"]).is_file() for q in questions)
    first = questions[0]
    assert first["type"] == "detailed_description" and first["gpt4_answer"].startswith("A frontal chest X-ray")
    assert first["domain"]["chest_xray"] is True
    captions = json.loads(world["captions_heldout"].read_text())
    assert chat_questions(captions, seed=0) == questions  # deterministic
    with pytest.raises(ValueError, match="caption record 0 .*findings"):
        chat_questions([{"pair_id": "real-1", "fig_caption": "x"}])
    items = chat_items(questions, world["root"])
    assert items[0].image == str(world["root"] / first["image"]) and items[0].metadata["domain"] == "chest_xray"


def test_judge_prompt_holds_context_question_and_both_answers():
    q = {"question_id": 0, "text": "Is there a nodule?", "gpt4_answer": "Yes, a small one.", "fig_label": "Fig. 2",
         "fig_caption": "Chest radiograph with a nodule.", "in_text_mention": ["As seen in Fig. 2, ...",
                                                                               {"tokens": "A nodule (Fig. 2)."}],
         "type": "conversation", "domain": {"chest_xray": True}}
    system, user = judge_messages(q, "No nodule.")
    assert system["role"] == "system" and user["role"] == "user"
    text = user["content"]
    assert "Fig. 2: Chest radiograph with a nodule." in text
    assert "- As seen in Fig. 2, ..." in text and "- A nodule (Fig. 2)." in text
    assert text.index("Is there a nodule?") < text.index("Yes, a small one.") < text.index("No nodule.")
    assert "1 to 10" in text and "first line" in text
    assert "--- user ---" in preview_prompt(q, "No nodule.")


@pytest.mark.parametrize("reply, scores", [
    ("8 6\nAssistant 1 is more accurate.", (8, 6)),
    ("  \n8 6", (8, 6)),
    ("**8 7**", (8, 7)),
    ("Scores: 9/10 and 4/10", (9, 4)),
    ("Assistant 1: 8, Assistant 2: 5", (8, 5)),
    ("7.5 6.5", (7.5, 6.5)),
    ("Scores:\n9 3\nbecause ...", (9, 3)),
    ("10 0", (10, 0)),
])
def test_parse_judge_reply(reply, scores):
    assert parse_judge_reply(reply) == scores


@pytest.mark.parametrize("reply, reason", [
    (None, "empty reply"),
    ("", "empty reply"),
    ({"not": "text"}, "empty reply"),
    ("I cannot rate these answers.", "not two scores: 0 number"),
    ("8\nThe first is better", "not two scores: 1 number"),
    ("8 7 6", "not two scores: 3 number"),
    ("12 7", "score outside 0-10: '12 7'"),
    ("0 7", "reference scored 0"),
])
def test_parse_judge_reply_failures(reply, reason):
    with pytest.raises(JudgeParseError, match=reason):
        parse_judge_reply(reply)


def test_relative_scores_by_type_and_domain():
    reviews = [Review("0", "conversation", "chest_xray", 8, 4), Review("1", "conversation", "mri", 5, 5),
               Review("2", "detailed_description", "chest_xray", 10, 9),
               Review("3", "conversation", "mri", failed="unparsed: empty reply"),
               Review("4", "conversation", "mri", failed="http_400")]
    s = relative_scores(reviews)
    assert s["overall"]["relative_score"] == pytest.approx(100 * (0.5 + 1 + 0.9) / 3)
    assert s["overall"]["n"] == 3 and s["overall"]["mean_ref"] == pytest.approx(23 / 3)
    assert s["by_type"]["conversation"]["relative_score"] == pytest.approx(75)
    assert s["by_type"]["detailed_description"]["n"] == 1
    assert s["by_domain"]["chest X-ray"]["relative_score"] == pytest.approx(70)
    assert s["by_domain"]["MRI"]["relative_score"] == pytest.approx(100)
    assert s["n_failed"] == 2 and s["failures"] == {"unparsed: empty reply": 1, "http_400": 1}
    assert relative_scores([])["overall"] == {"relative_score": None, "n": 0, "mean_ref": None, "mean_model": None}


def test_judge_against_a_local_server(questions, tmp_path):
    questions = questions[:4]
    answers = [{"question_id": q["question_id"], "text": f"model answer {q['question_id']}"} for q in questions]

    def reply(body, n):
        user = body["messages"][1]["content"]
        if "model answer 1" in user:
            return Reply("I refuse to give numbers.")
        if "model answer 2" in user:
            return Reply(status=400, body={"error": {"message": "bad request"}})
        return Reply("8 6\nThe reference is more complete.")

    cache = tmp_path / "judge_cache.jsonl"
    with LocalChatServer(reply) as server:
        backend = make_backend("openai", model="judge-model", base_url=server.base_url)
        result = judge(questions, answers, backend, cache=cache, retry=RetryPolicy(max_retries=0), progress=False)
        assert len(server.requests) == 4
        sent = [r["body"]["messages"] for r in server.requests]  # concurrent: in any order
        assert judge_messages(questions[0], "model answer 0") in sent
    assert [r.failed for r in result.reviews] == [None, "unparsed: not two scores", "http_400", None]
    assert result.reviews[1].reply == "I refuse to give numbers."
    assert result.scores["overall"]["relative_score"] == pytest.approx(75)
    assert result.scores["n_failed"] == 2 and result.run["requests"] == 4

    with LocalChatServer(reply) as server:  # a rerun asks only what the cache lacks (the failed request)
        backend = make_backend("openai", model="judge-model", base_url=server.base_url)
        again = judge(questions, answers, backend, cache=cache, retry=RetryPolicy(max_retries=0), progress=False)
        assert len(server.requests) == 1
    assert again.scores == result.scores
    with pytest.raises(ValueError, match="1 chat question\\(s\\) have no model answer"):
        judge(questions, answers[1:], backend, progress=False)


def test_only_openai_named_without_a_base_url_needs_the_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert judge_status() is None  # nothing named: the local stand-in
    message = judge_status("openai")
    assert "OPENAI_API_KEY" in message and "preview_prompt" in message
    assert judge_status(base_url="http://127.0.0.1:1/v1") is None
    assert judge_status("openai", base_url="http://127.0.0.1:1/v1") is None
    monkeypatch.setenv("OPENAI_API_KEY", "placeholder-test")
    assert judge_status("openai") is None
    with pytest.raises(ValueError, match="judge backend 'gpt4': choose one of stand-in, openai"):
        judge_status("gpt4")
    with pytest.raises(ValueError, match="'stand-in' runs in-process; it takes no base_url"):
        judge_status("stand-in", base_url="http://127.0.0.1:1/v1")


def test_run_judge_naming_openai_without_a_key_shows_the_prompt_and_sends_nothing(monkeypatch, questions, capsys):
    from llavamed_lite.eval.judge import run_judge

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    answers = [{"question_id": q["question_id"], "text": "a model answer"} for q in questions]
    assert run_judge(questions, answers, backend="openai") is None
    out = capsys.readouterr().out
    assert "No judge available" in out and questions[0]["gpt4_answer"] in out and "a model answer" in out


def test_run_judge_with_a_local_server(questions, tmp_path):
    from llavamed_lite.eval.judge import run_judge

    answers = [{"question_id": q["question_id"], "text": "a model answer"} for q in questions[:3]]
    with LocalChatServer(lambda body, n: Reply("9 6")) as server:
        result = run_judge(questions[:3], answers, model="local", base_url=server.base_url, progress=False)
    assert result.scores["overall"]["relative_score"] == pytest.approx(100 * 6 / 9)


def test_the_judge_is_set_up_as_in_the_paper(world, tmp_path):
    """What a local judge server receives: the caption and the context as stand-ins for the image, the user asking
    while looking at it, the four criteria, scores on the first line, temperature 0, and nothing false: not that
    either assistant lacked the caption, nor that length is to be ignored while level of detail is rated."""
    from llavamed_lite.eval.judge import CHAT_MAX_NEW_TOKENS, run_judge

    captions = json.loads(world["captions_heldout"].read_text())
    record = {**captions[0], "in_text_mention": ["The nodule (Figure 1) was new.", "Figure 1 shows the scan."]}
    q = chat_questions([record], n_conversation=1, seed=0)[1]
    with LocalChatServer(lambda body, n: Reply("8 4\nThe reference is more detailed.")) as server:
        result = run_judge([q], [{"question_id": q["question_id"], "text": "Some answer."}], model="local",
                           base_url=server.base_url, progress=False)
        body = server.requests[0]["body"]
    assert result.scores["overall"]["relative_score"] == pytest.approx(50)
    assert body["temperature"] == 0
    system, user = body["messages"][0]["content"], body["messages"][1]["content"]
    assert f"Figure Caption:\n{q['fig_label']}: {record['fig_caption']}" in user
    assert "Figure Context:\n- The nodule (Figure 1) was new.\n- Figure 1 shows the scan." in user
    assert user.index(record["fig_caption"]) < user.index(q["text"]) < user.index(q["gpt4_answer"])
    assert user.index(q["gpt4_answer"]) < user.index("Some answer.")
    instructions = user[user.index("[Instructions]"):].lower()
    assert "looking at a biomedical image" in instructions and "caption and context" in instructions
    for criterion in ("helpfulness", "relevance", "accuracy", "level of detail", "1 to 10", "first line"):
        assert criterion in instructions
    for false_or_off in ("neither", "could not read", "couldn't", "did not see", "without the caption", "length"):
        assert false_or_off not in (system + user).lower()
    assert CHAT_MAX_NEW_TOKENS == 1024


def test_chat_answers_get_llava_med_s_1024_new_tokens_by_default(monkeypatch, world, questions):
    import llavamed_lite.eval.evaluate as evaluate
    from llavamed_lite.eval.judge import answer_chat

    calls = []
    monkeypatch.setattr(evaluate, "answer_items", lambda *args, **kwargs: calls.append((args, kwargs)) or [])
    answer_chat("model", questions[:2], world["root"], "answers.jsonl", batch_size=4)
    answer_chat("model", questions[:2], world["root"], "answers.jsonl", max_new_tokens=8)
    assert [kwargs["max_new_tokens"] for _, kwargs in calls] == [1024, 8] and calls[0][1]["batch_size"] == 4
    assert [it.question_id for it in calls[0][0][1]] == [0, 1]  # chat_items, ids kept as ints
