"""Batched generation, answer files and resume, and the `evaluate` command, on a tiny random-init Llava."""

import copy
import dataclasses
import json

import pytest
import torch
from PIL import Image

from llavamed_lite.cli import main as cli_main
from llavamed_lite.data.formats import ANSWER_FIELDS
from llavamed_lite.eval.evaluate import score_answers
from llavamed_lite.eval.generate import (answer_questions, answered, generate_answers, item_image,
                                         shortest_first_per_images)
from llavamed_lite.eval.vqa import VQAItem, load_vqa_rad, with_closed_suffix, write_llava_vqa


@pytest.fixture(scope="module")
def items():
    return load_vqa_rad("test")[:5]


def test_batched_answers_equal_one_at_a_time(tiny_llava, items):
    model, processor = tiny_llava
    batched = answer_questions(model, processor, items, max_new_tokens=6)
    single = [answer_questions(model, processor, [it], max_new_tokens=6)[0] for it in items]
    assert batched == single
    assert processor.tokenizer.padding_side == "right"  # the shared processor is left as it was


def test_questions_are_read_shortest_first_within_runs_of_images():
    items = [VQAItem(f"q{i}", image, "?", "", "OPEN") for i, image in enumerate("aabbcca")]
    # runs about 2 images: a a b b | c c a (image a again, after its run ended)
    assert shortest_first_per_images(items, [5, 1, 4, 2, 3, 9, 0], images=2) == [1, 3, 2, 0, 6, 4, 5]


def test_shared_images_and_early_stops_give_generate_s_answers(tiny_llava, items):
    """Questions on one image share its prefix cache, and rows that write </s> leave the batch: the answers are
    still those of `model.generate` on each question alone."""
    model, processor = tiny_llava
    tokenizer = processor.tokenizer
    on_shared_images = [dataclasses.replace(it, question_id=f"{it.question_id}-{k}", image=items[k % 3].image)
                        for k, it in enumerate(items + items[:3])]

    def generate_one(it, stopper):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": it.question}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = processor(images=[item_image(it)], text=[text], return_tensors="pt")
        out = stopper.generate(**inputs, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                               eos_token_id=tokenizer.eos_token_id)
        return out[0, inputs["input_ids"].shape[1]:].tolist()

    # A copy of the model with sharp attention (random init attends almost uniformly, blind to positions) that writes
    # </s> where it would first write a token it writes at many different steps of its answers.
    stopper = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in stopper.model.language_model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param *= 20
    written = [generate_one(it, stopper) for it in on_shared_images]

    def first_steps(token):  # the steps at which each answer first writes `token`
        return {ids.index(token) if token in ids else len(ids) for ids in written}

    common = max({t for ids in written for t in ids}, key=lambda t: len(first_steps(t)))
    head = stopper.lm_head.weight  # (vocab, hidden)
    with torch.no_grad():
        head[tokenizer.eos_token_id] = head[common] * 1.5
    alone = [generate_one(it, stopper) for it in on_shared_images]
    lengths = {len(ids) for ids in alone}
    assert len(lengths) > 1 and min(lengths) < 8  # some rows stop early, at different steps
    expected = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in alone]
    assert answer_questions(stopper, processor, on_shared_images, max_new_tokens=8) == expected
    # Smaller batches: questions join rows that are still writing (caches of other lengths, padded to one), and
    # with batch size 2 the images (in no order) are encoded two at a time, some twice.
    for batch_size in (4, 3, 2):
        assert answer_questions(stopper, processor, on_shared_images, batch_size, max_new_tokens=8) == expected
    # the "generate" engine (llavamed_lite.generation, batched with left padding) gives the same answers
    assert answer_questions(stopper, processor, on_shared_images, 4, 8, engine="generate") == expected
    with pytest.raises(ValueError, match="engine must be one of cache, generate"):
        answer_questions(stopper, processor, on_shared_images, engine="vllm")


