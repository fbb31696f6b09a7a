"""LLaVA-Med's VQA metrics on hand-made cases."""

import pytest

from llavamed_lite.eval.metrics import closed_hit, closed_hit_strict, normalize, open_recall_f1, score_one, vqa_scores


@pytest.mark.parametrize("text, tokens", [
    ("Yes", ["yes"]),
    ("  The LEFT lung.  ", ["left", "lung"]),
    ("An apple, a pear; the plum!", ["apple", "pear", "plum"]),
    ("Two lesions", ["2", "lesions"]),
    ("twelve or twenty", ["12", "or", "20"]),
    ("It's 2.5 cm.", ["it", "is", "2.5", "cm"]),
    ("isn't it? don't know", ["is", "not", "it", "do", "not", "know"]),
    ("Isn\u2019t", ["is", "not"]),
    ("the patient's x-ray", ["patients", "x", "ray"]),
    ("T2-weighted (MRI)", ["t2", "weighted", "mri"]),
    ("end.", ["end"]),
    ("3.", ["3"]),
    ("", []),
    ("the a an", []),
])
def test_normalize(text, tokens):
    assert normalize(text) == tokens


def test_closed_lenient_is_a_substring_match():
    assert closed_hit("Yes, there is.", "yes") == 1.0
    assert closed_hit("The answer is no.", "No") == 1.0
    # The paper's metric forgives these: "no" is inside "not", "know" and "abnormal".
    assert closed_hit("It is not possible to tell", "no") == 1.0
    assert closed_hit("I don't know", "no") == 1.0
    assert closed_hit("abnormal", "no") == 1.0
    assert closed_hit("yes", "no") == 0.0
    assert closed_hit("", "yes") == 0.0
    assert closed_hit("left lung", "the left") == 1.0
    assert closed_hit("one lesion", "1") == 1.0


def test_closed_strict_whole_words_and_first_yes_no():
    assert closed_hit_strict("It is not possible to tell", "no") == 0.0
    assert closed_hit_strict("I don't know", "no") == 0.0
    assert closed_hit_strict("abnormal", "no") == 0.0
    assert closed_hit_strict("No, there is no nodule", "no") == 1.0
    assert closed_hit_strict("Yes. No doubt.", "no") == 0.0  # the first yes/no word decides
    assert closed_hit_strict("Well, yes", "yes") == 1.0
    assert closed_hit_strict("the right lung", "right lung") == 1.0
    assert closed_hit_strict("the lung on the right", "right lung") == 0.0
    assert closed_hit_strict("upright", "right") == 0.0
    assert closed_hit_strict("", "yes") == 0.0


def test_open_recall_counts_with_multiplicity():
    assert open_recall_f1("left upper lobe", "left upper lobe") == (1.0, 1.0)
    recall, f1 = open_recall_f1("the left lung", "left upper lobe")
    assert recall == pytest.approx(1 / 3)
    assert f1 == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    # "left left" needs two "left"s in the prediction.
    assert open_recall_f1("left", "left left")[0] == pytest.approx(0.5)
    assert open_recall_f1("left and left", "left left")[0] == 1.0
    assert open_recall_f1("", "liver") == (0.0, 0.0)
    assert open_recall_f1("three", "3") == (1.0, 1.0)
    assert open_recall_f1("anything", "the") == (0.0, 0.0)  # an answer of only articles cannot be matched


def test_vqa_scores_aggregates_by_kind_and_question_type():
    preds = ["yes", "not sure", "left lung", "", "liver and spleen"]
    answers = ["yes", "no", "left", "right", "liver"]
    kinds = ["CLOSED", "closed ", "OPEN", "OPEN", "OPEN"]
    s = vqa_scores(preds, answers, kinds, question_types=["PRES", "PRES", "POS", "POS", "ORGAN"])
    assert s["n_closed"] == 2 and s["n_open"] == 3
    assert s["closed_accuracy"] == 1.0  # "no" in "not sure"
    assert s["closed_accuracy_strict"] == 0.5
    assert s["open_recall"] == pytest.approx((1 + 0 + 1) / 3)
    assert s["open_f1"] == pytest.approx((2 / 3 + 0 + 0.5) / 3)
    by = s["by_question_type"]
    assert set(by) == {"PRES", "POS", "ORGAN"}
    assert by["PRES"]["n_closed"] == 2 and by["PRES"]["open_recall"] is None
    assert by["POS"]["open_recall"] == 0.5
    for value in (s["closed_accuracy"], s["closed_accuracy_strict"], s["open_recall"], s["open_f1"]):
        assert 0.0 <= value <= 1.0


