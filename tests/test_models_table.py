"""docs/models.csv and docs/models.md are current: a fixed sample of 30 models across families, surveyed
again now, gives the committed rows exactly (timings aside), and the page holds the table's rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from convlens.survey import read_rows, survey

DOCS = Path(__file__).parent.parent / "docs"

# families by how convlens sees them: plain and residual CNNs, depthwise and grouped ones, dense and
# multi-branch ones, segmentation heads, and transformers and hybrids (partial today)
SAMPLE = [
    "torchvision:alexnet", "torchvision:resnet18", "torchvision:vgg11", "torchvision:squeezenet1_0",
    "torchvision:googlenet", "torchvision:inception_v3", "torchvision:mobilenet_v3_small",
    "torchvision:shufflenet_v2_x0_5", "torchvision:mnasnet0_5", "torchvision:efficientnet_b0",
    "torchvision:regnet_x_400mf", "torchvision:convnext_tiny", "torchvision:vit_b_32", "torchvision:swin_t",
    "torchvision:lraspp_mobilenet_v3_large",
    "timm:resnet18d", "timm:densenet121", "timm:dla34", "timm:hrnet_w18_small", "timm:cspdarknet53",
    "timm:ghostnet_100", "timm:repvgg_a0", "timm:mobilevitv2_050", "timm:convnext_atto", "timm:regnetx_002",
    "timm:deit_tiny_patch16_224", "timm:levit_128s", "timm:coat_tiny", "timm:xcit_nano_12_p16_224",
    "timm:tf_efficientnet_lite0",
]


@pytest.fixture(scope="module")
def table():
    return {r.model: r for r in read_rows(DOCS / "models.csv")}


def test_the_sample_is_thirty_models_of_the_table(table):
    assert len(set(SAMPLE)) == 30
    assert set(SAMPLE) <= set(table)
    assert {table[m].status for m in SAMPLE} >= {"full", "partial"}


def test_the_page_holds_the_tables_rows(table):
    assert [r.to_dict() for r in read_rows(DOCS / "models.md")] == [r.to_dict() for r in table.values()]


def test_the_published_table_is_current(table):
    fresh = survey(SAMPLE, jobs=2, timeout=300)
    stale = [(row.model, row.comparable(), table[row.model].comparable()) for row in fresh
             if row.comparable() != table[row.model].comparable()]
    assert not stale, f"docs/models.csv is stale (regenerate: python docs/models.py): {stale[:2]}"
