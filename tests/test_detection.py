"""torchvision's detection models on meta, from image sizes: the transform's resize is part of the
geometry (backbone and FPN windows in the user's input pixels, against the gradient oracle); the analysis
stops at the first op whose output's size depends on the data (nonzero, nms, boolean indexing), names it
and the calls it cut short, and gives the cost of what ran before it (against torch's flop counter)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import convlens
from checks import check_against_oracle
from convlens.cli import main

tvd = pytest.importorskip("torchvision.models.detection")

MODELS = ["fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
          "fasterrcnn_mobilenet_v3_large_320_fpn", "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2",
          "keypointrcnn_resnet50_fpn", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn",
          "ssd300_vgg16", "ssdlite320_mobilenet_v3_large"]


def _build(name: str, meta: bool = True, **kwargs) -> nn.Module:
    with torch.device("meta" if meta else "cpu"):
        return getattr(tvd, name)(weights=None, weights_backbone=None, **kwargs).eval()


def test_every_detection_model_in_torchvision_is_here():
    import torchvision.models as tvm
    assert sorted(tvm.list_models(module=tvm.detection)) == sorted(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_detection_models_analyze_on_meta_and_stop_at_the_data(name):
    model = _build(name)
    for size in (320, 512):
        report = convlens.analyze(model, (1, 3, size, size))
        stop = report.stopped
        assert report.backend == "meta" and stop is not None
        assert stop.op in ("aten.nonzero", "aten.index.Tensor") and "" in stop.cut
        assert report.notes[0].startswith(f"stopped: {stop.op} in ")
        assert report.totals.macs is None and report.totals.before_stop.macs > 0
        assert "stopped" in report.to_dict() and report.to_dict()["totals"]["macs"] is None
        with pytest.raises(convlens.ConvlensError, match="the model's output depends on the data"):
            report.output  # noqa: B018
        # the backbone ran whole: its rows are there, in the user's pixels (the transform's resize included)
        backbone = [layer for layer in report if layer.name.startswith("backbone") and layer.depth == 1]
        assert backbone and all(layer.input_size == (size, size) for layer in backbone)


def test_an_image_without_its_batch_is_refused():
    # (a list of one 3x320x320 image would read as N=3, C=320 and one spatial axis: the transform resizes
    # image[None], so the model itself says the image had no batch dim)
    with pytest.raises(convlens.ConvlensError, match=r"treats the input \(3, 320, 320\) as unbatched .*"
                                                     r"write \(1, 3, 320, 320\)"):
        convlens.analyze(_build("fasterrcnn_resnet50_fpn"), convlens.Inputs([(3, 320, 320)]))


def _stand_in(model: nn.Module) -> nn.Module:
    """The oracle's one-input model: the detector's own transform, then its backbone (what the
    detector's forward runs first), at the module path ``model``."""
    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model.backbone(self.model.transform(list(x))[0].tensors)
    return Backbone()


@pytest.mark.parametrize("name, kwargs, size", [
    ("fasterrcnn_resnet50_fpn", dict(min_size=320, max_size=533), 256),  # resized up by 5/4
    ("fasterrcnn_mobilenet_v3_large_320_fpn", {}, 512),  # resized down by 5/8
    ("ssdlite320_mobilenet_v3_large", {}, 400),  # SSD's own fixed-size resize, 400 to 320
])
def test_backbone_and_fpn_windows_match_the_oracle_in_input_pixels(name, kwargs, size):
    torch.manual_seed(0)
    model = _build(name, meta=False, **kwargs).double()
    shape = (1, 3, size, size)
    report = convlens.analyze(model, shape)
    rows = [layer.name for layer in report if layer.name.startswith(("backbone[", "backbone.body[", "backbone.fpn["))]
    assert len(rows) >= 2, [layer.name for layer in report if layer.depth <= 1]
    rows = rows[:1] + rows[-2:] + [r for r in rows if r.startswith("backbone.fpn[")][:1]
    checked = check_against_oracle(_stand_in(model), shape, report=report, prefix="model.", rows=rows)
    assert checked.windows >= 10 and not [s for s in checked.skipped if "unknown" in s], checked


def test_the_cost_before_the_stop_is_torchs_count():
    torch.manual_seed(0)
    model = _build("fasterrcnn_mobilenet_v3_large_320_fpn", meta=False)
    report = convlens.analyze(model, (1, 3, 320, 320))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model([torch.rand(3, 320, 320)])
    counts = counter.get_flop_counts()
    for row, module in (("backbone", "FasterRCNN.backbone"), ("rpn.head", "FasterRCNN.rpn.head")):
        first = next(layer for layer in report if layer.name.split("[")[0] == row)  # (a call's rows share its cost)
        assert 2 * first.macs == sum(counts[module].values()), row
    assert report.totals.before_stop.macs <= sum(counts["Global"].values()) // 2


def test_the_model_is_left_as_it_was():
    from untouched import assert_untouched, snapshot
    model = _build("retinanet_resnet50_fpn", meta=False)
    before = snapshot(model)
    convlens.analyze(model, (1, 3, 320, 320))
    assert_untouched(before, model, "analyze of a detection model")


def test_the_cli_names_the_stop(capsys):
    assert main(["analyze", "torchvision:fcos_resnet50_fpn", "--input", "3x320x320", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "note: stopped: aten.index.Tensor in the model (FCOS)" in out
    assert "output: depends on the data" in out and "before it: MACs" in out
