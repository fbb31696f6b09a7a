"""The official LLaVA-Med v1.5 checkpoint -> transformers' Llava: a tiny checkpoint written in the release's layout
(config fields and tensor names as in microsoft/llava-med-v1.5-mistral-7b) converts, loads with the auto classes,
and computes what the same Mistral weights compute."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForImageTextToText, AutoProcessor, MistralForCausalLM

from llavamed_lite.model.convert import ConversionError, convert_official
from llavamed_lite.paths import DATA_SAMPLES
from llavamed_lite.serve.chat import chat

XRAY = DATA_SAMPLES / "xray" / "00000001_000.png"


def official_config(lm_dir, vision_width=32) -> dict:
    """The release's config.json: Mistral's fields plus LLaVA's, model_type llava_mistral."""
    lm = json.loads((lm_dir / "config.json").read_text())
    mistral = {k: lm[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                  "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                                  "rms_norm_eps", "bos_token_id", "eos_token_id", "hidden_act", "tie_word_embeddings",
                                  "sliding_window", "attention_dropout", "initializer_range")}
    return {
        "_name_or_path": "/mnt/output/llava-med-v1.5-mistral-7b", "architectures": ["LlavaMistralForCausalLM"],
        "model_type": "llava_mistral", **mistral, "rope_theta": lm.get("rope_parameters", {}).get("rope_theta", 1e4),
        "feature_outs": "encoder+decoder", "freeze_mm_mlp_adapter": False, "image_aspect_ratio": "pad",
        "img_size": 224, "mm_hidden_size": vision_width, "mm_patch_merge_type": "flat", "mm_projector_lr": None,
        "mm_projector_type": "mlp2x_gelu", "mm_resampler_type": None, "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False, "mm_vision_select_feature": "patch", "mm_vision_select_layer": -2,
        "mm_vision_tower": "openai/clip-vit-large-patch14-336", "proj_vis_to_txt_tokens": False,
        "tokenizer_model_max_length": 2048, "tokenizer_padding_side": "right", "torch_dtype": "float32",
        "transformers_version": "4.36.2", "tune_mm_mlp_adapter": False, "use_cache": False, "use_mm_proj": True,
    }


