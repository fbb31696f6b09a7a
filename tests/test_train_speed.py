"""The tiny preset's speed levers keep what training computes: joined questions train the same first answer,
and bf16 autocast stays within its rounding of the float32 loss."""

import json

import pytest
import torch

from llavamed_lite.data.formats import IMAGE_TOKEN, join_by_image
from llavamed_lite.train.collator import ConversationDataset, LlavaCollator
from llavamed_lite.train.templates import IGNORE_INDEX, image_seq_length, tokenize_record


def question(i: int, image: str, text: str, answer: str) -> dict:
    return {"id": f"q{i}", "image": image, "answer_type": "CLOSED",
            "conversations": [{"from": "human", "value": f"{IMAGE_TOKEN}\n{text}"}, {"from": "gpt", "value": answer}]}


QUESTIONS = [question(0, "images/0.png", "Is there a nodule?", "yes"),
             question(1, "images/1.png", "What organ is shown?", "the lung"),
             question(2, "images/0.png", "What modality is this?", "chest x-ray"),
             question(3, "images/0.png", "Is the heart enlarged?", "no")]


def pairs(records: list[dict]) -> list[tuple[str, str]]:
    out = []
    for record in records:
        turns = record["conversations"]
        out += [(turns[k]["value"].replace(f"{IMAGE_TOKEN}\n", ""), turns[k + 1]["value"])
                for k in range(0, len(turns), 2)]
    return sorted(out)


def test_join_by_image_keeps_every_question_once_with_one_image_token():
    joined = join_by_image(QUESTIONS, seed=0)
    assert len(joined) == 2 and pairs(joined) == pairs(QUESTIONS)
    by_image = {r["image"]: r for r in joined}
    assert len(by_image["images/0.png"]["conversations"]) == 6
    for record in joined:
        text = [t["value"] for t in record["conversations"]]
        assert sum(t.count(IMAGE_TOKEN) for t in text) == 1 and text[0].startswith(IMAGE_TOKEN)
    assert join_by_image(QUESTIONS, seed=0) == joined  # seeded
    orders = {tuple(t["value"] for t in join_by_image(QUESTIONS, seed=s)[0]["conversations"]) for s in range(8)}
    assert len(orders) > 1  # the order of an image's questions is shuffled, not fixed


