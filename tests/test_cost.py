"""Cost against torch.utils.flop_counter (2 FLOPs per MAC, no bias) and against hand counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision.models as tvm
from torch.utils.flop_counter import FlopCounterMode

import convlens
from convlens.loading import build_model, model_factory

CLASSIFIERS = tvm.list_models(module=tvm)


def _flop_counts(model: nn.Module, shape) -> tuple[dict, int]:
    device = next(model.parameters()).device
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(shape, device=device))
    return counter.get_flop_counts(), counter.get_total_flops()


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_macs_match_flop_counter_for_every_conv_and_linear(name):
    model = build_model(model_factory(f"torchvision:{name}")).eval()  # on meta when it can be built there
    size = 299 if name == "inception_v3" else 224
    shape = (1, 3, size, size)
    report = convlens.analyze(model, shape)
    counts, total = _flop_counts(model, shape)
    root = type(model).__name__
    per_module: dict[str, int] = {}
    for layer in report:
        base = layer.name.split("#")[0]
        if layer.type in ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "Linear") and "[" not in layer.name:
            per_module[base] = per_module.get(base, 0) + layer.macs
    assert per_module, "no conv or linear rows"
    for path, macs in per_module.items():
        expected = sum(counts.get(f"{root}.{path}", {}).values())
        assert 2 * macs == expected, (path, 2 * macs, expected)
    assert 2 * report.totals.macs == total


def test_transposed_conv_counts_input_positions():
    # every one of the 5x5 input pixels of each of 4 input channels meets (6 / 2 groups) x 3 x 3 taps
    conv = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, bias=True)
    report = convlens.analyze(conv, (2, 4, 5, 5))
    assert report[""].macs == 2 * 25 * 4 * 3 * 9
    out_h = (5 - 1) * 2 + 3
    assert report[""].bias_flops == 2 * 6 * out_h * out_h
    counts, total = _flop_counts(conv.to("meta"), (2, 4, 5, 5))
    assert 2 * report[""].macs == total


def test_grouped_dilated_conv_counts_output_positions():
    # output 6x(10-2*2) = 6x6 per image; each output of 8 channels reads 12/4 = 3 channels x 3 x 3 taps
    conv = nn.Conv2d(12, 8, 3, dilation=2, groups=4, bias=False)
    report = convlens.analyze(conv, (1, 12, 10, 10))
    assert report[""].macs == 8 * 6 * 6 * 3 * 9
    assert report[""].bias_flops == 0
    assert report[""].params == 8 * 3 * 9


def test_shared_module_params_counted_once_and_macs_per_call():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(self.conv(x))

    report = convlens.analyze(Twice(), (1, 2, 8, 8))
    one_call = 2 * 8 * 8 * 2 * 9
    assert report["conv"].macs == report["conv#2"].macs == one_call
    assert report.totals.macs == 2 * one_call
    assert report.totals.params == 2 * 2 * 9 + 2


def test_peak_memory_of_a_chain_with_inplace_relu():
    # float32, 4x4 map: input 1 channel = 64 B, conv1 output 2 channels = 128 B, conv2 output 64 B.
    # conv1 runs with the input alive: 64 + 128 = 192; the input is freed; relu_ aliases conv1's output;
    # conv2 runs with it alive: 128 + 64 = 192; then only the 64 B output is left.
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(2, 1, 3, padding=1))
    assert convlens.analyze(model, (1, 1, 4, 4)).totals.peak_activation_bytes == 192


def test_peak_memory_of_a_residual_keeps_the_skip_alive():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 4, 1)
            self.b = nn.Conv2d(4, 1, 1)

        def forward(self, x):
            return self.b(self.a(x)) + x

    # input 64 B stays alive for the add. a: 64 + 256 = 320; b: 64 + 256 + 64 = 384, then a's output
    # is freed (128 left); the add allocates 64 more: 192.  Peak 384.
    assert convlens.analyze(Block(), (1, 1, 4, 4)).totals.peak_activation_bytes == 384


def test_peak_memory_counts_views_once():
    class Views(nn.Module):
        def forward(self, x):
            y = x.view(4, 4)  # a view: no new memory
            return y.t().contiguous()  # a transposed 4x4 view is not contiguous: the copy is 64 B

    assert convlens.analyze(Views(), (1, 1, 4, 4)).totals.peak_activation_bytes == 128
