"""Training stages on the tiny random towers: what trains, what is saved, LoRA/QLoRA, resume, bad input."""

import json
import shutil

import pytest
import torch
from PIL import Image
from towers import StopAt
from transformers import AutoModelForImageTextToText

from llavamed_lite.cli import main as cli_main
from llavamed_lite.config import load_config
from llavamed_lite.data.formats import RecordError
from llavamed_lite.train.collator import ConversationDataset, LlavaCollator
from llavamed_lite.train.stages import LlavaTrainer, train_stage, training_arguments


def tiny_cfg(tiny_towers, **overrides):
    values = {"model.vision": tiny_towers[0], "model.lm": tiny_towers[1]}
    for stage in ("stage1", "stage2", "vqa"):
        values.update({f"{stage}.max_steps": 3, f"{stage}.batch_size": 4, f"{stage}.logging_steps": 1,
                       f"{stage}.save_steps": 100})
    values.update(overrides)
    return load_config("tiny", values)


def weights(model_dir):
    """A saved model's state dict as plain transformers loads it."""
    return AutoModelForImageTextToText.from_pretrained(model_dir).state_dict()


def changed(before, after, part):
    keys = [k for k in before if part in k]
    assert keys, part
    return {k for k in keys if not torch.equal(before[k], after[k])}


@pytest.fixture(scope="module")
def stage1_run(tiny_towers, tiny_train_data, tmp_path_factory):
    folder, captions, _ = tiny_train_data
    run = tmp_path_factory.mktemp("run")
    cfg = tiny_cfg(tiny_towers)
    result = train_stage(cfg, "1", run, records=captions, image_folder=folder, progress=False)
    return run, result


def test_quiet_without_progress(tiny_towers, tiny_train_data, tmp_path, capsys):
    """progress=False (notebooks, tests) prints no log line per logging step: the losses go to loss_history.json."""
    folder, captions, _ = tiny_train_data
    cfg = tiny_cfg(tiny_towers)
    result = train_stage(cfg, "1", tmp_path / "run", records=captions, image_folder=folder, progress=False)
    assert "'loss'" not in capsys.readouterr().out
    assert len(result.history) == 3  # one per step, logging_steps=1


def test_progress_is_one_text_bar_without_a_line_per_logged_loss(tiny_towers, tiny_train_data, tmp_path, capsys,
                                                                  monkeypatch):
    """progress=True shows the step bar and no logged-loss lines; where the Trainer would pick its notebook callback
    (an HTML table with a row per logged loss), that one never runs."""
    import transformers.trainer
    from transformers.utils.notebook import NotebookProgressCallback

    folder, captions, _ = tiny_train_data
    tables = []
    monkeypatch.setattr(transformers.trainer, "DEFAULT_PROGRESS_CALLBACK", NotebookProgressCallback)
    monkeypatch.setattr(NotebookProgressCallback, "on_train_begin", lambda *a, **k: tables.append(1))
    result = train_stage(tiny_cfg(tiny_towers), "1", tmp_path / "run", records=captions, image_folder=folder,
                         progress=True)
    out = capsys.readouterr()
    assert "3/3" in out.err and "'loss'" not in out.out + out.err and result.steps == 3 and not tables


