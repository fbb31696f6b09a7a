"""Every subcommand against a table of bad arguments (issue 18.10): each gets one clear line on stderr and a non-zero
exit (2 for usage and bad input), never a traceback, and nothing is written. Run in-process through
`llavamed_lite.cli.main`, so the whole table takes seconds."""

import json

import pytest

from llavamed_lite.cli import COMMANDS, main

BAD = {  # command -> (arguments, a phrase the error must hold); {tmp} is the test's folder
    "run": [
        (["--seed", "-1"], "--seed: must be >= 0"),
        (["--scale", "huge"], "invalid choice: 'huge'"),
        (["--run-dir", "{tmp}/r", "--set", "bogus.key=1"], "unknown config key 'bogus.key'"),
        (["--run-dir", "{tmp}/r", "--only", "99"], "no notebooks to run"),
    ],
    "pretrain-tiny": [
        (["--run-dir", "{tmp}/r"], "the following arguments are required: --out"),
        (["--out", "{tmp}/o", "--set", "bogus.key=1"], "unknown config key 'bogus.key'"),
        (["--out", "{tmp}/o", "--set", "data.image_size=0"], "'data.image_size': must be >= 1"),
        (["--out", "{tmp}/o", "--clip-steps", "0"], "--clip-steps: must be >= 1"),
        (["--out", "{tmp}/o", "--lm-steps", "-3"], "--lm-steps: must be >= 1"),
        (["--out", "{tmp}/o", "--vocab-size", "x"], "--vocab-size: expected an integer"),
        (["--out", "{tmp}/o", "--threads", "0"], "--threads: must be >= 1"),
    ],
    "curate": [
        (["--run-dir", "{tmp}/r", "--input", "{tmp}/passwd"], "no PMC package"),
        (["--run-dir", "{tmp}/r", "--input", "{tmp}/absent"], "no such package"),
        (["--run-dir", "{tmp}/r", "--manifest", "{tmp}/absent.csv"], "absent.csv: no such file"),
        (["--run-dir", "{tmp}/r", "--input", "{tmp}/passwd", "--max-articles", "-5"], "--max-articles: must be >= 1"),
        (["--run-dir", "{tmp}/r", "--input", "{tmp}/passwd", "--workers", "0"], "--workers: must be >= 1"),
        (["--run-dir", "{tmp}/r", "--input", "{tmp}/passwd", "--timeout", "0"], "--timeout: must be > 0"),
        (["--run-dir", "{tmp}/r", "--input", "{tmp}/passwd", "--retries", "-1"], "--retries: must be >= 0"),
        (["--run-dir", "{tmp}/r", "--input", "{tmp}/passwd", "--set", "data.max_articles=-5"],
         "'data.max_articles': must be >= 1"),
        (["--run-dir", "{tmp}/r", "--input", "{tmp}/article.nxml", "--scale", "lora", "--image-classifier",
          "{tmp}/no-clip"], "--image-classifier"),
    ],
    "synthesize": [
        (["--captions", "{tmp}/absent.json", "--out", "{tmp}/o.json"], "absent.json"),
        (["--captions", "{tmp}/captions.json", "--out", "{tmp}"], "is a folder"),
        (["--captions", "{tmp}/captions.json", "--out", "{tmp}/o.json", "--cache", "{tmp}/corrupt.jsonl"],
         "invalid JSON on line 2"),
        (["--captions", "{tmp}/captions.json", "--out", "{tmp}/o.json", "--max-retries", "-1"],
         "--max-retries: must be >= 0"),
        (["--captions", "{tmp}/captions.json", "--out", "{tmp}/o.json", "--rpm", "0"], "--rpm: must be > 0"),
        (["--captions", "{tmp}/captions.json", "--out", "{tmp}/o.json", "--tpm", "-5"], "--tpm: must be > 0"),
        (["--captions", "{tmp}/captions.json", "--out", "{tmp}/o.json", "--limit", "-1"], "--limit: must be >= 1"),
        (["--captions", "{tmp}/captions.json", "--out", "{tmp}/o.json", "--concurrency", "0"],
         "--concurrency: must be >= 1"),
        (["--captions", "{tmp}/captions.json", "--out", "{tmp}/o.json", "--max-tokens", "0"],
         "--max-tokens: must be >= 1"),
        (["--captions", "{tmp}/captions.json", "--out", "{tmp}/o.json", "--temperature", "-1"],
         "--temperature: must be >= 0"),
        (["--captions", "{tmp}/captions.json", "--out", "{tmp}/o.json", "--timeout", "inf"], "--timeout: must be > 0"),
    ],
    "train": [
        (["--stage", "3", "--run-dir", "{tmp}/r"], "invalid choice: '3'"),
        (["--stage", "2", "--run-dir", "{tmp}/r", "--set", "bogus.key=1"], "unknown config key 'bogus.key'"),
        (["--stage", "2", "--run-dir", "{tmp}/r", "--set", "stage2.save_steps=0"], "'stage2.save_steps': must be >= 1"),
        (["--stage", "vqa", "--run-dir", "{tmp}/r", "--set", "vqa.epochs=-1"], "'vqa.epochs': must be > 0"),
        (["--stage", "1", "--run-dir", "{tmp}/r", "--set", "stage1.max_steps=0"], "'stage1.max_steps': must be -1"),
        (["--stage", "2", "--run-dir", "{tmp}/r", "--set", "stage2.lr=fast"], "cannot read 'fast' as float"),
        (["--stage", "2", "--run-dir", "{tmp}/r", "--set", "stage2.batch_size=0"], "'stage2.batch_size': must be >= 1"),
        (["--stage", "2", "--run-dir", "{tmp}/r", "--set", "model.dtype=int8"], "'model.dtype': must be one of"),
        (["--stage", "2", "--run-dir", "{tmp}/r", "--seed", "-1"], "--seed: must be >= 0"),
    ],
    "evaluate": [
        (["--benchmark", "vqa-rad", "--model", "{tmp}/absent", "--out", "{tmp}/e"], "absent"),
        (["--benchmark", "tiny", "--model", "{tmp}/absent", "--out", "{tmp}/e"], "needs its data"),
        (["--benchmark", "tiny", "--data", "{tmp}/empty.json", "--model", "{tmp}/absent", "--out", "{tmp}/e"],
         "no questions to answer"),
        (["--benchmark", "vqa-rad", "--model", "{tmp}/absent", "--out", "{tmp}/e", "--limit", "-1"],
         "--limit: must be >= 1"),
        (["--benchmark", "vqa-rad", "--model", "{tmp}/absent", "--out", "{tmp}/e", "--limit", "0"],
         "--limit: must be >= 1"),
        (["--benchmark", "vqa-rad", "--model", "{tmp}/absent", "--out", "{tmp}/e", "--batch-size", "0"],
         "--batch-size: must be >= 1"),
        (["--benchmark", "vqa-rad", "--model", "{tmp}/absent", "--out", "{tmp}/e", "--max-new-tokens", "0"],
         "--max-new-tokens: must be >= 1"),
    ],
    "chat": [
        (["--model", "{tmp}/absent"], "no config.json"),
        (["--model", "{tmp}/absent", "--port", "0"], "--port: must be >= 1 and <= 65535"),
        (["--model", "{tmp}/absent", "--port", "70000"], "--port: must be >= 1 and <= 65535"),
    ],
    "convert-official": [
        (["--src", "{tmp}/absent", "--out", "{tmp}/c"], "no config.json"),
        (["--src", "{tmp}/official", "--out", "{tmp}/official", "--overwrite"], "overlap"),
        (["--src", "{tmp}/official", "--out", "{tmp}/official/converted"], "overlap"),
        (["--src", "{tmp}/official", "--out", "{tmp}/c", "--vision", "{tmp}/no-clip"], "no-clip: no such folder"),
        (["--src", "{tmp}/official", "--out", "{tmp}/c", "--shard-gb", "0"], "--shard-gb: must be > 0"),
        (["--src", "{tmp}/official", "--out", "{tmp}/c", "--shard-gb", "-1"], "--shard-gb: must be > 0"),
    ],
    "make-mini": [
        ([], "the following arguments are required: --out"),
        (["--out", "{tmp}/m", "--seed", "-1"], "--seed: must be >= 0"),
    ],
}


