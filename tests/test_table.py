"""The terminal table: its columns, the layers' own arguments, narrow terminals, golden files.

The layers' own arguments (kernel, stride, padding, dilation, groups) are read from the recorded
aten ops; here they are checked against the modules' own attributes. The golden files fix the
table's layout at 80 and 120 columns (as torchinfo's tests do): the numbers in them are checked
against oracles elsewhere (rf and stride in test_geometry_oracle and test_torchvision, params and
MACs in test_cost); regenerate them with ``CONVLENS_UPDATE_GOLDEN=1`` after a deliberate change and
read the diff.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision
from rich.console import Console

import convlens
from convlens.defaults import COLUMN_NAMES, DEFAULT_COLUMNS
from convlens.render.table import COLUMNS, DROP_ORDER, render_table

GOLDEN = Path(__file__).parent / "data" / "golden"


def _rendered(report, width: int, **kwargs) -> str:
    out = io.StringIO()
    render_table(report, console=Console(file=out, width=width, color_system=None, force_terminal=False), **kwargs)
    return out.getvalue()


def test_the_cli_offers_the_tables_columns():
    assert COLUMN_NAMES == tuple(COLUMNS) and set(DEFAULT_COLUMNS) <= set(COLUMNS)
    assert set(DROP_ORDER) == set(COLUMNS)


@pytest.mark.parametrize("width", [80, 120])
def test_golden_table(width):
    report = convlens.analyze(torchvision.models.resnet18(weights=None), (1, 3, 64, 64))
    text = _rendered(report, width, depth=2)
    path = GOLDEN / f"resnet18_3x64x64_depth2_{width}.txt"
    if os.environ.get("CONVLENS_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")
    assert max(len(line) for line in text.splitlines()) <= width


def _expected_padding(module) -> list[tuple[int, int]]:
    """The module's own padding as (before, after) per spatial dim ('same' as torch splits it)."""
    k = len(module.kernel_size) if isinstance(module.kernel_size, tuple) else None
    kernel = module.kernel_size if k else (module.kernel_size,)
    dilation = module.dilation if isinstance(module.dilation, tuple) else (module.dilation,) * len(kernel)
    if module.padding == "same":
        total = [d * (q - 1) for d, q in zip(dilation, kernel)]
        return [(t // 2, t - t // 2) for t in total]
    padding = module.padding if isinstance(module.padding, tuple) else (module.padding,) * len(kernel)
    return [(p, p) for p in padding]


def _per_dim(value, k):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * k


CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)


class Assorted(nn.Module):
    def __init__(self):
        super().__init__()
        self.reflect = nn.Conv2d(3, 8, 3, padding=2, dilation=2, padding_mode="reflect")
        self.same_even = nn.Conv2d(8, 8, (4, 3), padding="same")
        self.circular = nn.Conv2d(8, 8, 3, padding=1, padding_mode="circular", groups=4)
        self.pool = nn.MaxPool2d(3, 2, 1, dilation=1, ceil_mode=True)
        self.up = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1, groups=2)
        self.avg = nn.AvgPool2d((2, 3), stride=(2, 1), padding=(1, 1))
        self.rows = nn.Conv1d(4, 4, 5, stride=3, padding=2)

    def forward(self, x):
        x = self.avg(self.up(self.pool(self.circular(self.same_even(self.reflect(x))))))
        return self.rows(x.flatten(2))