def write_official(lm_dir, out, vision_width=32, shards=2, drop=(), add=None, config_changes=None):
    """A checkpoint in the official layout: the Mistral LM's tensors under their own names (model.*, lm_head.weight),
    a random mlp2x_gelu projector as model.mm_projector.{0,2}, a stray CLIP copy under model.vision_tower, in
    `shards` safetensors files with an index; the tokenizer files beside them."""
    out.mkdir(parents=True)
    lm = MistralForCausalLM.from_pretrained(lm_dir)
    hidden = lm.config.hidden_size
    generator = torch.Generator().manual_seed(1)
    tensors = {k: v.detach().clone() for k, v in lm.state_dict().items()}
    tensors.update({
        "model.mm_projector.0.weight": torch.randn(hidden, vision_width, generator=generator) * 0.1,
        "model.mm_projector.0.bias": torch.randn(hidden, generator=generator) * 0.1,
        "model.mm_projector.2.weight": torch.randn(hidden, hidden, generator=generator) * 0.1,
        "model.mm_projector.2.bias": torch.randn(hidden, generator=generator) * 0.1,
        "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight":
            torch.zeros(vision_width, 3, 8, 8),
    })
    for name in drop:
        del tensors[name]
    tensors.update(add or {})
    names = sorted(tensors)
    weight_map = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n].contiguous() for n in names[i::shards]}
        save_file(part, str(out / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 0},
                                                                  "weight_map": weight_map}))
    config = official_config(lm_dir, vision_width)
    config.update(config_changes or {})
    (out / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(lm_dir / name, out / name)
    return tensors


@pytest.fixture(scope="module")
def converted(tiny_towers, tmp_path_factory):
    vision, lm = tiny_towers
    root = tmp_path_factory.mktemp("official")
    tensors = write_official(Path(lm), root / "src")
    out = convert_official(root / "src", vision, root / "out", progress=False, max_shard_bytes=40_000)
    return out, tensors


def test_converted_text_logits_equal_mistral(converted, tiny_towers):
    out, _ = converted
    model, info = AutoModelForImageTextToText.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    mistral = MistralForCausalLM.from_pretrained(tiny_towers[1])
    processor = AutoProcessor.from_pretrained(out)
    ids = processor.tokenizer("Chest radiograph showing a nodule in the left upper zone.",
                              return_tensors="pt")["input_ids"]
    with torch.no_grad():
        got = model(input_ids=ids).logits
        expected = mistral(input_ids=ids).logits
    vocab = mistral.config.vocab_size
    assert got.shape[-1] == vocab + 1  # the added <image> row
    torch.testing.assert_close(got[..., :vocab], expected)


def test_projector_vision_and_processor(converted, tiny_towers):
    from transformers import CLIPVisionModel

    out, tensors = converted
    model = AutoModelForImageTextToText.from_pretrained(out)
    projector = model.model.multi_modal_projector
    torch.testing.assert_close(projector.linear_1.weight, tensors["model.mm_projector.0.weight"])
    torch.testing.assert_close(projector.linear_2.bias, tensors["model.mm_projector.2.bias"])
    clip = CLIPVisionModel.from_pretrained(tiny_towers[0])
    torch.testing.assert_close(model.model.vision_tower.embeddings.patch_embedding.weight,
                               clip.embeddings.patch_embedding.weight)  # from --vision, not the stray copy
    assert model.config.projector_hidden_act == "gelu"
    assert model.config.vision_feature_layer == -2
    assert model.config.vision_feature_select_strategy == "default"
    processor = AutoProcessor.from_pretrained(out)
    assert processor.image_processor.do_pad  # image_aspect_ratio "pad"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text == "[INST] <image>\nQ [/INST]"
    inputs = processor(images=[Image.open(XRAY)], text=text, return_tensors="pt")
    assert (inputs["input_ids"] == model.config.image_token_id).sum() == (32 // 8) ** 2
    assert model.generation_config.pad_token_id == processor.tokenizer.pad_token_id


def test_sharded_output_and_chat_runs_unchanged(converted):
    out, _ = converted
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = set(index["weight_map"].values())
    assert len(files) > 1 and all((out / f).is_file() for f in files)
    for f in files:
        with safe_open(str(out / f), "pt") as handle:
            assert handle.metadata() == {"format": "pt"}
    from llavamed_lite.model.compose import load_llava

    answer = chat(*load_llava(out), XRAY, [], "Is there a nodule?", max_new_tokens=4)
    assert isinstance(answer, str)


def test_missing_and_unexpected_keys_are_listed(tiny_towers, tmp_path):
    vision, lm = tiny_towers
    write_official(Path(lm), tmp_path / "src",
                   drop=("model.layers.1.mlp.up_proj.weight", "model.mm_projector.2.bias"),
                   add={"model.layers.7.extra.weight": torch.zeros(2), "some.other.tensor": torch.zeros(1)})
    with pytest.raises(ConversionError) as error:
        convert_official(tmp_path / "src", vision, tmp_path / "out", progress=False)
    message = str(error.value)
    for name in ("model.layers.1.mlp.up_proj.weight", "model.mm_projector.2.bias", "model.layers.7.extra.weight",
                 "some.other.tensor"):
        assert name in message
    assert "missing keys (2)" in message and "unexpected keys (2)" in message
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_wrong_shapes_are_listed(tiny_towers, tmp_path):
    vision, lm = tiny_towers
    write_official(Path(lm), tmp_path / "src",
                   add={"model.mm_projector.0.weight": torch.zeros(64, 16)})
    with pytest.raises(ConversionError, match=r"wrong shapes \(1\): model.mm_projector.0.weight \(64, 16\)"):
        convert_official(tmp_path / "src", vision, tmp_path / "out", progress=False)


@pytest.mark.parametrize("changes, message", [
    ({"model_type": "llava"}, "model_type is 'llava', expected 'llava_mistral'"),
    ({"model_type": "mistral"}, "expected 'llava_mistral'"),
    ({"mm_projector_type": "qformer"}, "mm_projector_type 'qformer'"),
    ({"image_aspect_ratio": "anyres"}, "image_aspect_ratio 'anyres'"),
    ({"mm_use_im_start_end": True}, "mm_use_im_start_end"),
    ({"mm_hidden_size": 1024}, "does not match the checkpoint's mm_hidden_size 1024"),
])
def test_bad_configs_get_clear_errors(tiny_towers, tmp_path, changes, message):
    vision, lm = tiny_towers
    write_official(Path(lm), tmp_path / "src", shards=1, config_changes=changes)
    with pytest.raises(ConversionError, match=message):
        convert_official(tmp_path / "src", vision, tmp_path / "out", progress=False)


def test_bad_folders(tiny_towers, tmp_path):
    vision, lm = tiny_towers
    with pytest.raises(FileNotFoundError, match="no config.json"):
        convert_official(tmp_path, vision, tmp_path / "out")
    src = tmp_path / "src"
    write_official(Path(lm), src, shards=1)
    for f in src.glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    (src / "model.safetensors.index.json").unlink()
    with pytest.raises(ConversionError, match="pickle files are not read"):
        convert_official(src, vision, tmp_path / "out")
    next(src.glob("*.bin")).with_suffix(".safetensors").write_bytes(b"garbage, not safetensors")
    with pytest.raises(ConversionError, match="not a readable safetensors file"):
        convert_official(src, vision, tmp_path / "out")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        convert_official(src, vision, tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").exists()


def test_cli_reports_errors(tiny_towers, tmp_path, capsys):
    from llavamed_lite.cli import main

    vision, lm = tiny_towers
    write_official(Path(lm), tmp_path / "src", shards=1, config_changes={"model_type": "llava"})
    code = main(["convert-official", "--src", str(tmp_path / "src"), "--vision", vision, "--out", str(tmp_path / "o")])
    assert code == 2
    assert "expected 'llava_mistral'" in capsys.readouterr().err


def test_linear_projector_converts(tiny_towers, tmp_path):
    """v1.0-style single linear projector: kept in transformers' two-layer layout with an identity second layer."""
    vision, lm = tiny_towers
    weight, bias = torch.randn(64, 32), torch.randn(64)
    write_official(Path(lm), tmp_path / "src", shards=1, config_changes={"mm_projector_type": "linear"},
                   drop=("model.mm_projector.0.weight", "model.mm_projector.0.bias", "model.mm_projector.2.weight",
                         "model.mm_projector.2.bias"),
                   add={"model.mm_projector.weight": weight, "model.mm_projector.bias": bias})
    out = convert_official(tmp_path / "src", vision, tmp_path / "out", progress=False)
    model = AutoModelForImageTextToText.from_pretrained(out)
    features = torch.randn(3, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.model.multi_modal_projector(features), features @ weight.T + bias)


def test_evaluate_runs_unchanged_on_the_converted_model(converted, tmp_path):
    from llavamed_lite.eval.evaluate import evaluate

    out, _ = converted
    scores = evaluate(out, "vqa-rad", tmp_path / "vqa-rad", limit=3, batch_size=2, max_new_tokens=3,
                      closed_suffix=True, device="cpu", progress=False)
    assert scores["n_questions"] == 3
    assert len((tmp_path / "vqa-rad" / "answers.jsonl").read_text().splitlines()) == 3


def test_cli_converts(tiny_towers, tmp_path, capsys):
    from llavamed_lite.cli import main

    vision, lm = tiny_towers
    write_official(Path(lm), tmp_path / "src", shards=1)
    assert main(["convert-official", "--src", str(tmp_path / "src"), "--vision", vision,
                 "--out", str(tmp_path / "out")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"out": str(tmp_path / "out")}
    assert json.loads((tmp_path / "out" / "conversion.json").read_text())["projector"] == "mlp2x_gelu"


def test_tokenizer_from_elsewhere_or_a_clear_error(tiny_towers, tmp_path):
    vision, lm = tiny_towers
    write_official(Path(lm), tmp_path / "src", shards=1)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "src" / name).unlink()
    with pytest.raises(ConversionError, match="(?s)could not load the tokenizer.*--tokenizer"):
        convert_official(tmp_path / "src", vision, tmp_path / "out", progress=False)
    out = convert_official(tmp_path / "src", vision, tmp_path / "out", progress=False, tokenizer=lm)
    assert "<image>" in AutoProcessor.from_pretrained(out).tokenizer.get_vocab()


def test_a_failure_while_writing_leaves_nothing(tiny_towers, tmp_path, monkeypatch):
    from llavamed_lite.model import convert

    vision, lm = tiny_towers
    write_official(Path(lm), tmp_path / "src", shards=1)

    def disk_full(self, name, tensor):
        raise OSError("No space left on device")

    monkeypatch.setattr(convert.ShardWriter, "add", disk_full)
    with pytest.raises(OSError, match="No space left"):
        convert_official(tmp_path / "src", vision, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def _tree(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_output_overlapping_the_source_is_refused(tiny_towers, tmp_path, capsys):
    """issue 18.9: `--src X --out X --overwrite` replaced the source checkpoint."""
    from llavamed_lite.cli import main

    vision, lm = tiny_towers
    src = tmp_path / "src"
    write_official(Path(lm), src, shards=1)
    before = _tree(tmp_path)
    for out in (src, src / "converted", tmp_path):  # the same folder, inside it, around it
        assert main(["convert-official", "--src", str(src), "--vision", vision, "--out", str(out),
                     "--overwrite"]) == 2
        assert "overlap" in capsys.readouterr().err
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("shard_gb", ["0", "-1", "nan"])
def test_shard_size_must_be_positive(tiny_towers, tmp_path, capsys, shard_gb):
    """issue 18.9: `--shard-gb 0` or `-1` was accepted and wrote one file per tensor."""
    from llavamed_lite.cli import main

    vision, lm = tiny_towers
    write_official(Path(lm), tmp_path / "src", shards=1)
    assert main(["convert-official", "--src", str(tmp_path / "src"), "--vision", vision, "--out",
                 str(tmp_path / "out"), "--shard-gb", shard_gb]) == 2
    assert "--shard-gb: must be > 0" in capsys.readouterr().err and not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="shard size must be positive"):
        convert_official(tmp_path / "src", vision, tmp_path / "out", max_shard_bytes=0)


def test_a_missing_vision_folder_is_one_line(tiny_towers, tmp_path, capsys):
    """issue 18.10: a missing --vision folder ended in a traceback."""
    from llavamed_lite.cli import main

    vision, lm = tiny_towers
    write_official(Path(lm), tmp_path / "src", shards=1)
    capsys.readouterr()  # what the fixtures printed
    assert main(["convert-official", "--src", str(tmp_path / "src"), "--vision", str(tmp_path / "no-clip"),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-clip: no such folder" in err and "Traceback" not in err