@pytest.fixture
def inputs(tmp_path):
    """The files the table refers to: a non-package file, captions, a corrupt cache, an empty question list and
    an official checkpoint's config.json (enough to reach the checks after it)."""
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    caption = {"pair_id": "p0", "pmid": "1", "fig_id": "F1", "fig_label": "Fig. 1",
               "fig_caption": "Chest radiograph showing a small nodule in the right upper zone.",
               "in_text_mention": [], "domain": {"chest_xray": True}}
    (tmp_path / "captions.json").write_text(json.dumps([caption]))
    (tmp_path / "corrupt.jsonl").write_text('{"key": "k", "response": "x"}\n{"key": \n{"key": "j", "response": "y"}\n')
    (tmp_path / "empty.json").write_text("[]")
    (tmp_path / "article.nxml").write_text("<article/>")
    (tmp_path / "official").mkdir()
    (tmp_path / "official" / "config.json").write_text(json.dumps(
        {"model_type": "llava_mistral", "vocab_size": 32, "hidden_size": 8, "intermediate_size": 16,
         "num_hidden_layers": 1, "num_attention_heads": 2, "mm_hidden_size": 8}))
    return tmp_path


def test_the_table_covers_every_subcommand():
    assert set(BAD) == set(COMMANDS)


@pytest.mark.parametrize("command, argv, phrase",
                         [(c, a, p) for c, rows in BAD.items() for a, p in rows],
                         ids=[f"{c}:{' '.join(a)}" for c, rows in BAD.items() for a, _ in rows])
