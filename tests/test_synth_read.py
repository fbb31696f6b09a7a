"""Reading findings back from text: the world's own sentences read exactly, and invented findings are caught."""

import numpy as np
import pytest

from llavamed_lite.data.formats import DOMAINS
from llavamed_lite.synth.findings import sample_findings
from llavamed_lite.synth.questions import describe
from llavamed_lite.synth.read import check_findings, closed_answer_right, read_findings, score_by_findings
from llavamed_lite.synth.text import caption, mentions, paraphrase


def test_every_sentence_the_world_writes_reads_back_as_its_findings():
    rng = np.random.default_rng(0)
    for i in range(400):
        truth = sample_findings(DOMAINS[i % len(DOMAINS)], rng)
        for text in [caption(truth, rng), describe(truth), paraphrase(truth, rng), *mentions(truth, rng, "Fig. 1")]:
            assert check_findings(text, truth)["wrong"] == [], (text, truth)


def test_a_caption_and_a_description_state_every_finding_of_their_figure():
    rng = np.random.default_rng(1)
    for i in range(200):
        truth = sample_findings(DOMAINS[i % len(DOMAINS)], rng)
        stated = {k: v for k, v in truth.items() if k != "domain" and v is not None}
        assert read_findings(caption(truth, rng), truth["domain"]) == stated
        assert read_findings(describe(truth), truth["domain"]) == stated


def test_hallucinated_findings_are_wrong():
    truth = {"domain": "histology", "density": "sparse", "glands": False, "necrosis": False, "atypia": True}
    answer = "An H&E-stained section with sparse nuclei, no glands, an area of necrosis and bland nuclei."
    checked = check_findings(answer, truth)
    assert checked["right"] == ["density", "glands"]
    assert checked["wrong"] == [("necrosis", True, False), ("atypia", False, True)]
    chest = {"domain": "chest_xray", "nodule": False, "side": None, "zone": None, "size": None, "cardiomegaly": False}
    assert ("side", "left", None) in check_findings("A small nodule in the left lung.", chest)["wrong"]


def test_unknown_domain_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown domain 'xray'"):
        read_findings("text", "xray")


def test_closed_answers_are_scored_by_meaning_not_by_their_first_word():
    slide = {"domain": "histology", "density": "sparse", "glands": False, "necrosis": False, "atypia": True}
    assert closed_answer_right("Yes, the nuclei are sparse.", "yes", slide)
    assert closed_answer_right("No.", "no", slide)
    assert not closed_answer_right("No, the nuclei show no atypia.", "no", slide)  # right word, invented finding
    assert not closed_answer_right("No, the nuclei are sparse.", "yes", slide)  # contradicts itself and the truth
    assert not closed_answer_right("The nuclei are sparse.", "yes", slide)  # no yes/no given


def test_score_by_findings_counts_closed_answers_by_meaning_and_every_false_finding():
    xray = {"domain": "chest_xray", "nodule": True, "side": "left", "zone": "upper", "size": "small",
            "cardiomegaly": False}
    answers = ["Yes, there is a small nodule in the left upper zone.",  # right, 4 true findings
               "No, the heart is enlarged.",                            # yes/no right, but a false finding
               "The nodule is on the right side."]                      # open: a true and a false finding
    scores = score_by_findings(answers, ["yes", "no", "left"], ["CLOSED", "CLOSED", "OPEN"], [xray] * 3)
    assert (scores["closed_right"], scores["n_closed"]) == (1, 2)
    assert scores["findings_false"] == 2 and scores["findings_stated"] == 4 + 1 + 2
    assert scores["with_false"] == [1, 2]
    with pytest.raises(ValueError, match="differ in length"):
        score_by_findings(answers, ["yes"], ["CLOSED"] * 3, [xray] * 3)