def test_empty_predictions_and_empty_lists():
    s = vqa_scores(["", None], ["yes", "liver"], ["CLOSED", "OPEN"])
    assert s["closed_accuracy"] == 0.0 and s["open_recall"] == 0.0
    empty = vqa_scores([], [], [])
    assert empty == {"closed_accuracy": None, "closed_accuracy_strict": None, "open_recall": None, "open_f1": None,
                     "n_closed": 0, "n_open": 0}
    assert vqa_scores([], [], [], question_types=[])["by_question_type"] == {}


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="same length"):
        vqa_scores(["yes"], ["yes", "no"], ["CLOSED", "CLOSED"])
    with pytest.raises(ValueError, match="question 1: unknown answer_type 'MAYBE'"):
        vqa_scores(["yes", "no"], ["yes", "no"], ["CLOSED", "MAYBE"])
    with pytest.raises(ValueError, match="question_types"):
        vqa_scores(["yes"], ["yes"], ["CLOSED"], question_types=[])
    assert score_one("yes", "yes", "closed") == {"closed": 1.0, "closed_strict": 1.0}


def test_forgiven_by_lenient_lists_substring_only_hits():
    from llavamed_lite.eval.metrics import forgiven_by_lenient

    preds = ["I do not know", "no", "abnormal", "left lung", "not sure"]
    answers = ["no", "no", "no", "left", "no"]
    kinds = ["CLOSED", "CLOSED", "CLOSED", "OPEN", "CLOSED"]
    assert forgiven_by_lenient(preds, answers, kinds) == [0, 2, 4]


def test_baselines():
    from llavamed_lite.eval.baselines import always_yes, majority_answer
    from llavamed_lite.eval.vqa import VQAItem

    def item(answer, qtype, kind="OPEN"):
        return VQAItem("q", "img.png", "?", answer, kind, qtype)

    train = [item("Yes", "PRES", "CLOSED"), item("yes", "PRES", "CLOSED"), item("no", "PRES", "CLOSED"),
             item("CT", "MODALITY"), item("MRI", "MODALITY"), item("mri", "MODALITY"), item("no", "SIZE", "CLOSED")]
    test = [item("no", "PRES", "CLOSED"), item("x-ray", "MODALITY"), item("no", "COLOR", "CLOSED"), item("2", "COUNT")]
    assert majority_answer(train, test) == ["Yes", "MRI", "Yes", "MRI"]  # unseen types: the answer type's majority
    assert always_yes(test) == ["yes"] * 4
    with pytest.raises(ValueError, match="at least one training item"):
        majority_answer([], test)


def test_paper_table_puts_ours_beside_the_published_numbers():
    from llavamed_lite.eval.paper import PAPER_VQA, TEST_SIZES, vqa_table

    ours = vqa_scores(["yes", "left"], ["yes", "right"], ["CLOSED", "OPEN"])
    rows = vqa_table("vqa-rad", {"always yes": ours})
    assert rows[1] == {"method": "LLaVA-Med from LLaVA", "open": 61.52, "closed": 84.19, "closed_strict": None}
    assert rows[-1] == {"method": "always yes", "open": 0.0, "closed": 100.0, "closed_strict": 100.0}
    assert len(rows) == len(PAPER_VQA) + 1 and TEST_SIZES["slake"] == (1061, 645, 416)
    with pytest.raises(ValueError, match="unknown benchmark"):
        vqa_table("tiny")
