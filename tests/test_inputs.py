"""Models called with several inputs, keyword and dict inputs, integer tensors and constant arguments
(convlens.inputs): geometry checked against the gradient oracle on a one-input stand-in that calls the
model on the grid input with the other inputs fixed; costs against torch's flop counter; the CLI's
--input/--kwarg/--grid against the API."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import convlens
from checks import check_against_oracle
from convlens import Const, Inputs, TensorSpec
from convlens.cli import main
from untouched import assert_untouched, snapshot


class Stereo(nn.Module):
    """A stereo net: one encoder shared by both images, their features joined, a head; ``scale`` a
    constant argument."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(8, 1, 4, 2, 1))

    def forward(self, left, right, scale: float = 1.0):
        return self.head(torch.cat([self.encoder(left), self.encoder(right)], 1)) * scale


class RGBD(nn.Module):
    """A dict input: an image, a depth map at half resolution and an integer class label."""

    def __init__(self):
        super().__init__()
        self.rgb = nn.Conv2d(3, 6, 5, stride=2, padding=2)
        self.depth = nn.Conv2d(1, 6, 3, padding=1)
        self.label = nn.Embedding(10, 6)
        self.fuse = nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, batch):
        x = self.rgb(batch["image"]) + self.depth(batch["depth"])
        return self.fuse(x + self.label(batch["label"])[..., None, None])


class Call(nn.Module):
    """The oracle's one-input stand-in: calls ``model`` with the grid input in the place ``call`` puts it,
    the other inputs fixed (buffers, so that ``.double()`` converts the floating ones)."""

    def __init__(self, model: nn.Module, call, **fixed: torch.Tensor):
        super().__init__()
        self.model = model
        self.call = call
        for name, t in fixed.items():
            self.register_buffer(name, t)

    def forward(self, x):
        return self.call(self.model, x, self)


def test_stereo_geometry_in_either_image_matches_the_oracle():
    torch.manual_seed(0)
    model = Stereo()
    shape = (1, 3, 24, 20)
    for grid, call in (("left", lambda m, x, f: m(x, f.other, scale=0.5)),
                       ("right", lambda m, x, f: m(f.other, x, scale=0.5))):
        report = convlens.analyze(model, Inputs(left=shape, right=shape, scale=0.5), grid=grid)
        checked = check_against_oracle(Call(model, call, other=torch.randn(shape)), shape, report=report,
                                       prefix="model.")
        assert checked.windows > 20 and checked.shapes == len(report), checked
        assert report.input_shape == shape and [i.grid for i in report.inputs] == [grid == "left", grid == "right"]
        # the encoder's call on the other image does not move over the grid: its rows say so
        other = "encoder#2" if grid == "left" else "encoder"
        assert all(f"does not depend on the grid input {grid!r}" in n for n in report[other].notes)
        assert report[other].window(3, 3) is None
    # positional inputs are named by the forward's parameters
    report = convlens.analyze(model, Inputs(shape, TensorSpec(shape)), grid="right")
    assert [i.name for i in report.inputs] == ["left", "right"]


def test_dict_input_with_an_integer_tensor_matches_the_oracle():
    torch.manual_seed(1)
    model = RGBD()
    shape, depth = (1, 3, 16, 12), (1, 1, 8, 6)
    inputs = Inputs({"image": shape, "depth": depth, "label": TensorSpec((1,), torch.int64)})
    report = convlens.analyze(model, inputs, grid="batch[image]")
    label = torch.tensor([3])
    stand_in = Call(model, lambda m, x, f: m({"image": x, "depth": f.depth, "label": f.label}),
                    depth=torch.randn(depth), label=label)
    checked = check_against_oracle(stand_in, shape, report=report, prefix="model.")
    assert checked.windows > 10 and checked.shapes == len(report)
    assert [(i.name, i.dtype) for i in report.inputs] == [
        ("batch[image]", torch.float32), ("batch[depth]", torch.float32), ("batch[label]", torch.int64)]
    # the depth map carries the grid just as well (at its own resolution)
    report = convlens.analyze(model, inputs, grid="batch[depth]")
    stand_in = Call(model, lambda m, x, f: m({"image": f.image, "depth": x, "label": f.label}),
                    image=torch.randn(shape), label=label)
    assert check_against_oracle(stand_in, depth, report=report, prefix="model.").windows > 10


def test_costs_count_every_input():
    model = Stereo()
    shape = (2, 3, 32, 32)
    report = convlens.analyze(model, Inputs(left=shape, right=shape), grid="left")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(shape), torch.randn(shape))
    assert 2 * report.totals.macs == counter.get_total_flops()


def test_peak_memory_holds_every_input_from_the_start():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)

        def forward(self, a, b):
            return self.conv(a) + b

    # (float32 1x1x4x4: 64 B each) a and b from the start: 128; the conv's output: 192, then a is
    # freed: 128; the sum: 192; the model's output stays
    report = convlens.analyze(Two(), Inputs(a=(1, 1, 4, 4), b=(1, 1, 4, 4)), grid="a")
    assert report.totals.peak_activation_bytes == 192


def test_the_model_is_left_as_it_was():
    model = RGBD()
    before = snapshot(model)
    convlens.analyze(model, Inputs({"image": (1, 3, 16, 16), "depth": (1, 1, 8, 8),
                                    "label": TensorSpec((1,), torch.int64)}), grid="batch[image]")
    assert_untouched(before, model, "analyze with a dict input")


