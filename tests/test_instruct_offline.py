"""The offline backend: conversations from the tiny world's findings, through the same post-processing."""

import hashlib
import json
from collections import Counter

import numpy as np
import pytest

from llavamed_lite.config import load_config
from llavamed_lite.data.formats import DOMAINS, read_training_records
from llavamed_lite.instruct import make_backend, synthesize
from llavamed_lite.sources import ensure_instruct
from llavamed_lite.instruct.offline import answer_sentence, offline_conversation
from llavamed_lite.instruct.postprocess import clean_response
from llavamed_lite.instruct.stats import dataset_stats, question_kind
from llavamed_lite.instruct.synthesize import stats_path
from llavamed_lite.synth.questions import questions_for
from llavamed_lite.synth.world import figure


@pytest.fixture(scope="module")
def captions():
    return [figure("train", i, 0, 64)[0] for i in range(60)]


def test_offline_text_is_what_a_model_would_write_and_passes_post_processing(captions):
    for record in captions:
        text = offline_conversation(record, seed=0)
        assert text.startswith("User: ")
        cleaned = clean_response(text)
        assert cleaned.reject is None and not cleaned.dropped and cleaned.stripped_lead_ins == 0
        assert 2 <= len(cleaned.turns) // 2 <= 4


def test_offline_is_deterministic_per_seed_and_varied(captions):
    a = [offline_conversation(r, seed=0) for r in captions]
    assert a == [offline_conversation(r, seed=0) for r in captions]
    b = [offline_conversation(r, seed=1) for r in captions]
    assert sum(x != y for x, y in zip(a, b)) > len(a) // 2
    n_pairs = Counter(len(clean_response(t).turns) // 2 for t in a)
    assert set(n_pairs) == {2, 3, 4}
    assert len({t.split("\n")[0] for t in a}) >= 10  # many different opening questions


@pytest.mark.parametrize("index", range(15))
def test_answers_agree_with_the_tiny_world_answers(index):
    """Every sentence answer says what the world's own short answer says (yes/no, side, count...)."""
    record = figure("train", index, 0, 64)[0]
    for q in questions_for(record["findings"], np.random.default_rng(index)):
        sentence = answer_sentence(record["findings"], q).lower()
        if q["answer_type"] == "CLOSED":
            assert sentence.startswith(q["answer"] + ","), (q, sentence)
        elif q["question_type"] == "count" and q["answer"] == "0":
            assert "no lesions" in sentence
        elif q["answer"] == "no abnormality":
            assert sentence == "there is no abnormality."
        elif q["answer"] == "chest x-ray":
            assert "chest x-ray" in sentence
        else:
            assert q["answer"].lower() in sentence or q["answer"].lower() in {"ct", "mri", "histology", "gross pathology"}, (q, sentence)


def test_records_without_findings_get_a_generic_conversation_or_a_reason():
    real = {"pair_id": "PMC1_F2", "pmid": "1", "fig_id": "F2", "fig_label": "Figure 2",
            "fig_caption": "Figure 2. Axial T2-weighted MRI showing a left frontal mass.", "in_text_mention": [],
            "domain": {d: d == "mri" for d in DOMAINS}}
    result = synthesize([real, {**real, "pair_id": "x", "domain": {d: False for d in DOMAINS}}], make_backend("offline"),
                        progress=False)
    (record,) = result.records
    assert result.rejected == {"no_domain": 1}
    assert record["conversations"][1]["value"] == "This is an MRI scan."
    assert record["conversations"][3]["value"] == "Axial T2-weighted MRI showing a left frontal mass."


def test_question_kinds():
    assert question_kind("<image>\nWhat kind of image is this?") == "modality"
    assert question_kind("How many lesions are there?") == "count"
    assert question_kind("Is the nodule in the left lung?") == "location"
    assert question_kind("Is there necrosis?") == "presence"
    assert question_kind("Describe the image.") == "description"
    assert question_kind("Why?") == "interpretation"


def test_tiny_instruct_is_built_once_and_valid(tmp_path):
    cfg = load_config("tiny", {"data.n_train_figures": 25, "data.n_heldout_figures": 5})
    path = ensure_instruct(cfg, tmp_path).path
    assert path == tmp_path / "instruct" / "instruct_train.json"
    records, errors = read_training_records(path)
    assert len(records) == 25 and not errors
    assert all((tmp_path / "data" / r["image"]).exists() for r in records)  # image paths are relative to run_dir/data
    stats = json.loads(stats_path(path).read_text())
    assert stats["records"] == 25 and stats["source"]["backend"] == "offline"
    mtime = path.stat().st_mtime_ns
    assert ensure_instruct(cfg, tmp_path).path == path and path.stat().st_mtime_ns == mtime  # idempotent
    other = load_config("tiny", {"data.n_train_figures": 25, "data.n_heldout_figures": 5, "seed": 1})
    ensure_instruct(other, tmp_path)
    assert json.loads(path.read_text()) != records  # a new seed rebuilds it
    stats_path(path).write_text(json.dumps({"source": {"backend": "openai", "model": "gpt-4o"}}))
    path.write_text("[]")
    assert ensure_instruct(cfg, tmp_path).path == path and path.read_text() == "[]"  # an LLM's file is kept
    s = dataset_stats(records)
    assert len(s["turns"]) == 25 and set(s["question_kinds"]) == set(DOMAINS)


def test_cli_offline_end_to_end(tmp_path, capsys):
    from llavamed_lite.cli import main
    from llavamed_lite.synth.world import build_tiny_world

    world = build_tiny_world(tmp_path / "world", n_train=10, n_heldout=0)
    out = tmp_path / "instruct.json"
    assert main(["synthesize", "--captions", str(world["captions_train"]), "--out", str(out), "--backend", "offline",
                 "--seed", "3", "--no-progress"]) == 0
    records, _ = read_training_records(out)
    assert len(records) == 10 and "10 instruct records" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.cache.jsonl"))  # offline answers need no cache unless asked for
    again = tmp_path / "again.json"
    main(["synthesize", "--captions", str(world["captions_train"]), "--out", str(again), "--seed", "3", "--no-progress"])
    assert again.read_text() == out.read_text()  # deterministic per seed


def test_bad_caption_records_are_refused_with_the_record_named(captions):
    from llavamed_lite.data.formats import RecordError

    offline = make_backend("offline")
    with pytest.raises(RecordError, match=r"caption record 1: pair_id 'tw-train-00000' repeats record 0"):
        synthesize([captions[0], dict(captions[0])], offline, progress=False)
    with pytest.raises(RecordError, match=r"caption record 0: missing field 'fig_caption'"):
        synthesize([{k: v for k, v in captions[0].items() if k != "fig_caption"}], offline, progress=False)
    with pytest.raises(ValueError, match="unknown backend 'gpt'"):
        make_backend("gpt")


def test_synthesize_works_inside_a_running_event_loop(captions):
    """Jupyter runs cells inside an event loop; synthesize then runs its own loop in a thread."""
    import asyncio

    async def notebook_cell():
        return synthesize(captions[:3], make_backend("offline"), progress=False)

    assert len(asyncio.run(notebook_cell()).records) == 3


def test_every_question_is_answered_from_the_table_as_before_the_table():
    """Each question records which finding it is `about`, and `fact` looks the answer up (no searching the question
    text). The digest is of the question and answer texts that the text-searching version wrote for 2,931
    questions about 400 random figures: the table changed nothing."""
    from llavamed_lite.instruct.offline import ANY_DOMAIN, FACTS
    from llavamed_lite.synth.findings import sample_findings

    rng = np.random.default_rng(0)
    digest, n = hashlib.sha256(), 0
    for k in range(400):
        f = sample_findings(DOMAINS[k % len(DOMAINS)], rng)
        for q in questions_for(f, rng):
            assert q["about"] in ANY_DOMAIN or q["about"] in FACTS[f["domain"]], q
            digest.update((q["question"] + "|" + answer_sentence(f, q) + "\n").encode())
            n += 1
    assert (digest.hexdigest()[:16], n) == ("b6b1e5a390b5b0ed", 2931)
