"""The three per-op registries (geometry rules, cost rules, diagnostics) share one contract: keys are
aten overload packets or synthetic op names, each registered once."""

from __future__ import annotations

import pytest
import torch

from convlens.capture import SDPA
from convlens.diagnostics import OP_CHECKS, register_check
from convlens.rules import COST, GEOMETRY, register_cost, register_geometry
from convlens.rules.registry import ATTENTION_OPS, attention_targets

aten = torch.ops.aten
REGISTRIES = [(GEOMETRY, register_geometry, lambda op: register_geometry(op)),
              (COST, register_cost, lambda op: register_cost(op)),
              (OP_CHECKS, register_check, lambda op: register_check(op))]


@pytest.mark.parametrize("table, register, one", REGISTRIES, ids=["geometry", "cost", "diagnostics"])
def test_a_key_registered_twice_is_refused(table, register, one):
    taken = next(iter(table))
    with pytest.raises(RuntimeError, match="registered twice"):
        one(taken)(lambda ctx: None)
    assert table[taken] is not None


@pytest.mark.parametrize("table, register, one", REGISTRIES, ids=["geometry", "cost", "diagnostics"])
@pytest.mark.parametrize("bad", [aten.convolution.default, 3, None, torch.relu])
def test_keys_must_be_packets_or_names(table, register, one, bad):
    before = dict(table)
    with pytest.raises(TypeError, match="overload packets"):
        one(bad)(lambda ctx: None)
    assert table == before


@pytest.mark.parametrize("table", [GEOMETRY, COST, OP_CHECKS], ids=["geometry", "cost", "diagnostics"])
def test_every_key_is_a_packet_or_a_name(table):
    assert all(isinstance(k, (str, torch._ops.OpOverloadPacket)) for k in table)


def test_one_list_of_attention_ops_for_geometry_and_cost():
    targets = attention_targets()
    assert SDPA in targets and len(targets) == 1 + sum(hasattr(aten, n) for n in ATTENTION_OPS)
    for key in targets:
        assert key in GEOMETRY and key in COST, key
    # the fused kernels torch dispatches to on CPU are among them (a forward of F.sdpa hits one)
    assert aten._scaled_dot_product_flash_attention_for_cpu in targets
