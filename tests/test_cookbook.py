"""The cookbook (docs/cookbook.md): every snippet runs, every number it returns is true, the page is current.

Each snippet in docs/cookbook/ returns the numbers it prints. Every one is checked here against a computation
that does not go through convlens: torch itself (shapes, ``numel``, ``FlopCounterMode`` for MACs, real
backward passes), brute force (the gradient oracle of tests/oracle.py on a linearized copy; all-ones
convolutions for path counts) or arithmetic written below (the receptive-field recurrence, window bounds).
The numbers the questions quote from the literature (100 vs 90 weights, (4, 5, 1, 1), (5, 10, 1, 1) and 55, a
quarter, 225 of 841, 289 of 289) are also asserted literally. Finally ``build.render`` of the snippets'
outputs must equal the committed docs/cookbook.md: an answer that changes fails until the cookbook is
rebuilt (``.venv/bin/python docs/cookbook/build.py``).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from oracle import linearized, probe, probe_many

ROOT = Path(__file__).resolve().parent.parent
COOKBOOK = ROOT / "docs" / "cookbook"


def _load_build():
    spec = importlib.util.spec_from_file_location("cookbook_build", COOKBOOK / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


build = _load_build()


@pytest.fixture(scope="module")
def sections(tmp_path_factory):
    """Every snippet run once, its pictures written to a temporary folder."""
    out = tmp_path_factory.mktemp("cookbook")
    return build.run_all(out), out


def _section(sections, key):
    found, out = sections
    return found[key].values, found[key].module, found[key], out


# ---------------------------------------------------------------------------------------------------------
# independent computations


def _first(v) -> int:
    return v if isinstance(v, int) else v[0]


def _leaves(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if not list(m.children())]


def chain(model: nn.Module) -> tuple[int, int, Fraction, int]:
    """(rf, stride, offset, lo of unit 0) along one axis of a chain of convs and pools, by the recurrence:
    lo_l = lo_{l-1} - p_l J_{l-1}, r_l = r_{l-1} + d_l (k_l - 1) J_{l-1}, J_l = J_{l-1} s_l; the offset is
    the centre of unit 0, lo + (r - 1) / 2."""
    rf, jump, lo = 1, 1, 0
    for m in _leaves(model):
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, s, p = _first(m.kernel_size), _first(m.stride), _first(m.padding)
            d = _first(getattr(m, "dilation", 1))
            lo -= p * jump
            rf += d * (k - 1) * jump
            jump *= s
    return rf, jump, lo + Fraction(rf - 1, 2), lo


def torch_out(build_model, shape) -> tuple[int, ...]:
    """The output shape torch computes (on meta: no memory, any size)."""
    with torch.device("meta"):
        model = build_model()
    return tuple(model(torch.empty(shape, device="meta")).shape)


def torch_macs(build_model, shape) -> int:
    """Multiply-accumulates by torch's own flop counter (FLOPs / 2), on meta."""
    with torch.device("meta"):
        model = build_model()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(shape, device="meta"))
    return counter.get_total_flops() // 2