def fresh_run(stage1_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(stage1_run[0] / "stage1", run / "stage1")
    return run


def test_stage1_trains_only_the_projector(stage1_run, tiny_towers, tiny_llava_dir):
    run, result = stage1_run
    after = weights(run / "stage1" / "model")
    before = weights(tiny_llava_dir)  # the same towers, composed without training
    assert before.keys() == after.keys()
    assert not changed(before, after, "vision_tower")
    assert not changed(before, after, "language_model") and not changed(before, after, "lm_head")
    assert len(after) > 0 and result.steps == 3 and len(result.history) == 3
    rows = {r["component"]: r for r in result.parameter_table}
    assert rows["multi_modal_projector"]["trainable"] == rows["total"]["trainable"] > 0
    summary = json.loads((run / "stage1" / "summary.json").read_text())
    assert summary["steps"] == 3 and json.loads((run / "stage1" / "loss_history.json").read_text())
    AutoModelForImageTextToText.from_pretrained(run / "stage1" / "model")  # plain transformers loads it


def test_stage1_projector_moves_from_its_initialisation(stage1_run, tiny_towers, tmp_path):
    import transformers

    from llavamed_lite.model.compose import compose_from_config

    cfg = tiny_cfg(tiny_towers)
    transformers.set_seed(cfg.seed)
    start, _ = compose_from_config(cfg.model)  # what train_stage started from (same seed)
    before = start.state_dict()
    after = weights(stage1_run[0] / "stage1" / "model")
    assert changed(before, after, "multi_modal_projector")


def test_stage2_full_never_touches_the_vision_tower(stage1_run, tiny_towers, tiny_train_data, tmp_path):
    folder, _, chats = tiny_train_data
    run = fresh_run(stage1_run, tmp_path)
    result = train_stage(tiny_cfg(tiny_towers), "2", run, records=chats, image_folder=folder, progress=False)
    before, after = weights(run / "stage1" / "model"), weights(run / "stage2" / "model")
    assert not changed(before, after, "vision_tower")
    assert changed(before, after, "language_model") and changed(before, after, "multi_modal_projector")
    assert result.adapter_dir is None and result.final_loss == result.history[-1]["loss"]


def test_projector_gets_its_own_learning_rate(stage1_run, tiny_towers, tiny_train_data, tmp_path):
    from llavamed_lite.model.freeze import freeze_for_stage
    from llavamed_lite.train.stages import load_saved

    cfg = tiny_cfg(tiny_towers, **{"stage2.lr": 1e-4, "stage2.projector_lr": 2e-3})
    model, processor = load_saved(stage1_run[0] / "stage1" / "model", cfg, False)
    freeze_for_stage(model, "2")
    folder, _, chats = tiny_train_data
    dataset = ConversationDataset(json.loads(chats.read_text()), processor, "mistral_instruct", 128, folder)
    trainer = LlavaTrainer(model=model, args=training_arguments(cfg.stage2, cfg, tmp_path, False), train_dataset=dataset,
                           data_collator=LlavaCollator(processor), projector_lr=2e-3)
    groups = trainer.create_optimizer().param_groups
    projector = {id(p) for p in model.model.multi_modal_projector.parameters()}
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in groups}
    assert by_lr[2e-3] == projector and not by_lr[1e-4] & projector


def test_lora_wraps_the_language_model_only_and_exports_a_merged_model(stage1_run, tiny_towers, tiny_train_data, tmp_path):
    folder, _, chats = tiny_train_data
    run = fresh_run(stage1_run, tmp_path)
    cfg = tiny_cfg(tiny_towers, **{"stage2.lora": True, "stage2.lora_r": 4, "stage2.lora_alpha": 8})
    result = train_stage(cfg, "2", run, records=chats, image_folder=folder, progress=False)
    adapter = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert "language_model" in adapter["target_modules"] and adapter["modules_to_save"] == ["multi_modal_projector"]
    rows = {r["component"]: r for r in result.parameter_table}
    assert rows["vision_tower"]["trainable"] == 0 and rows["lm_head"]["trainable"] == 0
    assert 0 < rows["language_model"]["trainable"] < rows["language_model"]["total"] / 2
    before, after = weights(run / "stage1" / "model"), weights(run / "stage2" / "model")
    assert before.keys() == after.keys()  # merged: no lora_ keys, loads without peft
    assert not changed(before, after, "vision_tower")
    assert changed(before, after, "language_model") and changed(before, after, "multi_modal_projector")


