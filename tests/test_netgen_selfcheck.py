"""Self-checks of the random-network generator in tests/netgen.py (no convlens import)."""
from __future__ import annotations

import contextlib
import copy
import sys
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from netgen import ALL_FAMILIES, FamilyCounter, GeneratedNet, networks  # noqa: E402

MAX_PX, MAX_CH = 64, 8
SEEN = FamilyCounter()  # filled by test_generated_nets_run; reported by test_every_family_appears


def _check_trace(net: GeneratedNet, x: torch.Tensor, k: int) -> torch.Tensor:
    vals = net.model.trace(x)
    assert len(vals) == len(net.steps) + 1
    for i, v in enumerate(vals):
        assert tuple(v.shape) == net.expected_shape(i, k), (
            f"value v{i}: got {tuple(v.shape)}, expected {net.expected_shape(i, k)} (k={k})\n{net.describe()}"
        )
    return vals[-1]


@contextlib.contextmanager
def _one_thread():
    """Tiny tensors: intra-op threads only add overhead (several times slower on 2 cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _check_net(net: GeneratedNet) -> None:
    with _one_thread():
        _check_net_inner(net)


def _check_net_inner(net: GeneratedNet) -> None:
    # the record itself
    assert net.input_shape[0] == 1 and 1 <= net.input_shape[1] <= MAX_CH
    d = len(net.input_shape) - 2
    assert d in (1, 2, 3)
    cap = 12 if d == 3 else MAX_PX
    assert all(1 <= n <= cap for n in net.input_shape[2:])
    assert net.families and net.families <= ALL_FAMILIES
    assert net.has_unsupported == ("unsupported" in net.families)
    assert not net.model.training
    assert all(p.dtype == torch.float32 for p in net.model.parameters())
    assert 1 <= len(net.steps)
    assert net.describe().startswith("GeneratedNet(")
    assert len(net.period) == d and all(p >= 1 for p in net.period)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # float32, every intermediate shape as tracked
        with torch.no_grad():
            y = _check_trace(net, net.make_input(torch.float32), 0)
        assert y.dtype == torch.float32
        assert torch.isfinite(y).all(), net.describe()
        # float64 forward + backward on a copy
        m64 = copy.deepcopy(net.model).double()
        x = net.make_input(torch.float64).requires_grad_(True)
        y = m64(x)
        assert y.dtype == torch.float64 and tuple(y.shape) == net.output_shape
        assert torch.isfinite(y).all(), net.describe()
        w = torch.rand(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.1
        (y * w).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all(), net.describe()
        # meta tensors (how a capture pass runs it): nothing in the plan may read tensor data
        m_meta = copy.deepcopy(net.model).to("meta")
        y = m_meta(torch.empty(net.input_shape, device="meta"))
        assert y.device.type == "meta" and tuple(y.shape) == net.output_shape
        # larger input: runs with the predicted shapes
        if net.resizable:
            with torch.no_grad():
                y = _check_trace(net, net.make_input(torch.float32, k=1), 1)
            assert torch.isfinite(y).all(), net.describe()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks(max_px=MAX_PX, max_ch=MAX_CH))
def test_generated_nets_run(net):
    SEEN.record(net)
    _check_net(net)


def test_every_family_appears():
    """Over 300 draws every family appears at least once (own draws: robust to test order/xdist)."""
    counter = FamilyCounter()

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(networks(max_px=MAX_PX, max_ch=MAX_CH))
    def draw(net):
        counter.record(net)

    draw()
    print(counter.report())
    if SEEN.n:
        print("test_generated_nets_run saw:\n" + SEEN.report())
    assert counter.n >= 300
    assert not counter.missing(), f"families never drawn: {sorted(counter.missing())}\n{counter.report()}"


@pytest.mark.parametrize("family", sorted(ALL_FAMILIES))
def test_require_family(family):
    @settings(max_examples=8, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(networks(max_px=32, max_ch=MAX_CH, require={family}))
    def check(net):
        assert family in net.families, net.describe()
        _check_net(net)

    check()


def test_exclude_family():
    @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(networks(max_px=32, exclude={"unsupported", "attention", "cat_spatial"}))
    def check(net):
        assert not net.families & {"unsupported", "attention", "cat_spatial"}
        assert not net.has_unsupported

    check()


def test_module_paths_and_sharing():
    @settings(max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(networks(max_px=16, require={"shared_module"}))
    def check(net):
        calls: dict[str, int] = {}
        hooks = []
        for name, mod in net.model.named_modules():
            if name.startswith("layers."):
                hooks.append(mod.register_forward_hook(lambda m, i, o, n=name: calls.__setitem__(n, calls.get(n, 0) + 1)))
        try:
            with torch.no_grad():
                net.model(net.make_input())
        finally:
            for h in hooks:
                h.remove()
        assert max(calls.values()) >= 2, net.describe()

    check()
