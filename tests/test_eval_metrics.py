"""LLaVA-Med's VQA metrics (the paper's, and ours beside them) on cases worked out by hand."""

import pytest

from llavamed_lite.eval.metrics import (closed_hit, closed_hit_lenient, closed_hit_strict, normalize, normalize_paper,
                                         open_recall, open_recall_f1, score_one, vqa_scores)


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


# ---- the paper's metric: one test per rule, each worked out by hand ----------------------------------------------
def test_paper_worked_examples():
    assert closed_hit("There isn't any effusion.", "no") == 0.0
    assert closed_hit("twelve", "12") == 0.0
    assert closed_hit("zero", "none") == 1.0
    assert closed_hit("Left-sided - lower lobe", "left-sided") == 0.0
    assert open_recall("about 1000 cells", "1,000") == 1.0
    assert open_recall("pneumothorax pneumothorax pneumothorax", "right pneumothorax") == 0.75


def test_paper_lower_cases_and_is_a_substring_match():
    assert closed_hit("YES", "yes") == 1.0
    # "no" is inside "not", "know" and "nodule"
    assert closed_hit("It is not possible to tell", "no") == 1.0
    assert closed_hit("I do not know", "no") == 1.0
    assert closed_hit("a nodule", "no") == 1.0
    assert closed_hit("yes", "no") == 0.0
    assert closed_hit("", "yes") == 0.0


def test_paper_punctuation_next_to_a_space_is_deleted_else_a_space():
    # A dash next to a space anywhere deletes every dash; alone it becomes a space.
    assert normalize_paper("Left-sided - lower lobe") == "leftsided lower lobe"
    assert normalize_paper("left-sided") == "left sided"
    assert closed_hit("left-sided lesion", "left-sided") == 1.0
    # The test is per character: the comma touches a space and goes, the dash does not and becomes a space.
    assert normalize_paper("left-sided, lower") == "left sided lower"
    assert normalize_paper("(x-ray)") == "x ray"


def test_paper_digit_comma_digit_deletes_the_punctuation():
    assert normalize_paper("1,000") == "1000"
    assert normalize_paper("1,000 x-ray") == "1000 xray"  # the digit comma anywhere: every character is deleted
    assert open_recall("about 1000 cells", "1,000") == 1.0


def test_paper_colons_percent_and_apostrophes_stay():
    assert normalize_paper("ratio 3:1, 50% patient's") == "ratio 3:1 50% patient's"
    assert closed_hit("ratio 31", "3:1") == 0.0


def test_paper_periods_go_unless_before_a_digit_at_most_32():
    assert normalize_paper("It is 2.5 cm.") == "it is 2.5 cm"
    assert normalize_paper("." * 40) == "." * 8
    assert normalize_paper("." * 32) == ""


def test_paper_number_words_stop_at_ten_and_none_is_zero():
    assert normalize_paper("none zero one ten eleven twelve") == "0 0 1 10 eleven twelve"
    assert closed_hit("ten", "10") == 1.0
    assert closed_hit("eleven", "11") == 0.0


def test_paper_articles_are_dropped():
    assert normalize_paper("The liver, an organ") == "liver organ"
    assert closed_hit("liver", "the liver") == 1.0
    assert normalize_paper("theatre a1") == "theatre a1"  # whole words only


def test_paper_contractions_gain_an_apostrophe_and_are_never_expanded():
    assert normalize_paper("dont isnt couldnt've youre") == "don't isn't couldn't've you're"
    assert closed_hit("i dont know", "don't") == 1.0
    assert closed_hit("There isn't any effusion", "no") == 0.0  # "isn't" stays: no "not", no "no"
    assert closed_hit("There is not any effusion", "no") == 1.0
    assert closed_hit("isn't", "is not") == 0.0
    assert normalize_paper("im ive") == "im ive"  # the table's capital-I forms never match lower case


def test_paper_open_recall_counts_the_predictions_repeats():
    assert open_recall("pneumothorax pneumothorax pneumothorax", "right pneumothorax") == 0.75
    assert open_recall("left", "right right left") == pytest.approx(1 / 3)  # a missed word: the answer's count
    assert open_recall("left upper lobe", "left upper lobe") == 1.0
    assert open_recall("", "liver") == 0.0
    assert open_recall("three", "3") == 1.0


