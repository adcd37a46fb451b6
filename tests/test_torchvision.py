"""Real models: every torchvision classifier and segmenter analyzes; stage outputs match the oracle."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm

import convlens
from convlens.loading import build_model, model_factory
from checks import check_against_oracle
from oracle import probe

NAMES = tvm.list_models(module=tvm) + tvm.list_models(module=tvm.segmentation)


@pytest.mark.parametrize("size", [224, 513])
@pytest.mark.parametrize("name", NAMES)
def test_every_torchvision_model_analyzes_or_says_why(name, size):
    model = build_model(model_factory(f"torchvision:{name}"))
    try:
        report = convlens.analyze(model, (1, 3, size, size))
    except convlens.ConvlensError as e:
        # the only accepted failure: torch itself rejects the input size (checked on a real forward)
        assert "fails on input shape" in str(e)
        real = build_model(model_factory(f"torchvision:{name}"), on_meta=False).eval()
        with pytest.raises(Exception), torch.no_grad():
            real(torch.zeros(1, 3, size, size))
        return
    assert len(report) > 0
    for layer in report:
        if any(rf is None for rf in layer.rf) and any("unknown" in n for n in layer.notes):
            assert report.unsupported_ops, "unknown axes must come with a named op"


STAGES = {
    "alexnet": ((1, 3, 127, 127), ["features.2", "features.5", "features.12", "avgpool", "classifier.6"]),
    "vgg16": ((1, 3, 64, 64), ["features.4", "features.16", "features.30"]),
    "resnet50": ((1, 3, 96, 96), ["maxpool", "layer1", "layer2", "layer3", "layer4", "fc"]),
    "mobilenet_v2": ((1, 3, 96, 96), ["features.1", "features.3", "features.7", "features.14", "features.18"]),
    "inception_v3": ((1, 3, 299, 299), ["Conv2d_2b_3x3", "maxpool2", "Mixed_5b", "Mixed_6a", "Mixed_7c"]),
    "deeplabv3_resnet50": ((1, 3, 65, 65), ["backbone.layer1", "backbone.layer4", "classifier.0", "[out]"]),
}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_outputs_match_the_oracle(name):
    shape, rows = STAGES[name]
    model = build_model(model_factory(f"torchvision:{name}"), on_meta=False).eval()
    checked = check_against_oracle(model, shape, rows=rows)
    assert checked.windows >= len(rows), checked


def test_resnet50_receptive_field_is_427_not_the_serial_sum():
    model = build_model(model_factory("torchvision:resnet50"), on_meta=False).eval()
    report = convlens.analyze(model, (1, 3, 480, 480))
    layer = report["layer4"]
    centre = (layer.output_shape[2] // 2, layer.output_shape[3] // 2)
    unbounded = layer.window(*centre, clipped=False)
    assert all(0 <= lo and hi < 480 for lo, hi in unbounded)  # interior: nothing clipped
    got = probe(model, (1, 3, 480, 480), "layer4", centre, inputs=1)
    assert [tuple(b) for b in got.bbox] == list(unbounded)
    assert layer.rf == (427, 427) == tuple(hi - lo + 1 for lo, hi in got.bbox)