def test_answer_file_and_resume(tiny_llava, items, tmp_path):
    model, processor = tiny_llava
    path = tmp_path / "answers.jsonl"
    first = generate_answers(model, processor, items[:2], path, "tiny", batch_size=2, max_new_tokens=4, progress=False)
    assert [set(r) for r in first] == [set(ANSWER_FIELDS)] * 2
    assert first[0]["question_id"] == items[0].question_id and first[0]["prompt"] == items[0].question
    assert first[0]["metadata"] == {"answer_type": "CLOSED", "question_type": "PRES"}
    kept = path.read_text()
    with path.open("a") as f:
        f.write('{"question_id": "vqa-rad-test-99", "te')  # a crash mid-line
    answers = generate_answers(model, processor, items, path, "tiny", batch_size=2, max_new_tokens=4, progress=False)
    assert [r["question_id"] for r in answers] == [it.question_id for it in items]  # each once, cut line dropped
    assert path.read_text().startswith(kept)
    again = generate_answers(model, processor, items, path, "tiny", batch_size=2, max_new_tokens=4, progress=False)
    assert again == answers  # nothing left to do
    with pytest.raises(ValueError, match=r"answers.jsonl: line 1 was written by model 'tiny', not 'other'"):
        generate_answers(model, processor, items, path, "other", progress=False)
    assert len(answered(path)) == 5
    suffixed = with_closed_suffix(items)
    with pytest.raises(ValueError, match=r"question vqa-rad-test-11 was answered with another prompt"):
        generate_answers(model, processor, suffixed, path, "tiny", progress=False)


def test_answer_file_pairs_with_the_questions_by_position(tiny_llava, items, tmp_path):
    """LLaVA-Med's scorers zip the question file with the answer file: ours is in question order, with the
    question's own id (an int stays an int), even when answers finish in another order and after a resume."""
    from llavamed_lite.eval.metrics import vqa_scores
    from llavamed_lite.eval.vqa import load_llava_vqa

    model, processor = tiny_llava
    images = [items[0].image, items[1].image, items[0].image, items[2].image, items[1].image]  # answered a a b b c
    questions = [dataclasses.replace(it, question_id=100 - k, image=image)
                 for k, (it, image) in enumerate(zip(items, images))]
    write_llava_vqa(tmp_path / "questions.json", questions, image_folder="/")
    questions = load_llava_vqa(tmp_path / "questions.json", image_folder="/")
    path = tmp_path / "answers.jsonl"
    generate_answers(model, processor, questions[3:], path, "m", batch_size=2, max_new_tokens=3, progress=False)
    generate_answers(model, processor, questions, path, "m", batch_size=2, max_new_tokens=3, progress=False)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    official = json.loads((tmp_path / "questions.json").read_text())
    assert [r["question_id"] for r in rows] == [q["id"] for q in official] == [100, 99, 98, 97, 96]
    by_position = vqa_scores([r["text"] for r in rows], [q["conversations"][1]["value"] for q in official],
                             [q["answer_type"] for q in official])
    assert by_position == vqa_scores(*zip(*[(r["text"], q.answer, q.answer_type) for r, q in zip(rows, questions)]))
    assert {k: v for k, v in score_answers(questions, rows).items() if k not in ("by_question_type", "metric")} \
        == by_position


