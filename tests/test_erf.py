"""Effective receptive field (Luo et al. 2016) against closed forms and hand-made maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import convlens


def _uniform_stack(n: int, k: int = 3) -> nn.Module:
    convs = [nn.Conv2d(1, 1, k, padding=k // 2, bias=False) for _ in range(n)]
    for c in convs:
        nn.init.constant_(c.weight, 1.0 / (k * k))
    return nn.Sequential(*convs)


@pytest.mark.parametrize("n", [5, 10, 20, 40])
def test_linear_stack_std_is_sqrt_n_k2_minus_1_over_12(n):
    # each layer adds an independent uniform offset over k positions per axis: variance (k^2 - 1) / 12
    size = 2 * n + 41
    result = convlens.erf(_uniform_stack(n), (1, 1, size, size), samples=1)
    want = math.sqrt(n * (3 ** 2 - 1) / 12)
    assert all(abs(s - want) / want < 0.01 for s in result.std)
    assert result.rf == (2 * n + 1, 2 * n + 1)
    assert all(0 < r < 1 for r in result.ratio)  # the effective rf is a fraction of the theoretical one


def test_map_mass_radius_and_unit():
    # one 5-tap 1-D conv with weights 1..5: |d out[u] / d x[u - 2 + t]| = w[t]
    conv = nn.Conv1d(1, 1, 5, padding=2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[1.0, 2.0, 3.0, 2.0, 1.0]]]))
    r = convlens.erf(conv, (1, 1, 11), unit=(4,), samples=3)
    assert np.allclose(r.map, [0, 0, 1, 2, 3, 2, 1, 0, 0, 0, 0])
    # mass 9 centred on 4: radius 0 holds 3/9, radius 1 holds 7/9, radius 2 all of it
    assert r.radius[0.5] == (1,) and r.radius[0.9] == (2,) and r.radius[0.99] == (2,)
    assert r.samples == 3 and r.ratio == (1.0,)


def test_inputs_as_tensor_and_loader_and_model_untouched():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 1, 3)).train()
    data = torch.randn(6, 2, 12, 12)
    a = convlens.erf(model, (1, 2, 12, 12), inputs=data, samples=6, batch_size=4)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data, torch.zeros(6)), batch_size=4)
    b = convlens.erf(model, (1, 2, 12, 12), inputs=loader, samples=6)
    assert a.samples == b.samples == 6 and np.allclose(a.map, b.map)
    assert model.training and all(p.grad is None for p in model.parameters())


def test_real_torchvision_model_with_a_progress_bar(capfd):
    import torchvision
    r = convlens.erf(torchvision.models.resnet18(weights=None), (1, 3, 64, 64), layer="layer2", samples=4,
                     batch_size=2, progress=True)
    assert r.map.shape == (64, 64) and r.map.max() > 0
    assert "ERF" in capfd.readouterr().err


def test_bad_requests():
    with pytest.raises(convlens.ConvlensError, match="no row named"):
        convlens.erf(nn.Conv2d(1, 1, 3), (1, 1, 8, 8), layer="nope")
    with pytest.raises(convlens.ConvlensError, match="not a position"):
        convlens.erf(nn.Conv2d(1, 1, 3), (1, 1, 8, 8), unit=(6, 0))


def test_a_float64_model_runs_in_float64():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 1, 3))  # linear: the map does not depend on x
    single = convlens.erf(model, (1, 1, 16, 16), samples=4)
    double = convlens.erf(model.double(), (1, 1, 16, 16), samples=4)
    np.testing.assert_allclose(double.map, single.map, rtol=1e-4, atol=1e-6)
    assert convlens.shift_check(model, (1, 1, 16, 16), shift=1).axes[0].errors[1] < 1e-9