def test_paper_irregular_answer_types_are_skipped_and_counted():
    s = vqa_scores(["yes", "no", "liver", "x"], ["yes", "yes", "liver", "y"], ["CLOSED", "CLOSED ", "OPEN", "open"])
    assert (s["n_closed"], s["n_open"], s["n_skipped"]) == (1, 1, 2)
    assert s["closed_accuracy"] == 1.0 and s["open_recall"] == 1.0 and s["mode"] == "paper"


def test_paper_open_accuracy_is_a_substring_hit_on_open_questions():
    s = vqa_scores(["left lung", "the right lobe", "lobe"], ["left", "right lobe", "lobes"], ["OPEN"] * 3)
    assert s["open_accuracy"] == pytest.approx(2 / 3)
    assert s["open_recall"] == pytest.approx((1 + 1 + 0) / 3)


def test_paper_mode_differs_from_ours_where_the_issue_found_it():
    preds = ["There isn't any effusion.", "twelve", "zero", "pneumothorax pneumothorax", "none"]
    answers = ["no", "12", "none", "right pneumothorax", "no"]
    kinds = ["CLOSED", "CLOSED", "CLOSED", "OPEN", "CLOSED "]
    paper, ours = vqa_scores(preds, answers, kinds), vqa_scores(preds, answers, kinds, mode="lenient")
    assert (paper["closed_accuracy"], paper["open_recall"], paper["n_skipped"]) == (1 / 3, 2 / 3, 1)
    assert (ours["closed_accuracy"], ours["open_recall"], ours["n_skipped"]) == (3 / 4, 1 / 2, 0)


# ---- ours ------------------------------------------------------------------------------------------------------
def test_closed_lenient_is_a_substring_match_on_our_normalisation():
    assert closed_hit_lenient("Yes, there is.", "yes") == 1.0
    assert closed_hit_lenient("The answer is no.", "No") == 1.0
    assert closed_hit_lenient("It is not possible to tell", "no") == 1.0
    assert closed_hit_lenient("There isn't any effusion.", "no") == 1.0  # ours expands "isn't"
    assert closed_hit_lenient("abnormal", "no") == 1.0
    assert closed_hit_lenient("yes", "no") == 0.0
    assert closed_hit_lenient("", "yes") == 0.0
    assert closed_hit_lenient("left lung", "the left") == 1.0
    assert closed_hit_lenient("twelve lesions", "12") == 1.0


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
    kinds = ["CLOSED", "CLOSED", "OPEN", "OPEN", "OPEN"]
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
    assert empty == {"mode": "paper", "closed_accuracy": None, "closed_accuracy_strict": None, "open_recall": None,
                     "open_accuracy": None, "open_f1": None, "n_closed": 0, "n_open": 0, "n_skipped": 0}
    assert vqa_scores([], [], [], question_types=[])["by_question_type"] == {}


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="same length"):
        vqa_scores(["yes"], ["yes", "no"], ["CLOSED", "CLOSED"])
    with pytest.raises(ValueError, match="question 1: unknown answer_type 'MAYBE'"):
        vqa_scores(["yes", "no"], ["yes", "no"], ["CLOSED", "MAYBE"], mode="lenient")
    assert vqa_scores(["yes"], ["yes"], ["closed "], mode="lenient")["n_closed"] == 1  # ours reads it leniently
    with pytest.raises(ValueError, match="unknown mode 'official'"):
        vqa_scores([], [], [], mode="official")
    with pytest.raises(ValueError, match="question_types"):
        vqa_scores(["yes"], ["yes"], ["CLOSED"], question_types=[])
    assert score_one("yes", "yes", "CLOSED") == {"closed": 1.0, "closed_strict": 1.0}
    assert score_one("yes", "yes", "closed") == {}  # skipped by the paper's scorer


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
    lenient = vqa_scores(["yes"], ["yes"], ["CLOSED"], mode="lenient")
    with pytest.raises(ValueError, match="'ours': scores in mode 'lenient'; the paper's table needs mode 'paper'"):
        vqa_table("vqa-rad", {"ours": lenient})
