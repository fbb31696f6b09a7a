"""Stage 0: the tiny tokenizer, CLIP and LM; the committed towers load offline with plain transformers."""

import json

import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer, CLIPModel

from llavamed_lite.paths import TINY_FOUNDATION
from llavamed_lite.synth import towers
from llavamed_lite.synth.corpus import lm_documents
from llavamed_lite.synth.findings import sample_findings
from llavamed_lite.synth.tokenizer import train_tokenizer
from llavamed_lite.synth.world import build_tiny_world

MB = 1 << 20


# ---- the committed towers ----------------------------------------------------------------------------------------------
def test_committed_towers_load_offline_with_plain_transformers():
    tokenizer = AutoTokenizer.from_pretrained(TINY_FOUNDATION / "lm")
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<pad>", "<image>", "<s>", "</s>")] == [0, 1, 2, 3]
    assert tokenizer.eos_token_id == 3 and tokenizer.pad_token_id == 0 and tokenizer.bos_token_id == 2
    ids = tokenizer("Chest radiograph <image>")["input_ids"]
    assert ids[0] == 2 and 1 in ids
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "<image>\nIs there a nodule?"},
                                          {"role": "assistant", "content": "yes"}], tokenize=False)
    assert chat == "[INST] <image>\nIs there a nodule? [/INST] yes</s>"

    lm = AutoModelForCausalLM.from_pretrained(TINY_FOUNDATION / "lm")
    assert type(lm).__name__ == "MistralForCausalLM" and lm.config.eos_token_id == 3
    with torch.no_grad():
        assert lm(**tokenizer("Chest", return_tensors="pt")).logits.shape[-1] == len(tokenizer)

    clip = CLIPModel.from_pretrained(TINY_FOUNDATION / "clip")
    assert clip.config.text_config.eos_token_id == 3  # not 2: CLIP's legacy pooling path
    processor = AutoImageProcessor.from_pretrained(TINY_FOUNDATION / "clip")
    size = clip.config.vision_config.image_size
    pixels = processor(images=[Image.new("RGB", (100, 80), "grey")], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, size, size)
    with torch.no_grad():
        hidden = clip.vision_model(pixel_values=pixels).last_hidden_state
    assert hidden.shape[1] == (size // clip.config.vision_config.patch_size) ** 2 + 1  # 16 patches + CLS at 64 px


def test_committed_towers_are_small_and_learned():
    for tower in ("clip", "lm"):
        weights = TINY_FOUNDATION / tower / "model.safetensors"
        assert weights.exists() and weights.stat().st_size < 10 * MB
        assert not list((TINY_FOUNDATION / tower).glob("*.bin"))  # safetensors only, no pickle
    metrics = json.loads((TINY_FOUNDATION / "metrics.json").read_text())
    assert metrics["clip_zero_shot_domain_accuracy"] >= 0.95
    assert metrics["clip_finding_retrieval_accuracy"] > 0.6
    assert metrics["lm_heldout_perplexity"] < metrics["lm_unigram_perplexity"] / 2
    # the LM answers closed questions from a caption in the image slot: what stage 2 and VQA build on (0.69 at 300
    # pretraining steps held the tiny VQA model near 0.70 closed accuracy)
    assert metrics["lm_closed_qa_from_caption_accuracy"] >= 0.85


# ---- training code on a very small world ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    return build_tiny_world(tmp_path_factory.mktemp("world"), n_train=20, n_heldout=10, seed=5)


def test_tokenizer_special_tokens_and_bad_vocab():
    docs = lm_documents([{"fig_caption": "Chest radiograph.", "in_text_mention": ["See Fig. 1."],
                          "findings": sample_findings("chest_xray", 0)}], 0)
    tok = train_tokenizer(docs * 5, vocab_size=300)
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<image>", "<s>", "</s>"]
    assert tok.decode(tok("Is there a nodule?")["input_ids"], skip_special_tokens=True) == "Is there a nodule?"
    with pytest.raises(ValueError, match="vocab_size must be at least 260"):
        train_tokenizer(docs, vocab_size=100)


def test_lm_corpus_uses_only_the_records_it_is_given(small_world, tmp_path):
    """The corpus is made from the training split only: changing the held-out split changes nothing."""
    other = build_tiny_world(tmp_path, n_train=20, n_heldout=3, seed=5)
    a = lm_documents(json.loads(small_world["captions_train"].read_text()), 0)
    b = lm_documents(json.loads(other["captions_train"].read_text()), 0)
    assert a == b
    assert any(d.startswith("[INST] ") and " [/INST] " in d for d in a)


@pytest.mark.slow
def test_pretrain_tiny_command_writes_loadable_towers(small_world, tmp_path):
    from llavamed_lite.cli import main

    out = tmp_path / "foundation"
    threads = torch.get_num_threads()  # --threads 1 changes a process-wide setting: restore it for later tests
    try:
        rc = main(["pretrain-tiny", "--out", str(out), "--world", str(small_world["root"]), "--seed", "5",
                   "--set", "data.n_train_figures=20", "--set", "data.n_heldout_figures=10",
                   "--clip-steps", "3", "--lm-steps", "3", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("clip_zero_shot_domain_accuracy", "clip_finding_retrieval_accuracy", "lm_heldout_perplexity",
                "lm_unigram_perplexity", "lm_closed_qa_from_caption_accuracy"):
        assert key in metrics
    assert (out / "curves.png").exists() and len(json.loads((out / "curves.json").read_text())["lm_loss"]) == 3
    CLIPModel.from_pretrained(out / "clip")
    AutoModelForCausalLM.from_pretrained(out / "lm")
    assert AutoTokenizer.from_pretrained(out / "lm").chat_template


@pytest.mark.parametrize("domain", ["chest_xray", "ct_scan", "mri", "histology", "gross"])
def test_counterfactual_changes_the_findings(domain):
    for seed in range(10):
        f = sample_findings(domain, seed)
        other = towers.counterfactual(f, seed)
        assert other != f and other["domain"] == domain


def test_bad_training_settings_are_refused():
    tok = train_tokenizer(["a nodule in the left lung"] * 20, vocab_size=300)
    with pytest.raises(ValueError, match="training steps must be a positive integer, got -5"):
        towers.train_lm(torch.zeros((2, 8), dtype=torch.long), tok, towers.LMSettings(steps=-5))
    with pytest.raises(ValueError, match="training steps must be a positive integer, got 0"):
        towers.train_clip(torch.zeros((2, 3, 64, 64)), ["a", "b"], tok, towers.ClipSettings(steps=0))
