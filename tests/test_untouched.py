"""Nothing meta is ever written into the model.

The promise: every parameter, buffer and tensor attribute of every submodule — including those a forward
creates or replaces — is the same object, on the same device, with the same dtype, shape and value after
any convlens entry point, and the model runs on real input afterwards.

Why it needs a test: ``convlens.analyze`` runs the model once on meta tensors (a TorchDispatchMode swaps
the real tensors for meta copies). A forward that stores a tensor on its module — torchvision's detection
``AnchorGenerator`` re-assigning ``cell_anchors``, RoPE tables and position grids cached by size, a
buffer replaced by ``self.table = self.table.to(x)`` — stores the meta copy, and the user's model is
broken for every later real forward ("Cannot copy out of meta tensor; no data!").

How: ``tests/untouched.py`` snapshots every tensor reachable from every submodule (parameters and their
grads, buffers, tensors in ``__dict__`` at any depth of lists/tuples/dicts: object, device, dtype, shape,
requires_grad, a CPU clone of the value), the attribute names and the training flags. Each test builds a
model with random weights (``weights=None``, ``pretrained=False``), puts it in eval mode, snapshots it,
calls the entry point and checks that nothing differs, also when the entry point raised (a failure must
not damage the model either; the test then fails with the error, since every model here analyzes). Then
it runs the model on a real input. That first real forward may legitimately create or replace what the
model caches (ConViT replaces a placeholder ``rel_indices``, LeViT fills ``attention_bias_cache``), so
it is only required to run; when it changed something, the warmed model is snapshotted, analyzed again
(the forward now *replaces* cached tensors instead of creating them) and run again, and then nothing
may differ, since a real eval-mode forward on the same input changes nothing a warmed model holds.

Models:

- every torchvision classification, segmentation and detection model, at small inputs: 64x64, except
  inception_v3 (80: it needs at least 75), maxvit_t (224: every stage must divide by its 7x7 windows)
  and the ViTs (built with ``image_size=64``, vit_h_14 with 56: a multiple of its 14-pixel patches).
  Detection models are built with ``min_size=64, max_size=64`` where the builder accepts it (not the SSDs,
  which always resize to 300 / 320) and analyzed at (1, 3, 64, 64); their real input is a list of one
  3x64x64 image. Every model is covered, the largest too: regnet_y_128gf and vit_h_14 (~640 M
  parameters) cost about 10 s of CPU each, mostly building (weight init) and cloning 2.5 GB of weights;
- 20 timm models (timm 1.0.31, from the ``test`` extra) chosen for what
  they cache or read in forward: RoPE (vit_small_patch16_rope_224, eva02_tiny, a DINOv3), relative
  position tables, bias caches and attention masks (swin, maxvit, levit, coat, xcit, convit, edgenext,
  hiera, sequencer, pvt_v2, fastvit, mobilevit) and plain CNNs as controls;
- small synthetic models, one per way a forward can write into its module (replace a registered buffer,
  re-assign a list of tensors, fill a dict cache, create an attribute, keep a one-slot cache by size, read
  a constant with ``.item()``, all of them nested with a shared submodule), through ``analyze``; the
  ones whose real forwards are idempotent across input sizes also through ``erf`` and ``shift_check``
  (which analyze on meta and then run the model for real), warmed first;
- self-tests: the snapshot names each kind of damage (meta buffer, replaced parameter, changed value or
  dtype, meta tensor in a list or dict, new attribute, training flag, a new ``.grad``) and accepts NaN.

Time: about 160 s of CPU (user + sys) for the whole file, so about 1.5 min with ``pytest -n 2`` on two
idle cores (3.5-4 min measured on a shared two-core machine at load average 4-5.7).
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
import torch.nn as nn
import torchvision.models as tvm

import convlens
from untouched import Snapshot, assert_no_meta, assert_untouched, differences, snapshot

CLASSIFIERS = tvm.list_models(module=tvm)
SEGMENTERS = tvm.list_models(module=tvm.segmentation)
DETECTORS = tvm.list_models(module=tvm.detection)

# input side per classifier where 64 is too small for the architecture
CLASSIFIER_SIZE = {"inception_v3": 80, "maxvit_t": 224}
# ViTs check the input size against the one they were built for: build them for a small one
VIT_IMAGE_SIZE = {"vit_b_16": 64, "vit_b_32": 64, "vit_l_16": 64, "vit_l_32": 64, "vit_h_14": 56}
# detection builders that fix their own transform size (min_size / max_size are not accepted)
FIXED_SIZE_DETECTORS = {"ssd300_vgg16", "ssdlite320_mobilenet_v3_large"}

# timm name -> (create_model kwargs, input side)
TIMM: dict[str, tuple[dict[str, Any], int]] = {
    "resnet18": ({}, 64),
    "efficientnet_b0": ({}, 64),
    "convnext_atto": ({}, 64),
    "regnetx_002": ({}, 64),
    "poolformer_s12": ({}, 64),
    "mobilevit_xxs": ({}, 64),
    "pvt_v2_b0": ({}, 64),
    "fastvit_t8": ({}, 64),
    "edgenext_xx_small": ({}, 64),
    "sequencer2d_s": ({}, 64),
    "xcit_nano_12_p16_224": ({}, 64),
    "vit_tiny_patch16_dinov3_qkvb": ({}, 64),
    "convit_tiny": ({"img_size": 64}, 64),
    "levit_128s": ({"img_size": 64}, 64),
    "coat_lite_tiny": ({"img_size": 64}, 64),
    "swin_tiny_patch4_window7_224": ({"img_size": 64}, 64),
    "maxvit_tiny_rw_224": ({"img_size": 64}, 64),
    "hiera_tiny_224": ({"img_size": 64}, 64),
    "eva02_tiny_patch14_224": ({"img_size": 56}, 56),
    "vit_small_patch16_rope_224": ({"img_size": 64}, 64),
}


def call_and_compare(model: nn.Module, entry: Callable[[], Any], name: str, before: Snapshot | None = None
                     ) -> None:
    """Snapshot (unless given ``before``), call ``entry``, compare; then fail with ``entry``'s error if it
    raised (the model must be untouched even when an entry point fails)."""
    before = snapshot(model) if before is None else before
    assert_no_meta(before, f"before {name}")
    error: Exception | None = None
    try:
        entry()
    except Exception as e:  # noqa: BLE001 - compared first, reported below
        error = e
    raised = f"{type(error).__name__}: {error}" if error is not None else ""
    assert_untouched(before, model, f"after {name}" + (f" (which raised {raised})" if raised else ""))
    assert error is None, f"{name} raised {raised}"


def run_real(model: nn.Module, real_input: Any, after: str) -> None:
    try:
        with torch.no_grad():
            model(real_input)
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"the model no longer runs on a real input {after}: {type(e).__name__}: {e}")


def check_analyze_leaves_model_untouched(model: nn.Module, shape: tuple[int, ...], real_input: Any) -> None:
    """Analyze the model as built and run it for real; if that real forward created or replaced
    anything (a cache), analyze the warmed model too and run it again.

    Each analyze must leave the model exactly as it found it. A first real forward may legitimately
    create or replace what the model caches (ConViT replaces a placeholder ``rel_indices``), so it is
    only required to run and to leave no meta tensor; a real forward of the warmed model on the same
    input must change nothing. When the first forward changed nothing, the warmed model is the fresh
    one and is not analyzed twice.
    """
    model.eval()

    def analyze() -> None:
        convlens.analyze(model, shape)

    fresh = snapshot(model)
    call_and_compare(model, analyze, "convlens.analyze (fresh model)", before=fresh)
    run_real(model, real_input, "after convlens.analyze")
    if not differences(fresh, snapshot(model, values=False)):
        return
    warm = snapshot(model)
    assert_no_meta(warm, "after convlens.analyze and a real forward")
    call_and_compare(model, analyze, "convlens.analyze (warmed by a real forward)", before=warm)
    run_real(model, real_input, "after a second convlens.analyze")
    assert_untouched(warm, model, "after a real forward of the warmed model (that followed convlens.analyze)")


def _image(side: int) -> torch.Tensor:
    return torch.randn(3, side, side, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------- torchvision


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_torchvision_classifier_untouched(name: str) -> None:
    kwargs: dict[str, Any] = {"weights": None}
    side = CLASSIFIER_SIZE.get(name, 64)
    if name in VIT_IMAGE_SIZE:
        side = kwargs["image_size"] = VIT_IMAGE_SIZE[name]
    if name in ("inception_v3", "googlenet"):
        kwargs["init_weights"] = False  # the default truncated-normal init is slow and warns
    model = tvm.get_model(name, **kwargs)
    check_analyze_leaves_model_untouched(model, (1, 3, side, side), _image(side)[None])


@pytest.mark.parametrize("name", SEGMENTERS)
def test_torchvision_segmenter_untouched(name: str) -> None:
    model = tvm.get_model(name, weights=None, weights_backbone=None)
    check_analyze_leaves_model_untouched(model, (1, 3, 64, 64), _image(64)[None])


@pytest.mark.parametrize("name", DETECTORS)
def test_torchvision_detector_untouched(name: str) -> None:
    kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None}
    if name not in FIXED_SIZE_DETECTORS:
        kwargs.update(min_size=64, max_size=64)
    model = tvm.get_model(name, **kwargs)
    check_analyze_leaves_model_untouched(model, (1, 3, 64, 64), [_image(64)])


# ---------------------------------------------------------------------------------------------- timm


@pytest.mark.parametrize("name", sorted(TIMM))
def test_timm_model_untouched(name: str) -> None:
    import timm
    kwargs, side = TIMM[name]
    model = timm.create_model(name, pretrained=False, **kwargs)
    check_analyze_leaves_model_untouched(model, (1, 3, side, side), _image(side)[None])


# ----------------------------------------------------------------------------------- synthetic models


class BufferReplaced(nn.Module):
    """Re-assigns a registered buffer in forward: ``self.table = self.table.to(x)`` (as many models do
    to follow the input's dtype and device)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer("table", torch.linspace(0.5, 2.0, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.table = self.table.to(x)
        return self.conv(x) * self.table.view(1, -1, 1, 1)


class ListReassigned(nn.Module):
    """A plain list of tensors re-assigned in forward (torchvision's AnchorGenerator.cell_anchors)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.scales = [torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0.5, 0.5, 0.5, 0.5])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.scales = [s.to(dtype=x.dtype, device=x.device) for s in self.scales]
        return self.conv(x) * self.scales[0].view(1, -1, 1, 1) + self.scales[1].view(1, -1, 1, 1)


class DictCache(nn.Module):
    """A dict cache filled lazily, keyed by device and input size (RoPE tables, position grids)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.cache: dict[tuple[str, int, int], tuple[torch.Tensor, ...]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        key = (str(x.device), h, w)
        if key not in self.cache:
            ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
            xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
            self.cache[key] = (ys.view(-1, 1), [xs.view(1, -1)])
        ys, (xs,) = self.cache[key]
        return self.conv(x) + ys + xs


class SizeCache(nn.Module):
    """One cached grid, replaced whenever the input size changes (a single-slot cache)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.grid: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grid is None or self.grid.shape != x.shape[-2:] or self.grid.device != x.device:
            self.grid = torch.arange(x.shape[-2] * x.shape[-1], dtype=x.dtype, device=x.device).view(x.shape[-2:])
        return self.conv(x) + 1e-3 * self.grid


class AttributeCreated(nn.Module):
    """Creates an attribute on its first forward (a lazily built mask)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "mask"):
            self.mask = torch.ones(4, 1, 1, dtype=x.dtype, device=x.device)
        return self.conv(x) * self.mask


class ConstantRead(nn.Module):
    """Reads a buffer's value in forward (``.item()``: impossible on meta) and caches a tensor built
    from it on its first forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer("gain", torch.tensor(2.0))
        self.scaled: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gain.item()
        if self.scaled is None:
            self.scaled = torch.full((4, 1, 1), g, dtype=x.dtype, device=x.device)
        return self.conv(x) * self.scaled


class Nested(nn.Module):
    """The writers above as submodules, one of them shared under two names."""

    def __init__(self) -> None:
        super().__init__()
        self.a = BufferReplaced()
        self.b = nn.Sequential(nn.Conv2d(4, 3, 1), ListReassigned())
        self.c = nn.Conv2d(4, 3, 1)
        self.d = DictCache()
        self.shared = self.d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(self.a(x))
        return self.shared(self.c(y)) + self.d(self.c(y))


SYNTHETIC: dict[str, Callable[[], nn.Module]] = {
    "buffer_replaced": BufferReplaced,
    "list_reassigned": ListReassigned,
    "dict_cache": DictCache,
    "size_cache": SizeCache,
    "attribute_created": AttributeCreated,
    "constant_read": ConstantRead,
    "nested": Nested,
}
SYN_SHAPE = (1, 3, 16, 16)


def _build(name: str, warm: bool) -> nn.Module:
    torch.manual_seed(0)
    model = SYNTHETIC[name]().eval()
    if warm:  # a real forward first: the caches hold real tensors for this input
        with torch.no_grad():
            model(torch.randn(SYN_SHAPE))
    return model


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_writer_untouched_by_analyze(name: str) -> None:
    check_analyze_leaves_model_untouched(_build(name, warm=False), SYN_SHAPE, torch.randn(SYN_SHAPE))


ENTRY_POINTS: dict[str, Callable[[nn.Module], Any]] = {
    "erf": lambda m: convlens.erf(m, SYN_SHAPE, samples=2, batch_size=2),
    # shifted inputs are smaller: only models whose real forwards do not cache per size stay equal
    "shift_check": lambda m: convlens.shift_check(m, SYN_SHAPE, shift=2),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("name", ["buffer_replaced", "list_reassigned", "attribute_created", "constant_read"])
def test_synthetic_writer_untouched_by_real_entry_points(name: str, entry: str) -> None:
    """erf and shift_check analyze on meta, then run the model for real: the meta pass must leave
    nothing behind. The models are warmed first (their real forwards write the same objects again)."""
    model = _build(name, warm=True)
    call_and_compare(model, lambda: ENTRY_POINTS[entry](model), f"convlens.{entry}")


# ------------------------------------------------------------------------- the snapshot can fail


def _damage_cases() -> dict[str, tuple[Callable[[nn.Module], None], str]]:
    def meta_buffer(m: nn.Module) -> None:
        m.a.table = torch.empty(4, device="meta")

    def new_param_object(m: nn.Module) -> None:
        m.c.weight = nn.Parameter(m.c.weight.detach().clone())

    def value(m: nn.Module) -> None:
        with torch.no_grad():
            m.c.bias[0] += 1

    def dtype(m: nn.Module) -> None:
        m.a.table = m.a.table.double()

    def list_item(m: nn.Module) -> None:
        m.b[1].scales[1] = m.b[1].scales[1].to("meta")

    def dict_entry(m: nn.Module) -> None:
        m.d.cache[("meta", 1, 1)] = (torch.empty(1, device="meta"), [])

    def attribute(m: nn.Module) -> None:
        m.c.note = "set in forward"

    def training(m: nn.Module) -> None:
        m.b.train()

    def grad(m: nn.Module) -> None:
        m.c.weight.grad = torch.zeros_like(m.c.weight)

    return {
        "meta_buffer": (meta_buffer, "a.table: a meta tensor"),
        "new_param_object": (new_param_object, "c.weight: another object"),
        "value": (value, "c.bias: its value changed"),
        "dtype": (dtype, "a.table: another object"),
        "list_item": (list_item, "b.1.scales[1]: a meta tensor"),
        "dict_entry": (dict_entry, "d.cache[('meta', 1, 1)][0]: a meta tensor"),
        "attribute": (attribute, "c: attributes added ['note']"),
        "training": (training, "b: training False -> True"),
        "grad": (grad, "c.weight.grad: a new tensor"),
    }


@pytest.mark.parametrize("case", sorted(_damage_cases()))
def test_snapshot_names_the_damage(case: str) -> None:
    damage, first = _damage_cases()[case]
    model = _build("nested", warm=True)
    before = snapshot(model)
    damage(model)
    with pytest.raises(AssertionError) as info:
        assert_untouched(before, model, "after damage")
    assert str(info.value).startswith(f"after damage: {first}"), str(info.value)


def test_snapshot_accepts_an_untouched_model_with_nan() -> None:
    model = _build("nested", warm=True)
    with torch.no_grad():
        model.c.bias[1] = float("nan")
    before: Snapshot = snapshot(model)
    with torch.no_grad():
        model(torch.randn(SYN_SHAPE))
    assert_untouched(before, model, "after a real forward")
    assert differences(before, snapshot(model)) == []