def test_generation_refuses_bad_input(tiny_llava, items, tmp_path):
    model, processor = tiny_llava
    with pytest.raises(ValueError, match="not unique"):
        generate_answers(model, processor, [items[0], items[0]], tmp_path / "a.jsonl", "m", progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        generate_answers(model, processor, items, tmp_path / "a.jsonl", "m", batch_size=0, progress=False)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    bad = VQAItem("q-broken", str(broken), "Is it?", "yes", "CLOSED")
    with pytest.raises(ValueError, match="question q-broken: .*broken.png: not a readable image"):
        generate_answers(model, processor, [bad], tmp_path / "a.jsonl", "m", progress=False)
    smuggled = dataclasses.replace(items[0], question_id="q-smuggled", question="What is <image> here?")
    with pytest.raises(ValueError, match="question q-smuggled: the text holds the image token '<image>'"):
        generate_answers(model, processor, [items[1], smuggled], tmp_path / "a.jsonl", "m", progress=False)
    (tmp_path / "junk.jsonl").write_text('{"text": "no id"}\n')
    with pytest.raises(ValueError, match="junk.jsonl: line 1 is not an answer record"):
        answered(tmp_path / "junk.jsonl")


def test_score_answers_needs_every_question(items):
    answers = [{"question_id": it.question_id, "text": it.answer} for it in items]
    scores = score_answers(items, answers)
    assert scores["closed_accuracy"] == 1.0 and scores["open_recall"] in (1.0, None)
    with pytest.raises(ValueError, match="1 question\\(s\\) have no answer"):
        score_answers(items, answers[1:])


def test_evaluate_command_on_vqa_rad(tiny_llava_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["evaluate", "--benchmark", "vqa-rad", "--model", str(tiny_llava_dir), "--out", str(out), "--limit", "6",
            "--batch-size", "4", "--max-new-tokens", "3", "--closed-suffix", "--device", "cpu"]
    assert cli_main(args) == 0
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [a["question_id"] for a in answers] == [it.question_id for it in load_vqa_rad("test")[:6]]  # in order
    closed = [a for a in answers if a["metadata"]["answer_type"] == "CLOSED"]
    assert closed and all(a["prompt"].endswith("[yes, no]") for a in closed)
    scores = json.loads((out / "scores.json").read_text())
    assert scores["n_closed"] + scores["n_open"] == 6 and scores["benchmark"] == "vqa-rad"
    assert scores["mode"] == "paper" and scores["metric"].startswith("paper metric")  # says which figures are which
    assert "PRES" in scores["by_question_type"]
    assert json.loads(capsys.readouterr().out)["n_questions"] == 6


def test_evaluate_command_on_a_tiny_world_file(tiny_llava_dir, tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (64, 64), "white").save(tmp_path / "images" / "f0.png")
    items = [VQAItem("f0-q0", str(tmp_path / "images" / "f0.png"), "Is there a nodule?", "no", "CLOSED", "finding"),
             VQAItem("f0-q1", str(tmp_path / "images" / "f0.png"), "Which lung?", "left", "OPEN", "side")]
    write_llava_vqa(tmp_path / "vqa_heldout.json", items, image_folder=tmp_path)
    out = tmp_path / "eval"
    assert cli_main(["evaluate", "--benchmark", "tiny", "--data", str(tmp_path), "--model", str(tiny_llava_dir),
                     "--out", str(out), "--max-new-tokens", "2", "--device", "cpu"]) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert (scores["n_closed"], scores["n_open"]) == (1, 1)


def test_evaluate_command_reports_bad_input(tiny_llava_dir, tmp_path, capsys):
    assert cli_main(["evaluate", "--benchmark", "tiny", "--model", str(tiny_llava_dir), "--out", str(tmp_path)]) == 2
    assert "the tiny benchmark needs its data (--data" in capsys.readouterr().err
    assert cli_main(["evaluate", "--benchmark", "vqa-rad", "--model", str(tmp_path / "none"), "--out",
                     str(tmp_path)]) == 2
    assert "not a saved model folder" in capsys.readouterr().err


def test_evaluate_names_the_model_by_its_folder_and_parent(tiny_llava_dir, tmp_path):
    from llavamed_lite.eval.evaluate import evaluate

    scores = evaluate(tiny_llava_dir, "vqa-rad", tmp_path, limit=1, max_new_tokens=1, device="cpu", progress=False)
    assert scores["model_id"] == f"{tiny_llava_dir.parent.name}/{tiny_llava_dir.name}"


def test_answers_of_other_weights_are_never_resumed(tiny_llava_dir, tmp_path, capsys):
    """issue 18.1: `evaluate --model B --out O` after A gave B the answers of A; so did a model retrained in place."""
    import os
    import shutil

    from safetensors.torch import load_file, save_file

    from llavamed_lite.eval.evaluate import model_fingerprint

    a, b, out = tiny_llava_dir, tmp_path / "b", tmp_path / "o"
    shutil.copytree(a, b)
    weights = b / "model.safetensors"
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1  # other weights, the same names, sizes and config
    save_file(tensors, weights, metadata={"format": "pt"})
    assert model_fingerprint(a) != model_fingerprint(b)
    argv = ["evaluate", "--benchmark", "vqa-rad", "--limit", "2", "--max-new-tokens", "2", "--device", "cpu",
            "--model-id", "stage2/model", "--out", str(out)]
    assert cli_main([*argv, "--model", str(a)]) == 0
    first = (out / "answers.jsonl").read_text()
    capsys.readouterr()
    assert cli_main([*argv, "--model", str(b)]) == 2
    assert "answered by other weights" in capsys.readouterr().err and (out / "answers.jsonl").read_text() == first
    assert cli_main([*argv, "--model", str(b), "--restart"]) == 0
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [r["metadata"]["model_fingerprint"] for r in rows] == [model_fingerprint(b)] * 2
    stat = weights.stat()  # retrained in place: the same folder, its weights written again
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cli_main([*argv, "--model", str(b)]) == 2


def test_questions_beyond_the_context_or_not_unicode_are_refused_by_id(tiny_llava, items, tmp_path):
    """issue 18.6: a question longer than the context got a garbage answer (rc 0); a lone surrogate a TypeError."""
    model, processor = tiny_llava
    limit, path = model.config.text_config.max_position_embeddings, tmp_path / "a.jsonl"
    long = dataclasses.replace(items[1], question="Is there a nodule in the left lung? " * (limit // 4))
    with pytest.raises(ValueError, match=rf"question {long.question_id}: \d+ prompt tokens \+ 4 new tokens exceed "
                                         rf"the model's context of {limit} tokens"):
        generate_answers(model, processor, [items[0], long], path, "m", max_new_tokens=4, progress=False)
    with pytest.raises(ValueError, match=rf"question {items[0].question_id}: .* exceed"):
        generate_answers(model, processor, [items[0]], path, "m", max_new_tokens=limit, progress=False)
    bad = dataclasses.replace(items[0], question="Is there a nodule\ud800?")
    with pytest.raises(ValueError, match=rf"question {bad.question_id}: the text is not valid Unicode"):
        generate_answers(model, processor, [bad], path, "m", progress=False)
    assert not path.exists()


def test_an_empty_question_list_is_a_clear_error(tiny_llava_dir, tmp_path, capsys):
    """issue 18.6: an empty question list reported a missing answers.jsonl."""
    questions = tmp_path / "questions.json"
    questions.write_text("[]")
    argv = ["evaluate", "--benchmark", "tiny", "--data", str(questions), "--model", str(tiny_llava_dir), "--out",
            str(tmp_path / "o")]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no questions to answer" in err and not (tmp_path / "o").exists()


def test_a_refused_question_prints_one_line_and_no_progress_bar(tiny_llava_dir, tmp_path, capsys):
    """The context guard through `evaluate`: one error line, before the answering bar starts (the model loads
    first, with its own progress bar: the guard needs its config and tokenizer)."""
    from llavamed_lite.paths import DATA_SAMPLES

    xray = DATA_SAMPLES / "xray" / "00000001_000.png"
    long = [{"id": "q-long", "image": str(xray), "answer_type": "OPEN",
             "conversations": [{"from": "human", "value": "<image>\n" + "Is there a nodule? " * 400},
                               {"from": "gpt", "value": "no"}]}]
    (tmp_path / "questions.json").write_text(json.dumps(long))
    capsys.readouterr()
    assert cli_main(["evaluate", "--benchmark", "tiny", "--data", str(tmp_path / "questions.json"), "--model",
                     str(tiny_llava_dir), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    last = err.splitlines()[-1]
    assert "answering" not in err and "Traceback" not in err and not (tmp_path / "o").exists()
    assert last.startswith("llavamed-lite evaluate: question q-long:") and "exceed the model's context" in last


def test_an_unchecked_transformers_release_answers_through_generate(tiny_llava, items, monkeypatch):
    """The cache engine edits DynamicCache internals: on a transformers release it was not checked with,
    evaluation takes `llavamed_lite.generation.generate` instead, with the same greedy answers."""
    from llavamed_lite.eval import generate as engine

    model, processor = tiny_llava
    expected = answer_questions(model, processor, items[:3], max_new_tokens=4)

    def no_cache_engine(*args):
        raise AssertionError("the cache engine ran on an unchecked release")

    monkeypatch.setattr(engine, "cache_engine_supported", lambda: False)
    monkeypatch.setattr(engine, "_decode", no_cache_engine)
    assert answer_questions(model, processor, items[:3], max_new_tokens=4) == expected