def test_join_by_image_splits_an_image_with_many_questions_evenly():
    many = [question(i, "images/0.png", f"Question {i}?", "yes") for i in range(23)]
    joined = join_by_image(many, seed=0, max_questions=10)
    assert sorted(len(r["conversations"]) // 2 for r in joined) == [7, 8, 8] and pairs(joined) == pairs(many)


def test_join_by_image_passes_bad_and_multi_turn_records_through():
    bad = {"id": "bad", "image": "images/0.png"}  # no conversation: the dataset's checks name it
    chat = {**question(9, "images/0.png", "Describe it.", "A chest film."), "id": "chat"}
    chat["conversations"] = chat["conversations"] * 2
    chat["conversations"][2]["value"] = "And the heart?"
    joined = join_by_image([bad, chat, *QUESTIONS], seed=0)
    assert bad in joined and chat in joined and len(joined) == 4


def test_a_joined_record_trains_its_first_answer_exactly_as_the_single_record(tiny_llava):
    """Causal attention: the first answer of a joined conversation sees exactly the single record's tokens, so its
    loss is the same; later answers also see the earlier turns (what joining adds)."""
    model, processor = tiny_llava
    n_image = image_seq_length(processor)
    joined = join_by_image(QUESTIONS, seed=0)
    record = next(r for r in joined if r["image"] == "images/0.png")
    first_text = record["conversations"][0]["value"].replace(f"{IMAGE_TOKEN}\n", "")
    single = next(q for q in QUESTIONS if q["conversations"][0]["value"].endswith(first_text))
    a = tokenize_record(single, processor.tokenizer, "mistral_instruct", n_image, 256)
    b = tokenize_record(record, processor.tokenizer, "mistral_instruct", n_image, 256)
    n = len(a["input_ids"])
    assert b["input_ids"][:n] == a["input_ids"] and b["labels"][:n] == a["labels"]
    assert sum(label != IGNORE_INDEX for label in b["labels"]) > sum(label != IGNORE_INDEX for label in a["labels"])
    pixels = torch.rand(1, 3, 64, 64)
    pixels = processor.image_processor(pixels, return_tensors="pt", do_rescale=False)["pixel_values"]
    with torch.no_grad():
        logits_a = model(input_ids=torch.tensor([a["input_ids"]]), pixel_values=pixels).logits[0]
        logits_b = model(input_ids=torch.tensor([b["input_ids"]]), pixel_values=pixels).logits[0, :n]
    torch.testing.assert_close(logits_b, logits_a, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("template", ["plain", "mistral_instruct"])
def test_bf16_autocast_loss_is_within_bfloat16_rounding_of_float32(tiny_llava, tiny_train_data, template):
    """bfloat16 keeps 8 bits of mantissa: each product is rounded by up to 2^-9 relative, and over the tiny model's
    sums and layers the loss moves by about a percent; 3% bounds it with room, while a wrong autocast (say, the loss
    or softmax in bf16, or weights left in bf16) moves it by far more on these random weights."""
    model, processor = tiny_llava
    folder, captions, chats = tiny_train_data
    records = json.loads((captions if template == "plain" else chats).read_text())
    dataset = ConversationDataset(records, processor, template, 256, folder)
    batch = LlavaCollator(processor)([dataset[i] for i in range(4)])
    with torch.no_grad():
        fp32 = model(**batch).loss.item()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(**batch).loss.item()
    assert abs(bf16 - fp32) / fp32 < 0.03, (fp32, bf16)


def test_cached_vision_features_train_the_same_losses_without_running_the_tower(tiny_towers, tiny_llava_dir,
                                                                               tiny_train_data, tmp_path, monkeypatch):
    """The tower is frozen: features computed once before training give the float32 path's losses step for step
    (1e-5: only the batch the tower ran in differs), and during training the tower never runs."""
    import shutil

    from transformers import CLIPVisionModel

    from llavamed_lite.config import load_config
    from llavamed_lite.train.stages import train_stage

    folder, _, chats = tiny_train_data
    calls = []
    tower_forward = CLIPVisionModel.forward
    monkeypatch.setattr(CLIPVisionModel, "forward", lambda self, *a, **k: calls.append(1) or tower_forward(self, *a, **k))
    losses = {}
    for cached in (False, True):
        run = tmp_path / f"run_{cached}"
        shutil.copytree(tiny_llava_dir, run / "stage1" / "model")
        cfg = load_config("tiny", {"model.vision": tiny_towers[0], "model.lm": tiny_towers[1], "stage2.max_steps": 4,
                                   "stage2.batch_size": 4, "stage2.logging_steps": 1, "stage2.save_steps": 100,
                                   "stage2.cache_vision_features": cached})
        calls.clear()
        result = train_stage(cfg, "2", run, records=chats, image_folder=folder, progress=False)
        losses[cached] = [h["loss"] for h in result.history]
        assert len(calls) == (1 if cached else 4)  # cached: one pass over the 12 images before training
    assert len(losses[True]) == 4
    torch.testing.assert_close(torch.tensor(losses[True]), torch.tensor(losses[False]), rtol=1e-5, atol=1e-6)


def packed_questions(processor, records=QUESTIONS, per_row=10):
    from llavamed_lite.train.collator import pack_by_image

    n_image = image_seq_length(processor)
    items = [{**tokenize_record(r, processor.tokenizer, "mistral_instruct", n_image, 256), "image": r["image"],
              "id": r["id"]} for r in records]
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    return items, pack_by_image(items, per_row, image_id, seed=0), image_id, n_image


def test_pack_by_image_keeps_every_record_once_with_the_image_once_per_row(tiny_llava):
    _, processor = tiny_llava
    items, rows, image_id, n_image = packed_questions(processor)
    assert len(rows) == 2 and sorted(len(r["segments"]) for r in rows) == [1, 3]
    for row in rows:
        assert row["input_ids"].count(image_id) == n_image and len(row["input_ids"]) == len(row["labels"])
        assert row["prefix"] + sum(row["segments"]) == len(row["input_ids"])
        start, rebuilt = row["prefix"], []
        for n in row["segments"]:  # the shared start + each segment is one record's ids and labels, whole
            rebuilt.append((row["input_ids"][:row["prefix"]] + row["input_ids"][start:start + n],
                            row["labels"][:row["prefix"]] + row["labels"][start:start + n]))
            start += n
        for ids, labels in rebuilt:
            assert any(ids == i["input_ids"] and labels == i["labels"] for i in items)
    assert sum(len(r["input_ids"]) for r in rows) < sum(len(i["input_ids"]) for i in items)  # the frame once per row
    many = [question(i, "images/0.png", f"Question {i}?", "yes") for i in range(23)]
    _, rows, _, _ = packed_questions(processor, many, per_row=10)
    assert sorted(len(r["segments"]) for r in rows) == [7, 8, 8]


def test_a_record_whose_image_follows_its_question_keeps_a_row_of_its_own(tiny_llava):
    _, processor = tiny_llava
    late = question(7, "images/0.png", "Look:", "yes")
    late["conversations"][0]["value"] = f"Look at this figure: {IMAGE_TOKEN}"
    _, rows, image_id, n_image = packed_questions(processor, [QUESTIONS[0], late])
    assert len(rows) == 2 and all(r["segments"] == [] and r["input_ids"].count(image_id) == n_image for r in rows)


def test_segment_attention_lets_a_segment_see_the_shared_start_and_itself():
    from llavamed_lite.train.collator import segment_attention

    mask, positions = segment_attention([(2, [2, 1]), (3, [])], width=5)
    assert mask.shape == (2, 1, 5, 5) and mask.dtype == torch.bool
    assert mask[0, 0].int().tolist() == [[1, 0, 0, 0, 0],
                                         [1, 1, 0, 0, 0],
                                         [1, 1, 1, 0, 0],
                                         [1, 1, 1, 1, 0],
                                         [1, 1, 0, 0, 1]]
    assert mask[1, 0].int().tolist() == [[1, 0, 0, 0, 0],  # an unpacked row: causal, padding sees only itself
                                         [1, 1, 0, 0, 0],
                                         [1, 1, 1, 0, 0],
                                         [0, 0, 0, 1, 0],
                                         [0, 0, 0, 0, 1]]
    assert positions.tolist() == [[0, 1, 2, 3, 2], [0, 1, 2, 0, 0]]


def test_packed_rows_train_every_answer_exactly_as_alone(tiny_llava):
    """Each answer in a packed row sees only the image, the frame and its own question at the positions it has
    alone, so the batch's loss (the mean over every answer token) and each answer's logits equal the unpacked
    batch's to float rounding."""
    model, processor = tiny_llava
    items, rows, _, _ = packed_questions(processor)
    pixels = torch.rand(1, 3, 64, 64)
    pixels = processor.image_processor(pixels, return_tensors="pt", do_rescale=False)["pixel_values"]

    class OneImage:  # every record's image is this one (the collator's feature-cache hook)
        def batch(self, images):
            return pixels.expand(len(images), -1, -1, -1)

    collate = LlavaCollator(processor, OneImage())
    single, packed = collate(items), collate(rows)
    assert packed["attention_mask"].dim() == 4 and packed["input_ids"].numel() < single["input_ids"].numel()
    with torch.no_grad():
        out_single, out_packed = model(**single), model(**packed)
    torch.testing.assert_close(out_packed.loss, out_single.loss, atol=1e-5, rtol=1e-5)
    row = next(i for i, r in enumerate(rows) if len(r["segments"]) == 3)
    start = rows[row]["prefix"]
    for n in rows[row]["segments"]:
        ids = rows[row]["input_ids"][:rows[row]["prefix"]] + rows[row]["input_ids"][start:start + n]
        k = next(i for i, item in enumerate(items) if item["input_ids"] == ids)
        answer = [j for j, t in enumerate(items[k]["labels"]) if t != IGNORE_INDEX]
        torch.testing.assert_close(out_packed.logits[row, [start + j - rows[row]["prefix"] for j in answer]],
                                   out_single.logits[k, answer], atol=1e-5, rtol=1e-5)
        start += n


@pytest.mark.parametrize("overrides, message", [
    ({"vqa.join_questions": True}, "set one of them"),
    ({"model.attn_implementation": "eager"}, "needs model.attn_implementation='sdpa'"),
])
def test_pack_questions_refuses_what_cannot_carry_its_mask(tiny_llava, tmp_path, overrides, message):
    from llavamed_lite.config import load_config
    from llavamed_lite.train.stages import stage_dataset

    _, processor = tiny_llava
    cfg = load_config("tiny", {"vqa.pack_questions": 4, **overrides})
    records = tmp_path / "vqa.json"
    records.write_text(json.dumps(QUESTIONS))
    with pytest.raises(ValueError, match=message):
        stage_dataset(cfg, cfg.vqa, "vqa", records, tmp_path, processor, tmp_path)


def test_a_packed_vqa_stage_trains_every_question_and_counts_them(tiny_towers, tiny_llava_dir, tiny_train_data,
                                                                    tmp_path):
    """Through train_stage, as the tiny preset runs it: the summary counts the questions and the rows they filled."""
    import shutil

    from llavamed_lite.config import load_config
    from llavamed_lite.train.stages import train_stage

    folder = tiny_train_data[0]
    vqa = tmp_path / "vqa.json"
    vqa.write_text(json.dumps([question(i, f"images/{i % 3}.png", f"Question {i}?", "yes") for i in range(10)]))
    shutil.copytree(tiny_llava_dir, tmp_path / "stage2" / "model")
    cfg = load_config("tiny", {"model.vision": tiny_towers[0], "model.lm": tiny_towers[1], "vqa.max_steps": 2,
                               "vqa.batch_size": 2, "vqa.save_steps": 100, "vqa.heldout_every": 0})
    assert cfg.vqa.pack_questions == 4  # the preset's
    result = train_stage(cfg, "vqa", tmp_path, records=vqa, image_folder=folder, progress=False)
    summary = json.loads((tmp_path / "vqa" / "summary.json").read_text())
    assert result.n_records == summary["records"] == len(json.loads(vqa.read_text()))
    assert summary["rows"] < summary["records"] and result.steps == 2 and result.final_loss > 0