@pytest.mark.parametrize("build, shape", [
    (lambda: torchvision.models.resnet18(weights=None), (1, 3, 64, 64)),
    (lambda: torchvision.models.mobilenet_v3_small(weights=None), (1, 3, 64, 64)),
    (lambda: torchvision.models.googlenet(weights=None, init_weights=False, aux_logits=False), (1, 3, 64, 64)),
    (Assorted, (1, 3, 16, 16)),
    (lambda: nn.Sequential(nn.Conv3d(1, 2, (3, 1, 2), stride=(1, 2, 1), padding=(1, 0, 1)), nn.MaxPool3d(2)),
     (1, 1, 6, 6, 6)),
])
def test_layer_args_are_the_modules_own(build, shape):
    model = build()
    report = convlens.analyze(model, shape)
    checked = 0
    for name, module in model.named_modules():
        if not isinstance(module, CONVS + POOLS):
            continue
        args = report[name].args
        k = len(args.kernel)
        assert args.kernel == _per_dim(module.kernel_size, k), name
        stride = module.stride if module.stride is not None else module.kernel_size
        assert args.stride == _per_dim(stride, k), name
        assert list(args.padding) == _expected_padding(module) if isinstance(module, CONVS) else \
            list(args.padding) == [(p, p) for p in _per_dim(module.padding, k)], name
        assert args.dilation == _per_dim(getattr(module, "dilation", 1), k), name
        assert args.groups == (module.groups if isinstance(module, CONVS) else None), name
        assert args.padding_mode == getattr(module, "padding_mode", "zeros"), name
        assert args.transposed == isinstance(module, CONVS[3:]), name
        checked += 1
    assert checked >= 2
    assert all(layer.args is None for layer in report if layer.type in ("ReLU", "Linear", "BatchNorm2d"))


def test_rows_name_layers_as_users_wrote_them():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ConvTranspose2d(2, 2, 2, 2), nn.MaxPool2d(2), nn.ReLU(inplace=True),
                          nn.Flatten(), nn.Linear(2 * 14 * 14, 3))
    report = convlens.analyze(model, (1, 1, 16, 16))
    assert [layer.type for layer in report][1:] == [type(m).__name__ for m in model]
    rows = report.to_dict()["layers"]
    assert rows[2]["op"] == "convolution" and rows[2]["type"] == "ConvTranspose2d"  # op stays the aten name
    assert rows[1]["args"]["kernel_size"] == [3, 3] and rows[4]["args"] is None
    text = _rendered(report, 120)
    assert "ConvTranspose2d" in text and "Linear" in text and "addmm" not in text


def test_narrow_terminals_keep_names_and_whole_numbers():
    class Deep(nn.Module):
        def __init__(self):
            super().__init__()
            self.a_rather_long_module_name = nn.Sequential(*[nn.Conv2d(4, 4, 3, padding=1) for _ in range(3)])

        def forward(self, x):
            return self.a_rather_long_module_name(x)
    report = convlens.analyze(Deep(), (1, 4, 300, 300))
    for width in (40, 60, 80):
        text = _rendered(report, width, depth=None, columns=COLUMN_NAMES)
        lines = text.splitlines()
        assert max(len(line) for line in lines) <= width, text
        names = "".join(line.split("│")[1].strip() for line in lines if line.startswith("│"))
        assert all(layer.name in names for layer in report), text  # folded, never cut
        assert "left out to fit" in text and "…" not in text
        cells = [cell.strip() for line in lines if line.startswith("│") for cell in line.split("│")[2:-1]]
        assert {"3×3", "5×5", "7×7"} <= set(cells)  # the rf column, dropped last, with whole numbers


def test_the_flag_has_a_legend():
    from test_diagnostics import Shifted
    text = _rendered(convlens.analyze(Shifted(), (1, 1, 9, 9)), 120)
    assert "(model) ⚠" in text and "⚠: the row holds a misaligned merge" in text
    assert text.count("misaligned merge along") == 1  # the diagnostic, once
    plain = _rendered(convlens.analyze(nn.Conv2d(1, 1, 3), (1, 1, 9, 9)), 120)
    assert "⚠" not in plain


def test_a_classifiers_summary_gives_the_last_local_row():
    text = _rendered(convlens.analyze(torchvision.models.resnet18(weights=None), (1, 3, 64, 64)), 120)
    assert "output: global along every axis" in text
    report = convlens.analyze(torchvision.models.resnet18(weights=None), (1, 3, 64, 64))
    layer4 = report["layer4"]
    assert f"last local row, layer4: rf {layer4.rf[0]}×{layer4.rf[1]}, stride 32×32" in text
    assert "global×global" not in text


def test_depth_none_shows_every_row():
    report = convlens.analyze(torch.nn.Sequential(torch.nn.Sequential(torch.nn.Conv1d(1, 1, 3))), (1, 1, 8))
    assert "rows: 3" in _rendered(report, 120, depth=None)
