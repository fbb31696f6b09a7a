"""VQA loaders: the real VQA-RAD and SLAKE files in data_samples/, PathVQA parquet rows we write, LLaVA-Med's
VQA JSON, and malformed input of every kind (each error names the file and the row)."""

import io
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from llavamed_lite.data.formats import RecordError
from llavamed_lite.eval.vqa import (
    CLOSED_SUFFIX, VQAItem, load_benchmark, load_llava_vqa, load_pathvqa, load_slake, load_vqa_rad,
    load_vqa_rad_original, to_llava_record, with_closed_suffix, write_llava_vqa,
)


# ---- real files ----------------------------------------------------------------------------------------------
def test_vqa_rad_split_matches_llava_med():
    test, train = load_vqa_rad("test"), load_vqa_rad("train")
    assert len(test) == 451 and Counter(it.answer_type for it in test) == {"CLOSED": 272, "OPEN": 179}
    assert len(train) == 1797  # without the templated "frame" rows
    assert all(it.metadata["phrase_type"] != "frame" for it in train)
    assert Counter(it.answer_type for it in train) == {"CLOSED": 1027, "OPEN": 770}  # two "CLOSED " stripped
    assert len({it.question_id for it in test + train}) == 451 + 1797
    assert all(Path(it.image).is_file() for it in test)
    assert all(isinstance(it.answer, str) for it in train)  # a few answers are JSON numbers in the file
    first = test[0]
    assert first.question == "Is there evidence of an aortic aneurysm?" and first.answer == "yes"
    assert first.question_type == "PRES" and first.metadata["image_organ"] == "CHEST"


def test_vqa_rad_original_release_has_the_same_test_questions():
    test = load_vqa_rad_original("test")
    assert len(test) == 451 and len(load_vqa_rad_original("train")) == 1797
    triples = Counter((Path(it.image).name, it.question, it.answer.lower()) for it in test)
    assert triples == Counter((Path(it.image).name, it.question, it.answer.lower()) for it in load_vqa_rad("test"))


def test_slake_english_test_split():
    test = load_slake("test")
    assert len(test) == 1061 and Counter(it.answer_type for it in test) == {"OPEN": 645, "CLOSED": 416}
    assert len({Path(it.image).parent.name for it in test}) == 96
    assert all(Path(it.image).is_file() for it in test)
    assert test[0].question_type == "Modality" and test[0].metadata["modality"] == "CT"


def test_closed_suffix_goes_on_closed_questions_only():
    items = load_vqa_rad("test", closed_suffix=True)
    assert all(it.question.endswith(CLOSED_SUFFIX) == (it.answer_type == "CLOSED") for it in items)
    assert with_closed_suffix(items) == items  # never twice
    assert load_benchmark("vqa-rad", "test", closed_suffix=True) == items


def test_unknown_names_and_splits():
    with pytest.raises(ValueError, match="unknown benchmark 'vqa'"):
        load_benchmark("vqa")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        load_vqa_rad("dev")
    with pytest.raises(ValueError, match="not shipped"):
        load_benchmark("pathvqa")


# ---- LLaVA-Med VQA records -----------------------------------------------------------------------------------
def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), "gray").save(path)
    return path


def test_llava_vqa_round_trip(tmp_path):
    _image(tmp_path / "imgs" / "a.png")
    items = [VQAItem("q1", str(tmp_path / "imgs" / "a.png"), "Is there a nodule?", "yes", "CLOSED", "finding",
                     {"domain": "chest_xray"}),
             VQAItem("q2", str(tmp_path / "imgs" / "a.png"), "Which lung?", "left", "OPEN", "side")]
    path = write_llava_vqa(tmp_path / "vqa.json", items, image_folder=tmp_path, closed_suffix=True)
    records = json.loads(path.read_text())
    assert records[0]["image"] == "imgs/a.png" and records[0]["domain"] == "chest_xray"
    assert records[0]["conversations"][0]["value"] == "<image>\nIs there a nodule?" + CLOSED_SUFFIX
    assert set(records[1]) == {"id", "image", "answer_type", "question_type", "conversations"}
    assert load_llava_vqa(path) == items  # the suffix is stripped again on reading
    assert load_llava_vqa(path, closed_suffix=True)[0].question.endswith(CLOSED_SUFFIX)
    assert load_benchmark("tiny", "test", source=path) == items


