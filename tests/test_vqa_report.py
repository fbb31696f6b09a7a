"""Notebook 06's helpers: scores beside baselines, tables, bars per question type, the gallery, what the paper
metric forgives; answering any questions with a saved model; the VQA stage's folder per benchmark."""

import matplotlib

matplotlib.use("Agg")

import pytest

from llavamed_lite.eval.evaluate import answer_items, default_model_id
from llavamed_lite.eval.paper import vqa_table
from llavamed_lite.eval.report import (
    baseline_scores, examples_table, forgiven_examples, paper_table, pick_examples, plot_by_question_type,
    plot_gallery, plot_paper_comparison, predictions_for, scores_of, scores_table)
from llavamed_lite.eval.vqa import VQAItem, load_vqa_rad
from llavamed_lite.runs import RunDir


@pytest.fixture(scope="module")
def rad_test():
    return load_vqa_rad("test")


def item(qid, answer, kind, qtype="PRES", image="x.png", question="Is there a mass?"):
    return VQAItem(qid, image, question, answer, kind, qtype)


def test_predictions_in_item_order_and_missing_named():
    items = [item("a", "yes", "CLOSED"), item("b", "liver", "OPEN")]
    answers = [{"question_id": "b", "text": "the liver"}, {"question_id": "a", "text": "yes"}]
    assert predictions_for(items, answers) == ["yes", "the liver"]
    with pytest.raises(ValueError, match=r"1 question\(s\) have no answer, e.g. \['b'\]"):
        predictions_for(items, answers[1:])


def test_scores_of_breaks_down_by_question_type():
    items = [item("a", "yes", "CLOSED", "PRES"), item("b", "no", "CLOSED", "SIZE"), item("c", "left lung", "OPEN", "POS")]
    s = scores_of(items, ["yes", "not sure", "left"])
    assert s["closed_accuracy"] == 1.0 and s["closed_accuracy_strict"] == 0.5 and s["open_recall"] == 0.5
    assert set(s["by_question_type"]) == {"PRES", "SIZE", "POS"}
    assert s["by_question_type"]["SIZE"]["closed_accuracy_strict"] == 0.0


def test_baselines_on_vqa_rad(rad_test):
    scores = baseline_scores(load_vqa_rad("train", check_images=False), rad_test)
    yes, majority = scores['always "yes"'], scores["majority per question type"]
    assert yes["n_closed"] == 272 and yes["n_open"] == 179
    assert 0.4 < yes["closed_accuracy"] < 0.7  # about half the closed answers are "yes"
    assert majority["closed_accuracy"] >= yes["closed_accuracy_strict"] - 0.05
    assert 0.0 < majority["open_recall"] < 0.5  # a question-only prior gets little of the open answers


def test_tables_are_markdown():
    s = scores_of([item("a", "yes", "CLOSED"), item("b", "liver", "OPEN")], ["yes", "kidney"])
    table = scores_table({"ours": s})
    assert "closed (paper metric) | closed (strict, ours)" in table.splitlines()[0]
    assert table.splitlines()[2] == "| ours | 100.0 | 100.0 | 0.0 | 0.0 | 1 / 1 |"
    skipped = scores_of([item("a", "yes", "CLOSED"), item("b", "yes", "CLOSED ")], ["yes", "yes"])
    assert scores_table({"x": skipped}).splitlines()[2].endswith("| 1 / 0 (1) |")
    rows = paper_table(vqa_table("vqa-rad", {"ours": s})).splitlines()
    assert rows[0] == "| method | open recall (paper metric) | closed (paper metric) | closed (strict, ours) |"
    assert rows[2].startswith("| LLaVA (general) | 50.00 | 65.07 |") and rows[-1] == "| ours | 0.00 | 100.00 | 100.00 |"
    assert examples_table([{"question": "a|b", "answer": "x\ny", "prediction": ""}]).splitlines()[-1] == \
        "| a\\|b | x y |  |"


def test_forgiven_examples_on_hand_made_outputs():
    items = [item("a", "no", "CLOSED"), item("b", "yes", "CLOSED"), item("c", "no", "OPEN")]
    rows = forgiven_examples(items, ["I do not know", "yes", "not"])
    assert [r["question_id"] for r in rows] == ["a"] and rows[0]["prediction"] == "I do not know"


def test_pick_examples_mixes_kinds_on_distinct_images(rad_test):
    picked = pick_examples(rad_test, [""] * len(rad_test), n=6, seed=1)
    assert len(picked) == 6 and len({rad_test[i].image for i in picked}) == 6
    assert sorted(rad_test[i].answer_type for i in picked) == ["CLOSED"] * 3 + ["OPEN"] * 3
    assert picked == pick_examples(rad_test, [""] * len(rad_test), n=6, seed=1)


