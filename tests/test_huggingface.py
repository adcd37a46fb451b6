"""HuggingFace models built from configs (convlens.huggingface), downloading nothing: ViT (also at another
size with interpolate_pos_encoding=True), ConvNeXt and Segformer, called with pixel_values=, through the
API and the CLI, geometry against the gradient oracle; a save_pretrained folder with its own weights."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

import convlens
from checks import check_against_oracle
from convlens import Inputs, hf_model
from convlens.cli import main
from convlens.loading import build_model, model_factory

pytest.importorskip("transformers")

VIT = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=32,
           patch_size=8)
CONVNEXT = dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1])
SEGFORMER = dict(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                 num_attention_heads=[1, 2], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2],
                 decoder_hidden_size=16, num_labels=3)


def _config_args(config: dict) -> list[str]:
    return [a for k, v in config.items() for a in ("--config", f"{k}={v}")]


class Call(nn.Module):
    """The oracle's one-input stand-in: the model called with keyword arguments."""

    def __init__(self, model: nn.Module, **kwargs):
        super().__init__()
        self.model = model
        self.kwargs = kwargs

    def forward(self, x):
        return self.model(pixel_values=x, **self.kwargs)


def _stages(report: convlens.Report, depth: int = 2) -> list[str]:
    return [layer.name for layer in report if layer.depth <= depth]


@pytest.mark.parametrize("size, kwargs", [(32, {}), (48, {"interpolate_pos_encoding": True})])
def test_vit_with_pixel_values_matches_the_oracle(size, kwargs):
    torch.manual_seed(0)
    model = hf_model("vit", **VIT)
    shape = (1, 3, size, size)
    report = convlens.analyze(model, Inputs(pixel_values=shape, **kwargs))
    assert {"[last_hidden_state]", "[pooler_output]"} <= {layer.name for layer in report}  # (ModelOutput fields)
    checked = check_against_oracle(Call(model, **kwargs), shape, report=report, prefix="model.",
                                   rows=_stages(report))
    assert checked.windows > 0 and checked.shapes > 0, checked
    assert report["embeddings"].output_shape[1] == (size // 8) ** 2 + 1  # (patches and the class token)


def test_vit_at_another_size_without_interpolation_is_the_models_own_error():
    with pytest.raises(convlens.ConvlensError, match=r"the model fails on inputs pixel_values=1x3x48x48: .*"):
        convlens.analyze(hf_model("vit", **VIT), Inputs(pixel_values=(1, 3, 48, 48)))


def test_convnext_matches_the_oracle():
    model = hf_model("convnext", **CONVNEXT)
    report = convlens.analyze(model, Inputs(pixel_values=(1, 3, 64, 64)))
    checked = check_against_oracle(Call(model), (1, 3, 64, 64), report=report, prefix="model.", rows=_stages(report))
    assert checked.windows > 0 and checked.shapes > 0, checked


def test_segformer_for_segmentation_matches_the_oracle():
    model = hf_model("segformer", "SegformerForSemanticSegmentation", **SEGFORMER)
    report = convlens.analyze(model, Inputs(pixel_values=(1, 3, 32, 32)))
    assert report.output.name == "[logits]"
    checked = check_against_oracle(Call(model), (1, 3, 32, 32), report=report, prefix="model.", rows=_stages(report))
    assert checked.windows > 0, checked


@pytest.mark.parametrize("spec, config, argv, inputs", [
    ("hf:vit", VIT, ["--input", "pixel_values=3x48x48", "--kwarg", "interpolate_pos_encoding=true"],
     Inputs(pixel_values=(1, 3, 48, 48), interpolate_pos_encoding=True)),
    ("hf:convnext", CONVNEXT, ["--input", "pixel_values=3x64x64"], Inputs(pixel_values=(1, 3, 64, 64))),
    ("hf:segformer:SegformerForSemanticSegmentation", SEGFORMER, ["--input", "3x32x32"], (1, 3, 32, 32)),
])
def test_the_cli_gives_the_api_report(capsys, spec, config, argv, inputs):
    assert main(["analyze", spec, *_config_args(config), *argv, "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    name, _, cls = spec.removeprefix("hf:").partition(":")
    want = convlens.analyze(hf_model(name, cls or None, **config), inputs)
    assert got["layers"] == json.loads(want.to_json())["layers"]


def test_the_default_input_is_the_configs_image_size(capsys):
    assert main(["analyze", "hf:vit", *_config_args(VIT), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_shape"] == [1, 3, 32, 32]


def test_a_save_pretrained_folder_builds_its_class_with_its_weights(tmp_path, capsys):
    from transformers import ViTForImageClassification

    torch.manual_seed(2)
    saved = hf_model("vit", "ViTForImageClassification", num_labels=5, **VIT)
    saved.save_pretrained(tmp_path)
    built = build_model(model_factory(f"hf:{tmp_path}"), on_meta=False)
    assert isinstance(built, ViTForImageClassification)
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), built.state_dict().values()))
    on_meta = build_model(model_factory(f"hf:{tmp_path}"), on_meta=True)
    assert next(on_meta.parameters()).device.type == "meta"  # (analysis needs no weights: none are read)
    assert main(["analyze", f"hf:{tmp_path}", "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["layers"][0]["name"] == "[logits]" and got["layers"][0]["output_shape"] == [1, 5]


@pytest.mark.parametrize("argv, message", [
    (["hf:vitt"], "no model type; did you mean vit"),
    (["hf:vit", "--config", "hiden_size=16"], "the vit config has no key 'hiden_size'; did you mean hidden_size"),
    (["hf:vit:ViTForNothing"], "transformers has no model class 'ViTForNothing'"),
    (["hf:vit", "--config", "hidden_size"], "bad --config 'hidden_size'"),
    (["hf:"], "hf: needs a model type or a folder"),
    (["torchvision:resnet18", "--config", "a=1"], "--config applies to hf: models only"),
])
def test_bad_hf_models_get_one_line(capsys, argv, message):
    assert main(["analyze", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