def test_qlora_4bit_on_cpu_wraps_the_language_model_only(stage1_run, tiny_towers):
    from llavamed_lite.model.lora import add_lora
    from llavamed_lite.model.freeze import freeze_for_stage
    from llavamed_lite.train.stages import load_saved

    cfg = tiny_cfg(tiny_towers, **{"model.load_in_4bit": True})
    model, processor = load_saved(stage1_run[0] / "stage1" / "model", cfg, True)
    model = model.to("cpu")
    quantized = {n for n, p in model.named_parameters() if type(p).__name__ == "Params4bit"}
    assert quantized and all("language_model" in n for n in quantized)
    freeze_for_stage(model, "1")
    peft_model = add_lora(model, 4, 8, 0.0)
    wrapped = [n for n, m in peft_model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)]
    assert wrapped and all("language_model" in n for n in wrapped)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert all("lora_" in n or "multi_modal_projector" in n for n in trainable)
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    ids = torch.tensor([[1] + [image_id] * 16 + [5, 6, 7]])
    loss = peft_model(input_ids=ids, pixel_values=torch.randn(1, 3, 32, 32), labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for n, p in peft_model.named_parameters() if p.requires_grad and "lora_A" in n)



def test_resume_ends_like_an_uninterrupted_run(stage1_run, tiny_towers, tiny_train_data, tmp_path):
    folder, _, chats = tiny_train_data
    cfg = tiny_cfg(tiny_towers, **{"stage2.max_steps": 6, "stage2.save_steps": 3})
    whole = train_stage(cfg, "2", fresh_run(stage1_run, tmp_path / "a"), records=chats, image_folder=folder,
                        progress=False)
    run = fresh_run(stage1_run, tmp_path / "b")
    cut = train_stage(cfg, "2", run, records=chats, image_folder=folder, progress=False, callbacks=[StopAt(3)])
    assert cut.steps == 3
    resumed = train_stage(cfg, "2", run, records=chats, image_folder=folder, progress=False, resume=True)
    assert resumed.steps == 6
    assert resumed.final_loss == pytest.approx(whole.final_loss, rel=1e-5)
    a, b = weights(whole.model_dir), weights(resumed.model_dir)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_missing_and_unreadable_images_are_named_or_skipped(tiny_llava, tiny_train_data, tmp_path):
    folder, _, chats = tiny_train_data
    processor = tiny_llava[1]
    records = json.loads(chats.read_text())
    (tmp_path / "images").mkdir()
    for r in records:
        shutil.copy(folder / r["image"], tmp_path / r["image"])
    records[2]["image"] = "images/missing.png"
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png")
    records[5]["image"] = "images/broken.png"
    with pytest.raises(RecordError, match=r"record 2 \(id 'c2'\).*missing.png"):
        ConversationDataset(records, processor, "mistral_instruct", 128, tmp_path, source="chats.json")
    dataset = ConversationDataset(records, processor, "mistral_instruct", 128, tmp_path, skip_bad=True)
    assert len(dataset) == 10 and len(dataset.errors) == 2
    assert "c2" in dataset.errors[0] and "c5" in dataset.errors[1]
    checked = ConversationDataset(records[6:], processor, "mistral_instruct", 128, tmp_path)
    (tmp_path / records[7]["image"]).write_bytes(b"broken after the check")  # the collator still names the file
    with pytest.raises(RecordError, match="record 'c7'.*7.png"):
        LlavaCollator(processor)([checked[i] for i in range(len(checked))])


def test_bad_conversations_are_named_or_skipped(tiny_llava, tiny_train_data):
    folder, _, chats = tiny_train_data
    records = json.loads(chats.read_text())
    records[0]["conversations"] = []
    records[1]["conversations"][0]["value"] = "no image here"
    records[2]["conversations"] = records[2]["conversations"][::-1]
    with pytest.raises(RecordError, match=r"chats.json: record 0 \(id 'c0'\).*empty"):
        ConversationDataset(records, tiny_llava[1], "mistral_instruct", 128, folder, source="chats.json")
    dataset = ConversationDataset(records, tiny_llava[1], "mistral_instruct", 128, folder, skip_bad=True)
    assert len(dataset) == 9 and len(dataset.errors) == 3