def test_tiny_benchmark_reads_the_tiny_world_folder(tmp_path):
    _image(tmp_path / "heldout" / "0.png")
    record = {"id": "h0", "image": "heldout/0.png", "answer_type": "OPEN", "question_type": "side",
              "conversations": [{"from": "human", "value": "Which side?\n<image>"}, {"from": "gpt", "value": "right"}]}
    (tmp_path / "vqa_heldout.json").write_text(json.dumps([record]))
    (item,) = load_benchmark("tiny", "test", source=tmp_path)
    assert item.question == "Which side?" and item.answer == "right" and item.image == str(tmp_path / "heldout/0.png")


def test_to_llava_record_refuses_images_outside_the_folder(tmp_path):
    item = VQAItem("q", "/elsewhere/a.png", "q?", "a", "OPEN")
    with pytest.raises(ValueError, match="not under"):
        to_llava_record(item, image_folder=tmp_path)


GOOD = {"id": "q1", "image": "a.png", "answer_type": "CLOSED", "question_type": "x",
        "conversations": [{"from": "human", "value": "<image>\nIs it?"}, {"from": "gpt", "value": "yes"}]}


@pytest.mark.parametrize("change, message", [
    ({"image": "missing.png"}, r"row 1 \(id 'q1'\): image .*missing.png.* does not exist"),
    ({"answer_type": "MAYBE"}, r"row 1 \(id 'q1'\): unknown answer_type 'MAYBE'"),
    ({"answer_type": None}, r"row 1 \(id 'q1'\): unknown answer_type None"),
    ({"image": 3}, r"row 1 \(id 'q1'\): field 'image' must be a non-empty string"),
    ({"id": None}, r"row 1: field 'id' must be a string or a number"),
    ({"conversations": "Is it?"}, r"row 1 \(id 'q1'\): the conversation is empty"),
    ({"conversations": [{"from": "human", "value": "Is it?"}, {"from": "gpt", "value": "yes"}]},
     r"row 1 \(id 'q1'\): expected exactly one <image>"),
    ({"conversations": None}, r"row 1 \(id 'q1'\): missing field 'conversations'"),
])
def test_llava_vqa_malformed_rows(tmp_path, change, message):
    _image(tmp_path / "a.png")
    bad = {**GOOD, **change}
    if change.get("conversations", "") is None:
        del bad["conversations"]
    path = tmp_path / "vqa.json"
    path.write_text(json.dumps([GOOD, bad]))
    with pytest.raises(RecordError, match=message) as err:
        load_llava_vqa(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("data, message", [
    (b'[{"id": "q1", "image": ', "invalid JSON at line 1"),  # truncated
    (b"not json", "invalid JSON"),
    (b'{"id": "q1"}', "expected a JSON list"),
    (b'["just a string"]', "row 0: expected an object, got str"),
    (b"\xff\xfe[", "not UTF-8"),
])
def test_llava_vqa_bad_files(tmp_path, data, message):
    path = tmp_path / "vqa.json"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=message) as err:
        load_llava_vqa(path)
    assert str(path) in str(err.value)


def test_llava_vqa_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such"):
        load_llava_vqa(tmp_path / "absent.json")


# ---- VQA-RAD and SLAKE layouts, malformed --------------------------------------------------------------------
def _vqa_rad_copy(tmp_path: Path, rows: list) -> Path:
    _image(tmp_path / "data_RAD" / "images" / "synpic1.jpg")
    (tmp_path / "data_RAD" / "testset.json").write_text(json.dumps(rows))
    return tmp_path