def test_plots(rad_test):
    items = rad_test[:40]
    preds = ["yes"] * len(items)
    fig = plot_by_question_type({"a": scores_of(items, preds), "b": scores_of(items, ["no"] * len(items))})
    assert len(fig.axes) == 2 and fig.axes[0].get_ylim() == (0, 1.05)
    fig = plot_gallery(items, preds, columns=4)
    assert len(fig.axes) == 8
    with pytest.raises(ValueError, match="no questions"):
        plot_gallery(items, preds, indices=[])


def test_paper_comparison_bars_colour_the_paper_ours_and_baselines(rad_test):
    items = rad_test[:40]
    rows = vqa_table("vqa-rad", {"tiny (ours)": scores_of(items, ["yes"] * len(items)),
                                 'baseline: always "yes"': scores_of(items, ["yes"] * len(items))})
    fig = plot_paper_comparison(rows, "VQA-RAD")
    closed = fig.axes[0].patches
    assert len(closed) == len(rows) and [round(p.get_width(), 2) for p in closed] == [r["closed"] for r in rows]
    colours = {r["method"]: p.get_facecolor() for r, p in zip(rows, closed)}
    assert colours["tiny (ours)"] != colours['baseline: always "yes"'] != colours["LLaVA (general)"]
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0] == rows[0]["method"]  # first row on top


def test_answer_items_resumes_and_names_the_model(tiny_llava_dir, rad_test, tmp_path):
    out = tmp_path / "chat" / "answers.jsonl"
    answers = answer_items(tiny_llava_dir, rad_test[:3], out, batch_size=2, max_new_tokens=3, device="cpu",
                           progress=False)
    assert [a["question_id"] for a in answers] == [it.question_id for it in rad_test[:3]]
    assert answers[0]["model_id"] == default_model_id(tiny_llava_dir)
    again = answer_items(tiny_llava_dir, rad_test[:4], out, max_new_tokens=3, device="cpu", progress=False)
    assert again[:3] == answers and len(again) == 4


def test_vqa_stage_folder_per_benchmark(tmp_path):
    run = RunDir(tmp_path)
    assert [run.stage(s).name for s in ("1", "2", "vqa")] == ["stage1", "stage2", "vqa"]
    assert run.stage("vqa", "vqa-rad").name == "vqa_rad" and run.stage("2", "vqa-rad").name == "stage2"
    assert run.stage("vqa", "slake").name == "vqa_slake" and run.model("vqa", "slake") == tmp_path / "vqa_slake" / "model"
    with pytest.raises(ValueError, match="unknown stage '3'"):
        run.stage("3")


def test_evaluate_restart_drops_the_old_answers(tiny_llava_dir, tmp_path):
    from llavamed_lite.eval.evaluate import ANSWERS_FILE, evaluate

    out = tmp_path / "eval"
    out.mkdir()
    stale = '{"question_id": "vqa-rad-test-0", "prompt": "?", "text": "stale", "model_id": "x"}\n'
    (out / ANSWERS_FILE).write_text(stale)
    with pytest.raises(ValueError, match="was written by model 'x'"):
        evaluate(tiny_llava_dir, "vqa-rad", out, limit=2, max_new_tokens=2, model_id="m", device="cpu", progress=False)
    scores = evaluate(tiny_llava_dir, "vqa-rad", out, limit=2, max_new_tokens=2, model_id="m", device="cpu",
                      progress=False, restart=True)
    assert scores["n_questions"] == 2 and "stale" not in (out / ANSWERS_FILE).read_text()


def test_run_judge_refuses_a_backend_that_cannot_judge():
    from llavamed_lite.eval.judge import run_judge

    with pytest.raises(ValueError, match="judge backend 'offline'"):
        run_judge([], [], base_url="http://127.0.0.1:9", backend="offline")


def test_with_small_images_shrinks_each_image_once(rad_test, tmp_path):
    from PIL import Image

    from llavamed_lite.data.formats import RecordError
    from llavamed_lite.eval.vqa import with_small_images

    items = [it for it in rad_test if it.image == rad_test[0].image][:2] + rad_test[2:4]
    small = with_small_images(items, tmp_path / "small", 96)
    assert [s.question_id for s in small] == [it.question_id for it in items]
    assert small[0].image == small[1].image and len(list((tmp_path / "small").iterdir())) == len({it.image for it in items})
    for s, it in zip(small, items):
        with Image.open(s.image) as im, Image.open(it.image) as orig:
            assert max(im.size) == 96 and abs(im.width / im.height - orig.width / orig.height) < 0.05
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    bad = VQAItem("q-bad", str(broken), "?", "yes", "CLOSED")
    with pytest.raises(RecordError, match=r"question q-bad: .*broken.jpg: not a readable image"):
        with_small_images([bad], tmp_path / "small2", 96)


def test_plot_loss_draws_each_history_on_a_log_axis():
    from llavamed_lite.eval.report import plot_loss

    history = [{"step": s, "loss": 1 / s} for s in (1, 10, 100)]
    fig = plot_loss({"full": history, "LoRA": history[:2]}, "stage 2")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and [len(line.get_xdata()) for line in ax.get_lines()] == [3, 2]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["full", "LoRA"]
    assert plot_loss(history).axes[0].get_legend() is None