def test_collator_pads_right_and_batches_images(tiny_llava, tiny_train_data):
    folder, _, chats = tiny_train_data
    processor = tiny_llava[1]
    dataset = ConversationDataset(json.loads(chats.read_text()), processor, "mistral_instruct", 128, folder)
    batch = LlavaCollator(processor)([dataset[0], dataset[1]])
    lengths = [len(dataset[0]["input_ids"]), len(dataset[1]["input_ids"])]
    assert batch["input_ids"].shape == (2, max(lengths)) and batch["pixel_values"].shape == (2, 3, 32, 32)
    short = lengths.index(min(lengths))
    assert batch["attention_mask"][short, :min(lengths)].all() and not batch["attention_mask"][short, min(lengths):].any()
    assert (batch["labels"][short, min(lengths):] == -100).all()


def test_cli_trains_a_stage_in_process(tiny_towers, tiny_train_data, tmp_path, capsys):
    folder, captions, _ = tiny_train_data
    code = cli_main(["train", "--stage", "1", "--run-dir", str(tmp_path), "--records", str(captions),
                     "--image-folder", str(folder), "--no-progress", "--set", f"model.vision={tiny_towers[0]}",
                     "--set", f"model.lm={tiny_towers[1]}", "--set", "stage1.max_steps=2", "--set", "stage1.batch_size=4"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and (tmp_path / "stage1" / "model" / "config.json").exists()
    assert summary["final_loss"] > 0  # logged at the last step although logging_steps (10) > max_steps


def test_samples_caption_and_chat(tiny_llava, tiny_train_data):
    from llavamed_lite.train.samples import caption_domain_accuracy, generate_captions, sample_chat

    model, processor = tiny_llava
    folder = tiny_train_data[0]
    paths = [folder / "images" / f"{i}.png" for i in range(3)]
    captions = generate_captions(model, processor, paths, batch_size=2, max_new_tokens=5)
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
    turns = sample_chat(model, processor, paths[0], ["What is shown?", "Which side?"], max_new_tokens=4)
    assert [q for q, _ in turns] == ["What is shown?", "Which side?"]
    assert caption_domain_accuracy(["Chest radiograph showing a nodule.", "Axial CT of the abdomen."],
                                   ["chest_xray", "mri"]) == 0.5
    with pytest.raises(ValueError, match="as many"):
        caption_domain_accuracy(["x"], [])


@pytest.mark.slow
def test_stage2_on_a_fresh_run_dir_builds_its_inputs_and_stage1(tiny_towers, tmp_path):
    """`llavamed-lite train --stage 2 --scale tiny --run-dir R` on an empty R: the tiny world, the alignment and
    instruct records and stage 1 are made on the way."""
    cfg = tiny_cfg(tiny_towers, **{"data.n_train_figures": 10, "data.n_heldout_figures": 2, "data.image_size": 64,
                                   "stage1.max_steps": 2, "stage2.max_steps": 2})
    result = train_stage(cfg, "2", tmp_path, progress=False)
    for path in ("data/alignment_train.json", "instruct/instruct_train.json", "stage1/model/config.json",
                 "stage2/model/config.json", "stage2/loss_history.json"):
        assert (tmp_path / path).exists(), path
    assert result.n_records == 10
    vqa = train_stage(tiny_cfg(tiny_towers, **{"data.n_train_figures": 10, "data.n_heldout_figures": 2,
                                               "data.image_size": 64}), "vqa", tmp_path, progress=False)
    assert vqa.steps == 3 and (tmp_path / "vqa" / "model" / "config.json").exists()


def test_length_grouped_sampling(tiny_llava, tiny_train_data, tiny_towers, tmp_path):
    folder, _, chats = tiny_train_data
    model, processor = tiny_llava
    cfg = tiny_cfg(tiny_towers, **{"stage2.group_by_length": True})
    dataset = ConversationDataset(json.loads(chats.read_text()), processor, "mistral_instruct", 128, folder)
    trainer = LlavaTrainer(model=model, args=training_arguments(cfg.stage2, cfg, tmp_path, False), train_dataset=dataset,
                           data_collator=LlavaCollator(processor))
    assert type(trainer._get_train_sampler()).__name__ == "LengthGroupedSampler"
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 4 and batch["pixel_values"].shape[0] == 4
