"""Device, dtype and 4-bit decided in one place (model/placement.py), and a composed model kept on one device. No GPU
here: "cuda" is faked where only the decision is tested, and `meta` stands for a device the LM sits on apart."""

import json

import pytest
import torch
from PIL import Image
from transformers import LlavaForConditionalGeneration

from llavamed_lite.cli import main as cli_main
from llavamed_lite.config import load_config
from llavamed_lite.data import curate
from llavamed_lite.data.curate import image_classifier_for
from llavamed_lite.eval import evaluate
from llavamed_lite.eval.generate import answer_questions
from llavamed_lite.eval.vqa import load_vqa_rad
from llavamed_lite.model import compose
from llavamed_lite.model.compose import compose_llava, load_llava
from llavamed_lite.model.lora import is_4bit
from llavamed_lite.model.placement import (NOT_QUANTISED, join_towers, model_device, quantization_config,
                                           resolve_device, resolve_dtype)
from llavamed_lite.serve.chat import chat
from llavamed_lite.train.samples import generate_captions


@pytest.fixture
def fake_gpu(monkeypatch):
    """torch believes a GPU (index 0) is there: enough for the decisions, which never touch it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


def test_auto_device_is_the_gpu_when_there_is_one(fake_gpu):
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)  # a bare "cuda" compares equal to where tensors are
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_device_is_the_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="device 'cuda': torch sees no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")


def test_auto_dtype_follows_the_device(fake_gpu, monkeypatch):
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", resolve_device("auto")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100
    assert resolve_dtype("auto", "cuda") == torch.float16
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16 and resolve_dtype(torch.float16) == torch.float16
    with pytest.raises(ValueError, match="unknown dtype 'float64'"):
        resolve_dtype("float64")


def test_one_4bit_config_leaves_towers_projector_and_head_unquantised():
    q = quantization_config(torch.float32)
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16  # the 4-bit kernels compute in 16 bits
    assert quantization_config("float16").bnb_4bit_compute_dtype == torch.float16
    assert q.llm_int8_skip_modules == NOT_QUANTISED == ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


def test_towers_join_the_language_model_s_device(tiny_towers):
    """As when bitsandbytes puts the LM on cuda:0 and CLIP and the projector stay on the CPU (`meta` plays cuda:0)."""
    model, _ = compose_llava(*tiny_towers)
    model.model.language_model.to("meta")
    model.lm_head.to("meta")
    assert model.device == torch.device("cpu")  # the first parameter's: the wrong place for the inputs
    assert model_device(model) == torch.device("meta")
    assert join_towers(model) == torch.device("meta")
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_compose_in_4bit_is_one_model_on_one_device(tiny_towers, monkeypatch):
    joined = []
    monkeypatch.setattr(compose, "join_towers", lambda model: joined.append(model) or join_towers(model))
    model, processor = compose_llava(*tiny_towers, dtype="bfloat16", load_in_4bit=True)
    assert joined == [model]  # the towers follow the LM wherever it loaded (the test above: meta for cuda:0)
    four_bit = {name for name, m in model.named_modules() if type(m).__name__ == "Linear4bit"}
    assert four_bit and all(".language_model.layers." in name for name in four_bit)  # towers, projector, head: not
    assert is_4bit(model) and model.model.vision_tower.dtype == torch.bfloat16
    assert {p.device for p in model.parameters()} == {model_device(model)}
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]}]
    inputs = processor(images=Image.new("RGB", (32, 32)), text=processor.apply_chat_template(
        messages, add_generation_prompt=True), return_tensors="pt")
    assert model.generate(**inputs, max_new_tokens=2, do_sample=False).shape[1] == inputs["input_ids"].shape[1] + 2


def test_load_llava_defaults_to_float32_on_the_cpu_and_loads_4bit(tiny_llava_dir):
    model, _ = load_llava(tiny_llava_dir)
    assert model.dtype == torch.float32 and model_device(model) == torch.device("cpu")
    quantised, _ = load_llava(tiny_llava_dir, load_in_4bit=True)
    assert is_4bit(quantised)
    assert type(quantised.model.multi_modal_projector.linear_1).__name__ == "Linear"
    assert type(quantised.lm_head).__name__ == "Linear"


@pytest.fixture
def loads(monkeypatch):
    """The keyword arguments of every load_llava call, the load itself going ahead."""
    calls, load = [], compose.load_llava

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return load(*args, **kwargs)
    monkeypatch.setattr(compose, "load_llava", spy)
    monkeypatch.setattr(evaluate, "load_llava", spy)  # `evaluate` imports it at its top
    return calls


def test_evaluate_4bit_option_answers_with_a_4bit_model(tiny_llava_dir, tmp_path, loads, capsys):
    args = ["evaluate", "--benchmark", "vqa-rad", "--model", str(tiny_llava_dir), "--out", str(tmp_path),
            "--limit", "1", "--max-new-tokens", "1"]
    assert cli_main(args + ["--4bit"]) == 0
    assert loads[-1] == {"dtype": "auto", "device": "auto", "load_in_4bit": True}
    assert json.loads(capsys.readouterr().out)["n_questions"] == 1
    args[args.index("--out") + 1] = str(tmp_path / "bf16")
    assert cli_main(args + ["--load-in-4bit", "--dtype", "bfloat16"]) == 0
    assert loads[-1]["load_in_4bit"] and loads[-1]["dtype"] == "bfloat16"


@pytest.mark.parametrize("command", [["evaluate", "--benchmark", "vqa-rad", "--out", "OUT"], ["chat"]])
def test_commands_refuse_a_device_that_is_not_there(tiny_llava_dir, tmp_path, capsys, monkeypatch, command):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = [a.replace("OUT", str(tmp_path)) for a in command] + ["--model", str(tiny_llava_dir)]
    assert cli_main(args + ["--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torch sees no CUDA GPU" in err[0] and "Traceback" not in err[0]
    assert cli_main(args + ["--device", "gpu"]) == 2
    assert "unknown device 'gpu'" in capsys.readouterr().err


def test_inputs_go_to_the_embeddings_device_not_model_device(tiny_llava, tmp_path, monkeypatch):
    """Stage samples, evaluation and chat move their inputs with `model_device`: `model.device` names the vision
    tower's device, wrong when the LM sits apart. Here `model.device` is made to lie; answers must not change."""
    model, processor = tiny_llava
    items = load_vqa_rad("test")[:2]
    image = Image.new("RGB", (32, 32), "white")
    image.save(tmp_path / "white.png")
    expected = answer_questions(model, processor, items, max_new_tokens=2)
    captions = generate_captions(model, processor, [tmp_path / "white.png"], max_new_tokens=2)
    answer = chat(model, processor, image, [], "What is shown?", max_new_tokens=2)
    monkeypatch.setattr(LlavaForConditionalGeneration, "device", property(lambda self: torch.device("meta")))
    assert answer_questions(model, processor, items, max_new_tokens=2) == expected
    assert generate_captions(model, processor, [tmp_path / "white.png"], max_new_tokens=2) == captions
    assert chat(model, processor, image, [], "What is shown?", max_new_tokens=2) == answer


def test_curation_s_image_classifier_takes_the_gpu_when_auto(fake_gpu, monkeypatch):
    """Curation used to read device "auto" as the CPU even with a GPU there."""
    devices = []
    monkeypatch.setattr(curate, "ImageDomainClassifier", lambda model, device, **kwargs: devices.append(device))
    image_classifier_for("a-clip-checkpoint", load_config("lora"))
    assert devices == [torch.device("cuda", 0)]