def numel(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def bbox_width(model, shape, unit, axis=0) -> int:
    lo, hi = probe(model, shape, unit=unit).bbox[axis]
    return hi - lo + 1


def unread_far_border(model, shape) -> int:
    """Rows at the far border that no output reads: trailing zero rows of the input gradient of the sum of
    a linearized copy (max pools as window sums, positive weights: every read pixel gets a gradient)."""
    x = torch.rand(shape, dtype=torch.float64, requires_grad=True)
    linearized(model)(x).sum().backward()
    read = np.nonzero(x.grad[0].abs().sum(dim=(0, 2)).numpy() > 0)[0]
    return shape[2] - 1 - int(read[-1])


def shown(stdout: str, value) -> bool:
    """Whether a returned number appears in what the snippet printed."""
    if isinstance(value, Fraction):
        return str(value) in stdout or str(float(value)) in stdout
    if isinstance(value, int) and not isinstance(value, bool) and f"{value:,}" in stdout:
        return True
    return str(value) in stdout


def assert_printed(section, keys):
    for key in keys:
        assert shown(section.stdout, section.values[key]), f"{key}={section.values[key]!r} not in the output"


# ---------------------------------------------------------------------------------------------------------
# 1. dilation


def test_s01_dilation(sections):
    v, mod, sec, _ = _section(sections, "s01_dilation")
    cases = {"plain": ((1, 1, 1), True), "dilated": ((1, 2, 4), True), "unpadded": ((1, 2, 4), False)}
    for key, (dilations, padded) in cases.items():
        assert v[f"{key}_rf"] == 1 + sum(2 * d for d in dilations)         # r += d (k - 1), stride 1
        assert v[f"{key}_out"] == torch_out(lambda d=dilations, p=padded: mod.stack(d, p), (1, 64, 64, 64))[-1]
        assert v[f"{key}_params"] == numel(mod.stack(dilations, padded)) == 3 * (64 * 64 * 9 + 64)
        assert v[f"{key}_macs"] == torch_macs(lambda d=dilations, p=padded: mod.stack(d, p), (1, 64, 64, 64))
        assert_printed(sec, [f"{key}_rf", f"{key}_params", f"{key}_macs"])
    one = nn.Sequential(*[nn.Conv2d(1, 1, 3, dilation=d, padding=d) for d in (1, 2, 4)])
    assert bbox_width(one, (1, 1, 48, 48), (24, 24)) == v["dilated_rf"]  # brute force, one map

    # one 3x3 layer, dilation 10, 1024x1024
    assert v["d10_pad"] == 10 * (3 - 1) // 2
    def conv(p):
        return lambda: nn.Conv2d(1, 1, 3, dilation=10, padding=p)
    assert torch_out(conv(v["d10_pad"]), (1, 1, 1024, 1024))[-1] == 1024
    assert v["d10_unpadded_out"] == torch_out(conv(0), (1, 1, 1024, 1024))[-1] == 1024 - 2 * 10
    assert v["d10_padded_side"] == 1024 + 2 * 10
    assert v["d10_padding"] == pytest.approx(1 - 1024 ** 2 / (1024 + 2 * 10) ** 2)

    def real_share(u):  # unit u's window [u - 10, u + 10] along one axis: the share inside 0..1023
        return len(range(max(u - 10, 0), min(u + 10, 1023) + 1)) / 21
    assert v["d10_corner"] == pytest.approx(1 - real_share(0) ** 2) == pytest.approx(1 - (11 / 21) ** 2)
    assert v["d10_edge"] == pytest.approx(1 - real_share(0) * real_share(512)) == pytest.approx(10 / 21)
    # brute force: an all-ones input through an all-ones kernel gives 9 exactly where no tap reads padding
    ones = F.conv2d(torch.ones(1, 1, 1024, 1024), torch.ones(1, 1, 3, 3), padding=10, dilation=10)[0, 0]
    assert v["d10_edge_units"] == int((ones[:, 512] < 9).sum()) == 2 * 10
    assert v["d10_touching"] == pytest.approx(float((ones < 9).float().mean()))
    for key, digits in [("d10_corner", 1), ("d10_edge", 1), ("d10_touching", 2), ("d10_padding", 1)]:
        assert f"{v[key]:.{digits}%}" in sec.stdout
    assert_printed(sec, ["d10_pad", "d10_unpadded_out", "d10_padded_side", "d10_edge_units"])


# ---------------------------------------------------------------------------------------------------------
# 2. localisation: window, centre, stride, ERF


def _erf_stats(grad_map: np.ndarray, axis: int):
    """std and the 50 / 99 % radii of the marginal, written out from Luo et al.'s definition."""
    marginal = grad_map.sum(axis=1 - axis)
    p = marginal / marginal.sum()
    pos = np.arange(len(p))
    mean = (p * pos).sum()
    std = math.sqrt((p * (pos - mean) ** 2).sum())
    c = round(mean)

    def radius(q):
        r = 0
        while p[max(0, c - r):c + r + 1].sum() < q - 1e-12:
            r += 1
        return r
    return std, radius(0.5), radius(0.99)


def test_s02_localisation(sections):
    v, mod, sec, _ = _section(sections, "s02_localisation")
    torch.manual_seed(0)
    model = mod.vgg_like()
    rf, stride, offset, lo0 = chain(model)
    assert (v["rf"], v["stride"], v["offset"]) == (rf, stride, offset)
    windows = {u: (lo0 + u * stride, lo0 + u * stride + rf - 1) for u in range(16)}
    assert (v["lo"], v["hi"]) == windows[8] and (v["next_lo"], v["next_hi"]) == windows[9]
    assert v["centre"] == offset + 8 * stride == Fraction(windows[8][0] + windows[8][1], 2)
    seeing = [sum(lo <= r <= hi for lo, hi in windows.values()) for r in range(64, 192)]
    assert (v["seeing_min"], v["seeing_max"]) == (min(seeing), max(seeing))
    # brute force: the gradient support of units (8, 8) and (9, 8) of a linearized copy
    got = probe_many(model, (1, 1, 256, 256), units=[(8, 8), (9, 8)], inputs=1)
    assert got[0].bbox == [windows[8], windows[8]] and got[1].bbox[0] == windows[9]

    # the ERF, by torch: mean |d unit / d input| over the same 16 inputs
    torch.manual_seed(0)
    model = mod.vgg_like()
    x = torch.randn(16, 1, 256, 256, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    model(x)[:, :, 8, 8].sum().backward()
    grad_map = x.grad.abs().sum(dim=(0, 1)).double().numpy() / 16
    std, r50, r99 = _erf_stats(grad_map, 0)
    assert v["erf_std"] == pytest.approx(std, rel=1e-4)
    assert (v["erf_r50"], v["erf_r99"]) == (r50, r99)
    assert v["erf_ratio"] == pytest.approx((2 * r99 + 1) / rf)
    assert f"std {std:.1f} px" in sec.stdout
    assert_printed(sec, ["rf", "stride", "offset", "lo", "hi", "next_lo", "next_hi", "centre", "erf_r50",
                         "erf_r99"])


# ---------------------------------------------------------------------------------------------------------
# 3. downsampling


def test_s03_downsampling(sections):
    v, mod, sec, _ = _section(sections, "s03_downsampling")
    shape = (1, 64, 224, 224)
    labels = list(mod.candidates())
    for i, label in enumerate(labels):
        make = lambda label=label: mod.candidates(64)[label]
        small = mod.candidates(1)[label]
        rf, stride, offset, lo0 = chain(small)
        assert v[f"{i}_out"] == torch_out(make, shape)[-1]
        assert (v[f"{i}_rf"], v[f"{i}_stride"], v[f"{i}_offset"]) == (rf, stride, offset)
        assert bbox_width(small, (1, 1, 224, 224), (50, 50)) == rf         # brute force, an interior unit
        assert v[f"{i}_params"] == numel(make())
        assert v[f"{i}_macs"] == torch_macs(make, shape)
        real = len(range(max(lo0, 0), lo0 + rf)) / rf                     # unit 0's window [lo0, lo0 + rf - 1]
        assert v[f"{i}_corner"] == pytest.approx(1 - real ** 2)
        assert v[f"{i}_unread"] == unread_far_border(small, (1, 1, 224, 224))
        assert_printed(sec, [f"{i}_out", f"{i}_params", f"{i}_macs"])
    # the strided conv costs a quarter of the padded one; unpadded 3x3/2 on 224 skips the last pixel
    assert 4 * v["2_macs"] == v["0_macs"] and v["3_unread"] == (224 - 3) % 2 == 1


# ---------------------------------------------------------------------------------------------------------
# 4. kernel sizes


def test_s04_kernel_sizes(sections):
    v, mod, sec, _ = _section(sections, "s04_kernel_sizes")
    assert (v["0_weights"], v["1_weights"]) == (4 * 5 * 5, 10 * 3 * 3) == (100, 90)   # the seed's numbers
    for i, (label, (maps, model)) in enumerate(mod.candidates().items()):
        make = lambda label=label: mod.candidates()[label][1]
        assert v[f"{i}_weights"] == numel(model)
        assert v[f"{i}_macs"] == torch_macs(make, (1, maps, 56, 56))
        res = probe(model, (1, maps, 20, 20), unit=(10, 10))                 # brute force
        (a0, b0), (a1, b1) = res.bbox
        assert (v[f"{i}_rf"], v[f"{i}_rf_w"]) == (b0 - a0 + 1, b1 - a1 + 1)
        assert_printed(sec, [f"{i}_weights", f"{i}_macs"])
    c = 64
    assert [v[f"{i}_weights"] for i in range(2, 7)] == [90 + 900, 9 * c * c, 6 * c * c, 49 * c * c, 27 * c * c]


# ---------------------------------------------------------------------------------------------------------
# 5. dilated vs transposed


def _windows(model, shape, units):
    return [r.bbox[0] for r in probe_many(model, shape, units=units, inputs=1)]


def test_s05_dilated_vs_transposed(sections):
    v, _, sec, out = _section(sections, "s05_dilated_vs_transposed")
    dilated, padded = nn.Conv2d(1, 1, 3, dilation=2), nn.Conv2d(1, 1, 3, dilation=2, padding=2)
    transposed = nn.ConvTranspose2d(1, 1, 3, stride=2)
    assert v["dilated_out"] == dilated(torch.zeros(1, 1, 7, 7)).shape[-1] == 3
    assert v["dilated_padded_out"] == padded(torch.zeros(1, 1, 7, 7)).shape[-1] == 7
    assert v["transposed_out"] == transposed(torch.zeros(1, 1, 3, 3)).shape[-1] == 7
    for key, model in [("dilated", dilated), ("dilated_padded", padded)]:
        wins = _windows(model, (1, 1, 7, 7), [(u, 1) for u in range(v[f"{key}_out"])])
        if key == "dilated":   # unpadded: every window is whole
            assert v[f"{key}_rf"] == max(hi - lo + 1 for lo, hi in wins) == 5
            assert v[f"{key}_stride"] == wins[1][0] - wins[0][0] == 1
        else:                  # padded: the interior unit's window is whole, neighbours one apart
            assert v[f"{key}_rf"] == wins[3][1] - wins[3][0] + 1 == 5
            assert v[f"{key}_stride"] == wins[4][1] - wins[3][1] == 1
    # transposed: probe a larger input so that interior units exist; windows repeat every 2 units, 1 px on
    wins = _windows(transposed, (1, 1, 9, 9), [(u, 8) for u in range(4, 12)])
    assert v["transposed_rf"] == max(hi - lo + 1 for lo, hi in wins) == 2
    assert all(wins[j + 2][0] - wins[j][0] == 1 for j in range(len(wins) - 2))
    assert v["transposed_stride"] == Fraction(1, 2)
    # the animations: one frame per output position (direct), per input position (transposed)
    with Image.open(out / "s05_dilated.gif") as gif:
        assert v["dilated_frames"] == gif.n_frames == 3 * 3
    with Image.open(out / "s05_transposed.gif") as gif:
        assert v["transposed_frames"] == gif.n_frames == 3 * 3
    assert_printed(sec, ["dilated_out", "transposed_out", "dilated_rf", "transposed_rf", "transposed_stride"])


# ---------------------------------------------------------------------------------------------------------
# 6. the rf recurrence


def _chain_rf(modules) -> list[tuple[str, int]]:
    """The recurrence, written here: after each conv / max pool, r += (k_eff - 1) * J, J *= s."""
    out, r, J = [], 1, 1
    for name, m in modules:
        if type(m) in (nn.Conv2d, nn.MaxPool2d):
            k_eff = _first(m.dilation) * (_first(m.kernel_size) - 1) + 1
            r, J = r + (k_eff - 1) * J, J * _first(m.stride)
            out.append((name, r))
    return out


def _resnet_longest_path(model) -> int:
    """rf of a torchvision ResNet's layer4 along its longest path: the stem, then per bottleneck its 3x3
    conv (the 1x1 convs and the shortcut add nothing), each at the stride reached so far."""
    r, J = 1, 1
    for m in (model.conv1, model.maxpool):
        r, J = r + (_first(m.kernel_size) - 1) * J, J * _first(m.stride)
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            r, J = r + (_first(block.conv2.kernel_size) - 1) * J, J * _first(block.conv2.stride)
    return r


def test_s06_rf_recurrence(sections):
    v, mod, sec, _ = _section(sections, "s06_rf_recurrence")
    with torch.device("meta"):
        vgg = torchvision.models.vgg16()
        d8 = mod.dilation_net(8)
        resnet = torchvision.models.resnet50()
    rows = _chain_rf(vgg.features.named_children())
    assert v["vgg_layers"] == len(rows) == 13 + 5
    for name, r in rows:
        assert v[f"vgg_{name}_recurrence"] == v[f"vgg_{name}_convlens"] == r
    assert v["dilation8_recurrence"] == v["dilation8_convlens"] == _chain_rf(d8.named_modules())[-1][1]
    assert v["resnet50_recurrence"] == _chain_rf(resnet.named_modules())[-1][1]
    assert v["resnet50_convlens"] == _resnet_longest_path(resnet)
    assert_printed(sec, ["dilation8_convlens", "resnet50_recurrence", "resnet50_convlens"])


# ---------------------------------------------------------------------------------------------------------
# 7. Kronecker


def test_s07_kronecker(sections):
    v, _, sec, _ = _section(sections, "s07_kronecker")
    # the claim, for fresh random kernels: the stack 1, 3, 9 is one conv with kernel kron(k9, kron(k3, k1))
    gen = torch.Generator().manual_seed(1)
    k1, k3, k9 = (torch.randn(3, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    x = torch.randn(1, 1, 40, 40, generator=gen, dtype=torch.float64)
    y = x
    for k, d in [(k1, 1), (k3, 3), (k9, 9)]:
        y = F.conv2d(y, k[None, None], dilation=d)
    assert torch.allclose(y, F.conv2d(x, torch.kron(k9, torch.kron(k3, k1))[None, None]))
    assert v["d139_is_kron"] is True
    for key, dilations in [("d139", (1, 3, 9)), ("d124", (1, 2, 4))]:
        stack = nn.Sequential(*[nn.Conv2d(1, 1, 3, dilation=d, bias=False) for d in dilations])
        side = 1 + sum(2 * d for d in dilations)
        assert v[f"{key}_weights"] == numel(stack) == 27
        assert v[f"{key}_side"] == v[f"{key}_rf"] == side
        shape = (1, 1, 64, 64)
        unit = (32 - side // 2, 32 - side // 2)     # unpadded: output unit u sees u .. u + side - 1
        support = probe(stack, shape, unit=unit)
        (a, b), (c, d) = support.bbox
        assert (b - a + 1, d - c + 1) == (side, side)
        assert v[f"{key}_covered"] == int(support.support.sum()) and v[f"{key}_pixels"] == side * side
        counts = probe(stack, shape, unit=unit, weights="ones", inputs=1).grad[a:b + 1, c:d + 1]  # path counts
        assert (v[f"{key}_min_paths"], v[f"{key}_max_paths"]) == (int(counts.min()), int(counts.max()))
        assert_printed(sec, [f"{key}_side", f"{key}_covered", f"{key}_pixels"])
    assert v["d139_min_paths"] == v["d139_max_paths"] == 1                      # one path per tap: Kronecker


# ---------------------------------------------------------------------------------------------------------
# 8. checkerboard


def test_s08_checkerboard(sections):
    v, _, sec, _ = _section(sections, "s08_checkerboard")
    ones = torch.ones(1, 1, 16, 16, dtype=torch.float64)
    k3, k4 = torch.ones(1, 1, 3, 3, dtype=torch.float64), torch.ones(1, 1, 4, 4, dtype=torch.float64)
    brute = {"t3": F.conv_transpose2d(ones, k3, stride=2)[0, 0],               # all-ones: value = paths
             "t4": F.conv_transpose2d(ones, k4, stride=2, padding=1)[0, 0],
             "resize": F.conv2d(F.interpolate(ones, scale_factor=2, mode="nearest"), k3, padding=1)[0, 0]}
    for key, counts in brute.items():
        assert v[f"{key}_out"] == counts.shape[-1]
        r, c = v[f"{key}_row"], v[f"{key}_col"]
        grid = counts[r:r + 2, c:c + 2]
        assert torch.equal(counts[r + 2:r + 4, c + 2:c + 4], grid)             # interior: period 2
        assert [[v[f"{key}_grid{i}{j}"] for j in range(2)] for i in range(2)] == grid.long().tolist()
        assert v[f"{key}_ratio"] == float(grid.max() / grid.min())
        assert v[f"{key}_stride"] == Fraction(1, 2)
    t3 = brute["t3"]
    # kernel 3, stride 2: an even output o = 2j + t gets taps t = 0 and 2, an odd one only t = 1
    assert (t3[14, 14], t3[14, 15], t3[15, 15]) == (2 * 2, 2 * 1, 1 * 1) and v["t3_row"] % 2 == v["t3_col"] % 2 == 0
    # the stride 1/2, by brute force: windows of consecutive output units advance 1 px every 2 units
    wins = _windows(nn.ConvTranspose2d(1, 1, 3, stride=2), (1, 1, 16, 16), [(u, 16) for u in range(12, 20)])
    assert all(wins[j + 2][0] - wins[j][0] == 1 for j in range(len(wins) - 2))
    assert_printed(sec, ["t3_out", "t4_out", "resize_out", "t3_stride"])


# ---------------------------------------------------------------------------------------------------------
# 9. exam questions


def test_s09_exam(sections):
    v, _, sec, _ = _section(sections, "s09_exam")
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    conv = nn.Conv2d(3, 5, 8)
    y = conv(x)
    fc = nn.Linear(3 * 8 * 8, 5)
    with torch.no_grad():
        fc.weight.copy_(conv.weight.reshape(5, -1))
        fc.bias.copy_(conv.bias)
    assert torch.allclose(y.flatten(1), fc(x.flatten(1)), atol=1e-6)          # the conv is the FC layer
    assert v["fc_weight"] == tuple(conv.weight.shape) == (5, 3, 8, 8)
    assert v["fc_out"] == tuple(y.shape) == (4, 5, 1, 1)
    assert v["fc_params"] == numel(conv) == numel(fc) == 5 * 192 + 5
    assert v["fc_rf"] == bbox_width(conv, (1, 3, 8, 8), (0, 0)) == 8
    flat = nn.Conv2d(192, 5, 1)
    assert v["flat_out"] == tuple(flat(x.reshape(4, 192, 1, 1)).shape) == (4, 5, 1, 1)
    assert v["flat_params"] == numel(flat)
    one = nn.Conv2d(10, 5, 1)
    assert v["pointwise_weight"] == tuple(one.weight.shape) == (5, 10, 1, 1)
    assert v["pointwise_params"] == numel(one) == 5 * 10 + 5 == 55
    assert v["pointwise_rf"] == bbox_width(one, (1, 10, 8, 8), (4, 4)) == 1
    # a real backward through max pool 2x2/2: one live gradient per window, of value 1
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
    nn.MaxPool2d(2, 2)(x).sum().backward()
    live = x.grad != 0
    assert v["pool_share"] == float(live.float().mean()) == 0.25
    assert torch.all(x.grad[live] == 1)
    # the pool that keeps the size: padding (k - 1) / 2 at stride 1
    assert v["keep_pad"] == (3 - 1) // 2
    pool = nn.MaxPool2d(3, stride=1, padding=v["keep_pad"])
    assert v["keep_out"] == tuple(pool(torch.zeros(1, 1, 8, 8)).shape) == (1, 1, 8, 8)
    assert v["keep_rf"] == bbox_width(pool, (1, 1, 8, 8), (4, 4)) == 3
    assert v["seed_pool_out"] == (8 + 2 * 1 - 1) // 1 + 1 == 10
    with pytest.raises(RuntimeError, match="pad should be at most half"):
        nn.MaxPool2d(1, stride=1, padding=1)(torch.zeros(1, 1, 8, 8))
    assert "25%" in sec.stdout
    assert_printed(sec, ["fc_weight", "fc_out", "fc_params", "pointwise_weight", "pointwise_params",
                         "keep_out", "seed_pool_out"])


# ---------------------------------------------------------------------------------------------------------
# 10. gridding


def _hdc_m2(rates):
    """Wang et al.'s M_2: M_n = r_n, M_i = max(M_{i+1} - 2 r_i, M_{i+1} - 2 (M_{i+1} - r_i), r_i)."""
    m = rates[-1]
    for r in reversed(rates[1:-1]):
        m = max(m - 2 * r, m - 2 * (m - r), r)
    return m


def test_s10_gridding(sections):
    v, _, sec, _ = _section(sections, "s10_gridding")
    for dilations in [(2, 4, 8), (1, 2, 5), (2, 2, 2)]:
        key = "d" + "".join(map(str, dilations))
        stack = nn.Sequential(*[nn.Conv2d(1, 1, 3, dilation=d, padding=d) for d in dilations])
        res = probe(stack, (1, 1, 64, 64), unit=(32, 32))
        (a, b), (c, d) = res.bbox
        assert v[f"{key}_rf"] == b - a + 1 == 1 + sum(2 * r for r in dilations)
        assert v[f"{key}_covered"] == int(res.support.sum())
        assert v[f"{key}_pixels"] == (b - a + 1) * (d - c + 1)
        assert v[f"{key}_holes"] == int((~res.support[a:b + 1, c:d + 1].any(axis=1)).sum())
        assert v[f"{key}_grids"] == (int(res.support.sum()) < (b - a + 1) * (d - c + 1))
        assert v[f"{key}_m2"] == _hdc_m2(list(dilations))
        assert_printed(sec, [f"{key}_rf", f"{key}_covered", f"{key}_pixels", f"{key}_m2"])
    assert (v["d248_covered"], v["d248_pixels"]) == (225, 841) and (v["d125_covered"], v["d125_pixels"]) == (289, 289)
    assert (v["d248_m2"], v["d125_m2"], v["d222_m2"]) == (4, 2, 2)              # the rule passes 2, 2, 2


# ---------------------------------------------------------------------------------------------------------
# the page


def test_every_snippet_is_checked(sections):
    found, _ = sections
    tested = {name[len("test_"):] for name in globals() if name.startswith("test_s")}
    assert set(found) == tested


def test_cookbook_md_is_current(sections):
    """Rebuilding the page from the snippets' outputs gives exactly the committed docs/cookbook.md."""
    found, _ = sections
    committed = (ROOT / "docs" / "cookbook.md").read_text()
    assert build.render(found) == committed, "docs/cookbook.md is stale: run .venv/bin/python docs/cookbook/build.py"


def test_pictures_are_committed_and_linked(sections):
    found, out = sections
    made = {name for s in found.values() for name in s.images}
    committed = {p.name for p in (COOKBOOK / "img").iterdir() if p.suffix in build.PICTURES}
    assert made == committed and made
    page = (ROOT / "docs" / "cookbook.md").read_text()
    for name in made:
        assert f"(cookbook/img/{name})" in page
        assert (out / name).stat().st_size < 200_000


def test_readme_links_the_cookbook():
    assert "(docs/cookbook.md)" in (ROOT / "README.md").read_text()
