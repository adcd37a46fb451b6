"""The Python API as a user meets it: rows and names, windows, JSON/CSV/DataFrame, errors."""

from __future__ import annotations

import csv
import io
import json
from fractions import Fraction

import pytest
import torch
import torch.nn as nn

import convlens
from oracle import probe, torch_shapes


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.pool = nn.MaxPool2d(2, return_indices=True)

    def forward(self, x):
        y, idx = self.pool(self.conv(x))
        return {"out": y, "idx": idx}


def test_rows_are_module_calls_in_order_with_tuple_and_dict_suffixes():
    report = convlens.analyze(TupleOut(), (1, 2, 10, 10))
    names = [layer.name for layer in report]
    assert names == ["[out]", "[idx]", "conv", "pool[0]", "pool[1]"]
    assert report["[out]"] is report.layers[0]
    assert report["conv"].depth == 1 and report["[out]"].depth == 0


def test_unknown_row_name_is_one_clear_error():
    report = convlens.analyze(nn.Conv2d(1, 1, 3), (1, 1, 8, 8))
    with pytest.raises(convlens.ConvlensError, match="no row named 'conv9'"):
        report["conv9"]


def test_user_model_is_not_modified():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    convlens.analyze(model, (2, 1, 9, 9))
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_window_clipped_unbounded_and_padding_share_against_oracle():
    model = nn.Sequential(nn.Conv2d(1, 1, 5, padding=2), nn.Conv2d(1, 1, 3, stride=2, padding=1))
    report = convlens.analyze(model, (1, 1, 12, 12))
    layer = report[""]
    got = probe(model, (1, 1, 12, 12), "", (0, 5))
    assert list(layer.window(0, 5)) == [tuple(b) for b in got.bbox]
    # unbounded window of the corner unit: rf 7 around centre 0 (hand: (5-1) + 2*(3-1) + 1 = 7 wide at stride 2)
    (lo0, hi0), (lo1, hi1) = layer.window(0, 0, clipped=False)
    assert hi0 - lo0 + 1 == layer.rf[0] and lo0 < 0
    # share of the corner unit's 7x7 window that lies outside the 12x12 input: (4*4 real of 49)
    real = sum(1 for i in range(lo0, hi0 + 1) for j in range(lo1, hi1 + 1) if 0 <= i < 12 and 0 <= j < 12)
    assert layer.padding_share(0, 0) == pytest.approx(1 - real / ((hi0 - lo0 + 1) * (hi1 - lo1 + 1)))
    with pytest.raises(convlens.ConvlensError, match="outside"):
        layer.window(0, 99)
    with pytest.raises(convlens.ConvlensError, match="one integer index per spatial axis"):
        layer.window(0)


def test_json_contract():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.Upsample(scale_factor=2), nn.AdaptiveAvgPool2d(1))
    report = convlens.analyze(model, (2, 3, 16, 16))
    data = json.loads(report.to_json())
    assert set(data) >= {"model", "input_shape", "layers", "totals"}
    assert data["input_shape"] == [2, 3, 16, 16]
    assert set(data["totals"]) == {"params", "macs", "flops", "bias_flops", "peak_activation_bytes"}
    keys = {"name", "op", "type", "args", "depth", "output_shape", "rf", "stride", "offset", "params", "macs", "flops",
            "bias_flops", "activation_bytes", "aligned", "global_context", "notes"}
    shapes = torch_shapes(model, (2, 3, 16, 16))
    for row, layer in zip(data["layers"], report):
        assert set(row) == keys
        assert row["output_shape"] == list(shapes[layer.name])
        assert row["flops"] == 2 * row["macs"]
    up = data["layers"][2]
    assert up["op"] == "upsample_nearest2d"
    assert up["stride"] == ["1", "1"]  # 2 after the conv, halved by the upsample: exact strings
    assert data["layers"][0]["rf"] == ["global", "global"] and data["layers"][0]["stride"] == ["global", "global"]
    assert data["layers"][0]["op"] == "Sequential"