RAD_ROW = {"qid": 7, "image_name": "synpic1.jpg", "image_organ": "HEAD", "answer": "Yes", "answer_type": "CLOSED ",
           "question_type": "PRES", "question": "Is there a mass?", "phrase_type": "freeform"}


@pytest.mark.parametrize("change, message", [
    ({"image_name": "synpic2.jpg"}, r"testset.json: row 1 \(qid 7\): image .*synpic2.jpg.* does not exist"),
    ({"answer_type": "BOTH"}, r"testset.json: row 1 \(qid 7\): unknown answer_type 'BOTH'"),
    ({"question": ["Is", "it"]}, r"testset.json: row 1 \(qid 7\): field 'question' must be a non-empty string"),
    ({"answer": None}, r"testset.json: row 1 \(qid 7\): field 'answer' must be a non-empty string"),
    ({"answer": ""}, r"field 'answer' must be a non-empty string"),
])
def test_vqa_rad_malformed_rows(tmp_path, change, message):
    root = _vqa_rad_copy(tmp_path, [RAD_ROW, {**RAD_ROW, **change}])
    with pytest.raises(RecordError, match=message):
        load_vqa_rad("test", root)


def test_vqa_rad_row_fixes_and_missing_field(tmp_path):
    root = _vqa_rad_copy(tmp_path, [RAD_ROW, {**RAD_ROW, "qid": 8, "answer": 4, "answer_type": "open"},
                                    {**RAD_ROW, "qid": 9, "phrase_type": "frame", "answer_type": "junk"}])
    items = load_vqa_rad("test", root)
    assert [(it.answer, it.answer_type) for it in items] == [("Yes", "CLOSED"), ("4", "OPEN")]  # frame row skipped
    row = dict(RAD_ROW)
    del row["image_name"]
    root = _vqa_rad_copy(tmp_path, [row])
    with pytest.raises(RecordError, match=r"row 0 \(qid 7\): missing field 'image_name'"):
        load_vqa_rad("test", root)
    (root / "data_RAD" / "testset.json").write_text(json.dumps([RAD_ROW])[:-7])
    with pytest.raises(ValueError, match=r"testset.json: invalid JSON"):
        load_vqa_rad("test", root)


def test_slake_malformed_rows(tmp_path):
    _image(tmp_path / "imgs" / "xmlab1" / "source.jpg")
    row = {"qid": 1, "img_name": "xmlab1/source.jpg", "question": "What organ?", "answer": "Lung", "q_lang": "en",
           "answer_type": "OPEN", "content_type": "Organ"}
    zh = {**row, "qid": 2, "q_lang": "zh", "answer_type": "whatever"}
    (tmp_path / "test.json").write_text(json.dumps([row, zh]))
    assert [it.question_id for it in load_slake("test", tmp_path)] == ["slake-1"]  # Chinese rows skipped
    (tmp_path / "test.json").write_text(json.dumps([row, {**row, "qid": 3, "img_name": "xmlab9/source.jpg"}]))
    with pytest.raises(RecordError, match=r"test.json: row 1 \(qid 3\): image .*xmlab9"):
        load_slake("test", tmp_path)
    (tmp_path / "test.json").write_text(json.dumps([{k: v for k, v in row.items() if k != "q_lang"}]))
    with pytest.raises(RecordError, match=r"row 0 \(qid 1\): missing field 'q_lang'"):
        load_slake("test", tmp_path)