def test_example_tensors_give_shape_and_dtype_and_constants_pass_as_given():
    seen = {}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x, size, mode="nearest"):
            seen.update(size=size, mode=mode)
            return nn.functional.interpolate(self.conv(x), size=size, mode=mode)

    report = convlens.analyze(Net(), Inputs(torch.randn(1, 3, 10, 10), Const((16, 16)), mode="bilinear"))
    assert seen == {"size": (16, 16), "mode": "bilinear"}
    assert report.output.output_shape == (1, 4, 16, 16) and report.inputs[0].shape == (1, 3, 10, 10)


def test_a_model_that_reads_an_input_falls_back_to_one_real_run():
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x, keep):
            return self.conv(x) if bool(keep.all()) else x  # (reads the mask's values)

    report = convlens.analyze(Gate(), Inputs((1, 3, 8, 8), TensorSpec((1,), torch.bool)))
    assert report.backend == "cpu" and report.output.rf == (3, 3)  # (a mask given by shape keeps everything)


@pytest.mark.parametrize("inputs, grid, message", [
    (Inputs(left=(1, 3, 8, 8), right=(1, 3, 8, 8)), None, "several inputs could carry the pixel grid"),
    (Inputs(left=(1, 3, 8, 8), right=(1, 3, 8, 8)), "middle", "no input is named 'middle'"),
    (Inputs(left=(1, 3, 8, 8), right=(1, 3, 8, 8), scale=TensorSpec((4,))), "scale", "cannot carry the pixel grid"),
    (Inputs(left=TensorSpec((1, 3, 8, 8), torch.int64), right=(1, 8)), None, "no input carries a pixel grid"),
    (Inputs(scale=2.0), None, "holds no tensor"),
    (Inputs(left=(1, 3, 0, 8), right=(1, 3, 8, 8)), None, "sizes from 1"),
])
def test_bad_inputs_get_one_line(inputs, grid, message):
    with pytest.raises(convlens.ConvlensError, match=message):
        convlens.analyze(Stereo(), inputs, grid=grid)


def test_the_models_own_error_names_the_inputs():
    with pytest.raises(convlens.ConvlensError, match=r"inputs left=1x3x8x8, right=1x4x8x8: .*check the inputs"):
        convlens.analyze(Stereo(), Inputs(left=(1, 3, 8, 8), right=(1, 4, 8, 8)), grid="left")


STEREO = f"{__file__}:Stereo"
RGBD_MODEL = f"{__file__}:RGBD"


def _json(capsys, *argv) -> dict:
    assert main(["analyze", *argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_inputs_give_the_api_report(capsys):
    got = _json(capsys, STEREO, "--input", "left=3x24x20", "--input", "right=3x24x20", "--grid", "right",
                "--kwarg", "scale=0.5", "--batch", "2")
    want = convlens.analyze(Stereo(), Inputs(left=(2, 3, 24, 20), right=(2, 3, 24, 20), scale=0.5), grid="right")
    assert got["layers"] == json.loads(want.to_json())["layers"]
    assert [(i["name"], i["shape"], i["grid"]) for i in got["inputs"]] == [
        ("left", [2, 3, 24, 20], False), ("right", [2, 3, 24, 20], True)]
    positional = _json(capsys, STEREO, "--input", "3x24x20", "--input", "3x24x20", "--grid", "right")
    assert positional["layers"][0]["rf"] == got["layers"][0]["rf"]
    got = _json(capsys, RGBD_MODEL, "--input", "batch[image]=3x16x12", "--input", "batch[depth]=1x8x6",
                "--input", "batch[label]=:int64", "--grid", "batch[image]")
    want = convlens.analyze(RGBD(), Inputs({"image": (1, 3, 16, 12), "depth": (1, 1, 8, 6),
                                            "label": TensorSpec((1,), torch.int64)}), grid="batch[image]")
    assert got["layers"] == json.loads(want.to_json())["layers"]
    assert got["inputs"][2]["dtype"] == "int64"


def test_cli_table_names_the_inputs(capsys):
    assert main(["analyze", STEREO, "--input", "left=3x16x16", "--input", "right=3x16x16", "--grid", "left"]) == 0
    out = capsys.readouterr().out
    assert "on left=1x3x16x16 (grid), right=1x3x16x16" in out
    row = next(line for line in out.splitlines() if "encoder#2" in line)
    assert " - " in row and "⚠" not in row  # (the other image's encoder: no geometry over the grid, no warning)


@pytest.mark.parametrize("argv, message", [
    (["--input", "left=3x16x16", "--input", "right=3x16x16"], "several inputs could carry the pixel grid"),
    (["--input", "left=3x16x16:int65"], "'int65' is no torch dtype"),
    (["--input", "left=3y16"], "bad --input 'left=3y16'"),
    (["--input", "left=3x16x16", "--kwarg", "scale"], "bad --kwarg 'scale'"),
    (["--input", "left=3x16x16", "--kwarg", "left=1"], "also an --input"),
    (["--input", "left=3x16x16", "--input", "left=3x16x16"], "given twice"),
    (["--input", "x[1]=3x16x16"], "numbered 0, 1, ..."),
])
def test_cli_bad_inputs_exit_2_with_one_line(capsys, argv, message):
    assert main(["analyze", STEREO, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_erf_takes_one_shape(capsys):
    assert main(["erf", STEREO, "--input", "3x16x16", "--input", "3x16x16"]) == 2
    assert "erf takes one input shape" in capsys.readouterr().err


def test_the_report_keeps_working_on_the_grid_input():
    report = convlens.analyze(Stereo(), Inputs(left=(1, 3, 16, 16), right=(1, 3, 16, 16)), grid="left")
    cov = report.coverage("encoder", (3, 3))
    assert cov.map.shape == (16, 16) and cov.window == report["encoder"].window(3, 3)
    assert report.to_dict()["inputs"][0] == {"name": "left", "shape": [1, 3, 16, 16],
                                                             "dtype": "float32", "grid": True}
