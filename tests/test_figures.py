"""Figures keep their titles inside the picture and label every box and line they draw."""

from __future__ import annotations

import pytest
import torch.nn as nn
import torchvision

import convlens
from convlens.render import figures


def _inside(fig, artist) -> bool:
    fig.canvas.draw()
    box, page = artist.get_window_extent(), fig.bbox
    return box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1 and box.y0 >= page.y0 - 1 and box.y1 <= page.y1 + 1


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
            for t in legend.get_texts()]


def _figures():
    up = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ConvTranspose2d(2, 1, 3, stride=2))
    report = convlens.analyze(up, (1, 1, 16, 16))
    resnet = convlens.analyze(torchvision.models.resnet18(weights=None), (1, 3, 64, 64))
    erf = convlens.erf(up, (1, 1, 16, 16), samples=2)
    return {
        "rf": figures.rf_figure(resnet),
        "cost": figures.cost_figure(resnet),
        "checkerboard": figures.checkerboard_figure(report.checkerboard("1")),
        "coverage": figures.coverage_figure(resnet.coverage("layer2", (0, 0))),
        "erf": figures.erf_figure(erf),
    }


@pytest.fixture(scope="module")
def drawn():
    found = _figures()
    yield found
    for fig in found.values():
        figures.pyplot().close(fig)


@pytest.mark.parametrize("kind", ["rf", "cost", "checkerboard", "coverage", "erf"])
def test_titles_stay_inside(drawn, kind):
    fig = drawn[kind]
    titles = [ax.title for ax in fig.axes if ax.get_title()]
    assert titles and all(_inside(fig, t) for t in titles)


def test_boxes_and_lines_are_labelled(drawn):
    assert any("99 % of the ERF's mass" in t and "not the rf window" in t for t in _legend_texts(drawn["erf"]))
    assert "the unit's clipped window" in _legend_texts(drawn["coverage"])
    rf_labels = _legend_texts(drawn["rf"])
    assert "rf, every axis" in rf_labels and "input size, every axis" in rf_labels


def test_rf_plot_names_stages_and_lets_no_axis_hide_another():
    report = convlens.analyze(nn.Sequential(nn.Conv2d(1, 1, (3, 1)), nn.Conv2d(1, 1, (3, 1)), nn.Conv2d(1, 1, 1)),
                              (1, 1, 16, 16))
    fig = figures.rf_figure(report)
    labels = _legend_texts(fig)
    assert "rf, axis 0" in labels and "rf, axis 1" in labels  # rf 5 against rf 1: two lines, two styles
    styles = {line.get_linestyle() for line in fig.axes[0].get_lines() if line.get_label().startswith("rf")}
    assert len(styles) == 2
    resnet = convlens.analyze(torchvision.models.resnet18(weights=None), (1, 3, 64, 64))
    ticks = [t.get_text() for t in figures.rf_figure(resnet).axes[0].get_xticklabels()]
    assert {"layer1", "layer2", "layer3", "layer4"} <= set(ticks)