def test_bad_arguments_get_one_line_and_a_non_zero_exit(inputs, monkeypatch, capsys, command, argv, phrase):
    monkeypatch.chdir(inputs)  # defaults such as runs/tiny land in the test's folder, not the repository
    before = sorted(p.relative_to(inputs) for p in inputs.rglob("*"))
    capsys.readouterr()
    code = main([command, *(a.replace("{tmp}", str(inputs)) for a in argv)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(("llavamed-lite", "curate:")) and phrase in err, err
    assert sorted(p.relative_to(inputs) for p in inputs.rglob("*")) == before  # nothing written


def test_config_values_are_range_checked_from_notebooks_too():
    """The same checks for papermill parameters (a mapping) as for --set; every preset passes them."""
    from llavamed_lite.config import SCALES, load_config

    for scale in SCALES:
        load_config(scale)
    for key, value, phrase in [("stage2.save_steps", 0, "must be >= 1"), ("vqa.epochs", -1.0, "must be > 0"),
                               ("stage1.warmup_ratio", 1.0, "must be >= 0 and < 1"),
                               ("stage2.lora_dropout", -0.1, "must be >= 0 and < 1"),
                               ("stage2.template", "chatml", "must be one of plain, .*got 'chatml'")]:
        with pytest.raises(ValueError, match=rf"config key '{key}': {phrase}"):
            load_config("tiny", {key: value})


def test_train_refuses_a_bad_key_before_loading_torch(tmp_path):
    """A launched stage's processes each meet a typo in --set: they stop in a fraction of a second, not after the
    seconds of importing torch, transformers and accelerate."""
    import subprocess
    import sys

    code = ("import sys; from llavamed_lite.cli import main; "
            "code = main(['train', '--stage', '1', '--run-dir', 'r', '--set', 'stage1.bogus=1']); "
            "sys.exit(10 if 'torch' in sys.modules else code)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2 and "unknown config key 'stage1.bogus'" in done.stderr