def test_fractional_stride_is_a_p_over_q_string():
    report = convlens.analyze(nn.ConvTranspose1d(1, 1, 4, stride=3), (1, 1, 10))
    assert report[""].stride == (Fraction(1, 3),)
    assert json.loads(report.to_json())["layers"][0]["stride"] == ["1/3"]


def test_csv_holds_every_row_and_dataframe_matches():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3, dilation=2))
    report = convlens.analyze(model, (1, 1, 20, 20))
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert [r["name"] for r in rows] == [layer.name for layer in report]
    assert rows[3]["rf"] == "x".join(str(v) for v in report["2"].rf)
    df = report.to_dataframe()
    assert list(df["name"]) == [layer.name for layer in report]
    assert list(df["macs"]) == [layer.macs for layer in report]


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 0, 4), (1, 3, 4, 4, 4, 4), "1x3x4"])
def test_bad_input_shape_is_one_line(shape):
    with pytest.raises(convlens.ConvlensError) as e:
        convlens.analyze(nn.Conv2d(3, 1, 1), shape)
    assert "\n" not in str(e.value)


def test_model_that_fails_on_the_input_says_so():
    with pytest.raises(convlens.ConvlensError, match="fails on input shape"):
        convlens.analyze(nn.Conv2d(3, 1, 5), (1, 4, 8, 8))


def test_data_dependent_model_falls_back_to_a_real_run_and_says_so():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            y = self.conv(x)
            return y * 2 if y.sum().item() > -1e9 else y

    report = convlens.analyze(Branchy(), (1, 1, 8, 8))
    assert report.backend == "cpu"
    assert any("cannot run on meta" in n for n in report.notes)
    assert report["conv"].rf == (3, 3)


def test_op_without_rule_is_named_in_report_and_rows():
    class Gather(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)
            self.after = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            y = self.conv(x)
            return self.after(torch.index_select(y, 3, torch.tensor([3, 1, 0, 2, 4])))

    report = convlens.analyze(Gather(), (1, 1, 10, 10))
    assert "aten.index_select.default" in report.unsupported_ops
    assert any("index_select" in n for n in report.notes)
    assert report["conv"].rf == (3, 3)
    assert report["after"].rf == (None, None)
    assert any("aten.index_select" in n for n in report["after"].notes)
    with pytest.raises(convlens.ConvlensError, match="unknown"):
        report["after"].window(0, 0)


@pytest.mark.parametrize("model", [nn.Conv2d(3, 4, 3), nn.ConvTranspose2d(3, 2, 2), nn.Sequential(nn.MaxPool2d(2)),
                                   nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(3, 1, 1))])
def test_an_input_the_model_takes_as_unbatched_is_refused(model):
    # torch runs a 2-D conv or pool on (C, H, W) as one unbatched image; convlens would read it as
    # (N, C, L), a 1-D analysis of a 2-D net
    with pytest.raises(convlens.ConvlensError, match=r"treats the input \(3, 16, 16\) as unbatched.*"
                                                     r"write \(1, 3, 16, 16\) \(on the CLI: --input 3x16x16\)"):
        convlens.analyze(model, (3, 16, 16))
    assert convlens.analyze(model, (1, 3, 16, 16))[""].output_shape[0] == 1


def test_the_same_dims_batched_for_a_1d_conv_are_fine():
    report = convlens.analyze(nn.Conv1d(16, 4, 3), (3, 16, 16))  # N=3, C=16, L=16: batched
    assert report[""].rf == (3,) and report[""].output_shape == (3, 4, 14)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_analyze_and_erf_work_inside_a_callers_no_grad(context):
    # (convlens asks autograd how torch rounds interpolation taps, and the ERF is a gradient: both
    # whatever gradient mode the caller is in)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Upsample(scale_factor=2.5, mode="bicubic"), nn.Conv2d(4, 2, 3))
    want = convlens.analyze(model, (1, 3, 16, 16)).to_dict()["layers"]
    with context():
        assert convlens.analyze(model, (1, 3, 16, 16)).to_dict()["layers"] == want
        assert convlens.erf(model, (1, 3, 16, 16), samples=2).map.shape == (16, 16)
