"""The held-out metric over training steps (train/heldout.py): its points, its file, that it is the paper metric
`evaluate` gives, that the model goes back to training, and its plot."""

import dataclasses
import json
import shutil

import matplotlib
import pytest
import torch
from transformers import TrainerCallback

import llavamed_lite.train.heldout as heldout_module
from llavamed_lite.config import QUICK_EVAL, apply_quick, load_config
from llavamed_lite.eval.evaluate import evaluate
from llavamed_lite.eval.report import plot_heldout
from llavamed_lite.train.features import vision_tower
from llavamed_lite.train.heldout import HELDOUT_FILE, heldout_items
from llavamed_lite.train.stages import heldout_curve, result_from_summary, train_stage

matplotlib.use("Agg")
N_QUESTIONS = 4  # the held-out file has 6; heldout_questions takes the first 4


def write_heldout(run, folder, answers=None):
    """run/data/vqa_heldout.json, the tiny world's held-out file: closed and open questions in turn."""
    rows = []
    for i in range(6):
        closed = i % 2 == 0
        question = "Is there a nodule?" if closed else "What does the image show?"
        answer = answers[i] if answers else ("yes" if closed else "chest radiograph")
        rows.append({"id": f"h{i}", "image": str(folder / f"images/{i}.png"), "question_type": "presence",
                     "answer_type": "CLOSED" if closed else "OPEN",
                     "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                                       {"from": "gpt", "value": answer}]})
    (run / "data").mkdir(parents=True, exist_ok=True)
    (run / "data" / "vqa_heldout.json").write_text(json.dumps(rows))


class ModeAfterMeasuring(TrainerCallback):
    """Runs after the held-out callback: the model's mode, and whether the tower reads cached features."""

    def __init__(self):
        self.seen = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.seen.append((model.training, "forward" in vision_tower(model).__dict__))


def train(tiny_towers, tiny_llava_dir, folder, chats, run, monkeypatch, **overrides):
    """A 4-step stage 2 (cached features on, as the tiny preset) measuring every 2 steps; returns (result, what
    answer_questions saw: (model.training, grad enabled) per call, the mode-after-measuring callback)."""
    shutil.copytree(tiny_llava_dir, run / "stage1" / "model")
    values = {"model.vision": tiny_towers[0], "model.lm": tiny_towers[1], "stage2.max_steps": 4,
              "stage2.batch_size": 4, "stage2.logging_steps": 1, "stage2.save_steps": 100,
              "stage2.heldout_every": 2, "stage2.heldout_questions": N_QUESTIONS, **overrides}
    cfg = load_config("tiny", values)
    assert cfg.stage2.cache_vision_features
    calls, answer = [], heldout_module.answer_questions
    monkeypatch.setattr(heldout_module, "answer_questions", lambda model, *a, **k: calls.append(
        (model.training, torch.is_grad_enabled())) or answer(model, *a, **k))
    spy = ModeAfterMeasuring()
    result = train_stage(cfg, "2", run, records=chats, image_folder=folder, callbacks=[spy], progress=False)
    return result, calls, spy


@pytest.fixture(scope="module")
def measured_run(tiny_towers, tiny_llava_dir, tiny_train_data, tmp_path_factory):
    folder, _, chats = tiny_train_data
    run = tmp_path_factory.mktemp("heldout_run")
    write_heldout(run, folder)
    with pytest.MonkeyPatch.context() as monkeypatch:
        return run, *train(tiny_towers, tiny_llava_dir, folder, chats, run, monkeypatch)


def test_curve_at_start_every_n_steps_and_end_in_eval_mode_and_back(measured_run):
    run, result, calls, spy = measured_run
    assert [p["step"] for p in result.heldout] == [0, 2, 4]
    assert all(set(p) == {"step", "closed", "open", "seconds"} and p["seconds"] >= 0 for p in result.heldout)
    assert json.loads((run / "stage2" / HELDOUT_FILE).read_text()) == result.heldout
    assert result_from_summary(run / "stage2").heldout == result.heldout  # a finished or launched stage too
    assert calls == [(False, False)] * 3  # eval mode, no gradients, once per point
    assert spy.seen == [(True, True)] * 4  # training mode again at every step, cached features read throughout


def test_curve_is_the_metric_evaluate_gives_for_the_same_questions(measured_run, tiny_towers, tiny_llava_dir,
                                                                   tiny_train_data, tmp_path, monkeypatch):
    """Answers made from the trained model's own predictions for half the questions: the last point is the paper
    metric `evaluate` computes on the saved model (0.5 closed), not a number of its own."""
    folder, _, chats = tiny_train_data
    first, result = measured_run[0], measured_run[1]
    scores = evaluate(result.model_dir, "tiny", tmp_path / "eval1", source=first / "data", limit=N_QUESTIONS,
                      progress=False)
    texts = [json.loads(line)["text"] for line in (tmp_path / "eval1" / "answers.jsonl").read_text().splitlines()]
    assert len(texts) == N_QUESTIONS
    run = tmp_path / "run"
    write_heldout(run, folder, answers=[texts[0], texts[1], "zzzq", "zzzq", "yes", "no"])
    again, _, _ = train(tiny_towers, tiny_llava_dir, folder, chats, run, monkeypatch)
    scores = evaluate(again.model_dir, "tiny", tmp_path / "eval2", source=run / "data", limit=N_QUESTIONS,
                      progress=False)
    assert scores["n_closed"] == scores["n_open"] == 2 and scores["closed_accuracy"] == 0.5
    last = {k: v for k, v in again.heldout[-1].items() if k != "seconds"}
    assert last == {"step": 4, "closed": scores["closed_accuracy"], "open": scores["open_recall"]}


def test_off_writes_nothing(tiny_towers, tiny_llava_dir, tiny_train_data, tmp_path, monkeypatch):
    folder, _, chats = tiny_train_data
    write_heldout(tmp_path, folder)
    result, calls, _ = train(tiny_towers, tiny_llava_dir, folder, chats, tmp_path, monkeypatch,
                             **{"stage2.heldout_every": 0, "stage2.max_steps": 1})
    assert result.heldout == [] and calls == [] and not (tmp_path / "stage2" / HELDOUT_FILE).exists()


def test_lora_model_is_measured_too(tiny_towers, tiny_llava_dir, tiny_train_data, tmp_path, monkeypatch):
    folder, _, chats = tiny_train_data
    write_heldout(tmp_path, folder)
    result, calls, spy = train(tiny_towers, tiny_llava_dir, folder, chats, tmp_path, monkeypatch,
                               **{"stage2.lora": True, "stage2.lora_r": 4, "stage2.lora_alpha": 8,
                                  "stage2.max_steps": 2})
    assert [p["step"] for p in result.heldout] == [0, 2] and calls == [(False, False)] * 2
    assert spy.seen == [(True, True)] * 2


def test_without_questions_or_under_fsdp_no_curve_and_a_note(tmp_path, capsys):
    """The tiny preset measures by default: a stage trained on records given by hand, with no tiny world, trains on
    without a curve and says why; asked for directly, the questions' absence is an error naming the file."""
    cfg = load_config("tiny", {"stage2.heldout_every": 2})
    with pytest.raises(FileNotFoundError, match="vqa_heldout.json.*heldout_every"):
        heldout_items(cfg, tmp_path, "tiny", 5)
    assert heldout_curve(cfg, cfg.stage2, "2", tmp_path, "tiny", None, tmp_path, fsdp=False) is None
    assert "no held-out curve: " in capsys.readouterr().out
    assert heldout_curve(cfg, cfg.stage2, "2", tmp_path, "tiny", None, tmp_path, fsdp=True) is None
    assert "FSDP" in capsys.readouterr().out
    assert heldout_curve(cfg, dataclasses.replace(cfg.stage1, heldout_every=2), "1", tmp_path, "tiny", None,
                         tmp_path, fsdp=False) is None  # stage 1 learns captions: no VQA curve


def test_presets_and_quick_mode():
    tiny = load_config("tiny")
    assert (tiny.stage1.heldout_every, tiny.stage2.heldout_every, tiny.vqa.heldout_every) == (0, 100, 500)
    for scale in ("lora", "full"):
        cfg = load_config(scale)
        assert cfg.stage2.heldout_every == cfg.vqa.heldout_every == 0
    quick = apply_quick(load_config("tiny"))
    assert quick.stage1.heldout_every == 0
    assert quick.stage2.heldout_every == quick.stage2.max_steps // 2 == quick.vqa.heldout_every
    assert quick.stage2.heldout_questions == QUICK_EVAL["tiny"]
    with pytest.raises(ValueError, match="stage2.heldout_every"):
        load_config("tiny", {"stage2.heldout_every": -1})
    with pytest.raises(ValueError, match="vqa.heldout_questions"):
        load_config("tiny", {"vqa.heldout_questions": 0})


def test_plot_heldout_one_run_and_consecutive_runs():
    stage2 = [{"step": 0, "closed": 0.5, "open": 0.2}, {"step": 100, "closed": 0.8, "open": None}]
    vqa = [{"step": 0, "closed": 0.8, "open": 0.6}, {"step": 50, "closed": 0.9, "open": 0.9}]
    fig = plot_heldout(stage2, "stage 2")
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and ax.get_ylim() == (0, 1) and ax.get_title() == "stage 2"
    assert all(float(t).is_integer() for t in ax.get_xticks())
    fig = plot_heldout({"stage 2": stage2, "VQA": vqa}, consecutive=True)
    ax = fig.axes[0]
    assert list(ax.lines[2].get_xdata()) == [100, 150]  # VQA starts where stage 2 ended
    fig.canvas.draw()
    legend, axes = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= axes.x1  # beside the axes, over no line