# ---- PathVQA parquet -----------------------------------------------------------------------------------------
def _png_bytes(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return buf.getvalue()


def _write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_pathvqa_hugging_face_layout(tmp_path):
    red, blue = _png_bytes("red"), _png_bytes("blue")
    rows = [{"image": {"bytes": red, "path": "r.png"}, "question": "Is this necrosis?", "answer": "Yes"},
            {"image": {"bytes": red, "path": "r.png"}, "question": "What organ is shown?", "answer": "liver"},
            {"image": {"bytes": blue, "path": None}, "question": "Is it benign?", "answer": "no"}]
    _write_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", rows)
    _write_parquet(tmp_path / "data" / "train-00000-of-00001.parquet", rows[:1])
    items = load_pathvqa(tmp_path, "test")
    assert [it.answer_type for it in items] == ["CLOSED", "OPEN", "CLOSED"]
    assert items[0].image == items[1].image != items[2].image  # identical bytes share one file
    assert Image.open(items[2].image).getpixel((0, 0)) == (0, 0, 255)
    assert Path(items[2].image).suffix == ".jpg" and Path(items[0].image).suffix == ".png"
    assert len({it.question_id for it in items}) == 3
    assert len(load_pathvqa(tmp_path, "train")) == 1
    assert load_benchmark("pathvqa", "test", source=tmp_path, closed_suffix=True)[0].question.endswith(CLOSED_SUFFIX)
    with pytest.raises(FileNotFoundError, match="no validation"):
        load_pathvqa(tmp_path, "validation")


def test_pathvqa_image_by_path(tmp_path):
    _image(tmp_path / "pics" / "a.png")
    path = _write_parquet(tmp_path / "test.parquet", [
        {"image": {"bytes": None, "path": "pics/a.png"}, "question": "q?", "answer": "a"}])
    assert load_pathvqa(path)[0].image == str(tmp_path / "pics" / "a.png")


@pytest.mark.parametrize("row, message", [
    ({"image": {"bytes": None, "path": None}, "question": "q?", "answer": "a"}, "field .image. has neither bytes nor a path"),
    ({"image": {"bytes": None, "path": "gone.png"}, "question": "q?", "answer": "a"}, "image .*gone.png.* does not exist"),
    ({"image": {"bytes": b"x", "path": None}, "question": None, "answer": "a"}, "field 'question' must be"),
    ({"image": "a.png", "question": "q?", "answer": "a"}, "field 'image' must be a struct"),
])
def test_pathvqa_malformed_rows(tmp_path, row, message):
    path = _write_parquet(tmp_path / "test.parquet", [row])
    with pytest.raises(RecordError, match=f"test.parquet: row 0: {message}"):
        load_pathvqa(path)


def test_pathvqa_bad_files(tmp_path):
    path = _write_parquet(tmp_path / "test.parquet", [{"img": 1, "question": "q?", "answer": "a"}])
    with pytest.raises(RecordError, match=r"test.parquet: missing column\(s\) \['image'\]"):
        load_pathvqa(path)
    good = _write_parquet(tmp_path / "good.parquet", [{"image": {"bytes": b"x", "path": None}, "question": "q?",
                                                       "answer": "a"}])
    truncated = tmp_path / "cut.parquet"
    truncated.write_bytes(good.read_bytes()[:50])
    with pytest.raises(RecordError, match="cut.parquet: not a readable parquet file"):
        load_pathvqa(truncated)
    with pytest.raises(FileNotFoundError):
        load_pathvqa(tmp_path / "nothing")


def test_tiny_world_questions_load_as_vqa_items(tmp_path):
    from llavamed_lite.synth.world import build_tiny_world

    paths = build_tiny_world(tmp_path, n_train=5, n_heldout=5)
    heldout, train = load_benchmark("tiny", "test", source=tmp_path), load_benchmark("tiny", "train", source=tmp_path)
    assert heldout and train and not {it.image for it in heldout} & {it.image for it in train}
    assert all(Path(it.image).is_file() and it.answer_type in ("OPEN", "CLOSED") for it in heldout + train)
    assert all("<image>" not in it.question for it in heldout)
    assert load_llava_vqa(paths["vqa_heldout"]) == heldout
