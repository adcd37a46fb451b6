"""Turn a MODEL string into an ``nn.Module`` and a SHAPE string into a tuple (the CLI's inputs).

MODEL forms: a built-in name (``dilation8_voc``, also ``zoo:dilation8_voc``), ``torchvision:NAME``, ``timm:NAME`` (when timm is
installed), ``path/to/file.py:CALLABLE`` and ``package.module:CALLABLE``. A CALLABLE is called with no
arguments (an ``nn.Module`` instance is used as it is). Nothing is downloaded: torchvision and timm
models are built with ``weights=None`` / ``pretrained=False``.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from .api import analyze
from .defaults import FORMS
from .errors import ConvlensError, ModelError, NeedsRealWeights, first_line
from .report import Report
from .zoo import BUILTIN, DEFAULT_INPUT

FALLBACK_INPUT = (3, 224, 224)


MAX_SIZE = 2**31 - 1


def parse_shape(text: str) -> tuple[int, ...]:
    """'3x224x224' -> (3, 224, 224): channels then 1 to 3 spatial sizes, no batch."""
    if not re.fullmatch(r"\s*\d+(\s*[x×,]\s*\d+){1,3}\s*", text or ""):
        raise ConvlensError(f"bad --input {text!r}: write channels then 1-3 spatial sizes, e.g. 3x224x224 "
                            "(no batch; use --batch)")
    shape = tuple(int(s) for s in re.split(r"[x×,]", text.replace(" ", "")))
    if any(s <= 0 for s in shape):
        raise ConvlensError(f"bad --input {text!r}: sizes must be positive")
    if any(s > MAX_SIZE for s in shape):
        raise ConvlensError(f"bad --input {text!r}: sizes must be at most {MAX_SIZE} (torch's index range)")
    return shape


def model_factory(spec: str) -> Callable[[], nn.Module]:
    """A no-argument builder for the model named by ``spec`` (resolved now, built later)."""
    if spec in BUILTIN:
        return BUILTIN[spec]
    prefix, sep, rest = spec.partition(":")
    if prefix == "zoo" and rest in BUILTIN:
        return BUILTIN[rest]
    if prefix == "zoo":
        raise ConvlensError(f"the zoo has no model {rest!r}{_did_you_mean(rest)}; `convlens zoo` lists them")
    if not sep or not rest:
        raise ConvlensError(f"unknown model {spec!r}{_did_you_mean(spec)}; MODEL is {FORMS}; built-ins: "
                            f"{', '.join(sorted(BUILTIN))}")
    if prefix == "torchvision":
        return _torchvision(rest)
    if prefix == "timm":
        return _timm(rest)
    return _callable(prefix, rest)


def _torchvision(name: str) -> Callable[[], nn.Module]:
    try:
        import torchvision.models as tvm
    except ImportError:
        raise ConvlensError("torchvision:NAME needs torchvision: pip install 'convlens[vision]'") from None
    names = set(tvm.list_models())
    if name not in names:
        raise ConvlensError(f"torchvision has no model {name!r}"
                            + (_did_you_mean(name) or "; see torchvision.models.list_models()"))
    backbone = set(tvm.list_models(module=tvm.segmentation)) | set(tvm.list_models(module=tvm.detection))
    kwargs = {"weights": None, **({"weights_backbone": None} if name in backbone else {})}
    if name in ("inception_v3", "googlenet"):
        kwargs["init_weights"] = False
    return lambda: tvm.get_model(name, **kwargs)


def _timm(name: str) -> Callable[[], nn.Module]:
    try:
        import timm
    except ImportError:
        raise ConvlensError("timm:NAME needs timm: pip install timm") from None
    if name not in timm.list_models():
        raise ConvlensError(f"timm has no model {name!r}" + (_did_you_mean(name) or "; see timm.list_models()"))
    return lambda: timm.create_model(name, pretrained=False)


SUGGESTIONS = 5
"""Names a did-you-mean offers at most."""


def _did_you_mean(name: str) -> str:
    """'; did you mean torchvision:resnet50, timm:resnet50?' over every source of names (the zoo,
    torchvision's and timm's models, where installed), the closest first; '' where none is close.
    A name that a source holds exactly comes first, written in the form that finds it."""
    scored: list[tuple[float, str]] = []
    for prefix, names in _model_names().items():
        for close in difflib.get_close_matches(name.lower(), names, n=SUGGESTIONS, cutoff=0.75):
            score = 2.0 if close == name.lower() else difflib.SequenceMatcher(None, name.lower(), close).ratio()
            scored.append((score, f"{prefix}:{close}" if prefix else close))
    best = [spec for _, spec in sorted(scored, key=lambda x: -x[0])[:SUGGESTIONS]]
    return f"; did you mean {', '.join(best)}?" if best else ""


def _model_names() -> dict[str, list[str]]:
    """Model names by MODEL prefix ('' for the zoo's, which need none), of the sources installed."""
    names = {"": sorted(BUILTIN)}
    with contextlib.suppress(ImportError):
        import torchvision.models as tvm
        names["torchvision"] = tvm.list_models()
    with contextlib.suppress(ImportError):
        import timm
        names["timm"] = timm.list_models()
    return names


def _callable(where: str, attr: str) -> Callable[[], nn.Module]:
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ConvlensError(f"no file {where!r}: give path/to/file.py:CALLABLE")
        module_name = f"_convlens_user_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        # registered before it runs, as an import would: dataclasses, pickling and typing look the
        # module up by name while its body runs
        sys.modules[module_name] = module
        try:
            sys.path.insert(0, str(path.parent.resolve()))
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - any import failure is the user's file
            sys.modules.pop(module_name, None)
            raise ModelError(f"{where} does not import: {_user(e)}") from None
        finally:
            sys.path.pop(0)
    else:
        _current_directory_importable()
        try:
            module = importlib.import_module(where)
        except (Exception, SystemExit) as e:  # noqa: BLE001
            raise ModelError(f"cannot import {where!r}: {_user(e)} (MODEL is {FORMS})") from None
    target = getattr(module, attr, None)
    if target is None:
        raise ConvlensError(f"{where} has no attribute {attr!r}")
    if isinstance(target, nn.Module):
        return lambda: target
    if not callable(target):
        raise ConvlensError(f"{where}:{attr} is neither an nn.Module nor callable")

    def build() -> nn.Module:
        try:
            model = target()
        except (Exception, SystemExit) as e:  # noqa: BLE001
            raise ModelError(f"{where}:{attr}() failed: {_user(e)}") from None
        if not isinstance(model, nn.Module):
            raise ConvlensError(f"{where}:{attr}() returned {type(model).__name__}, not an nn.Module")
        return model
    return build


def _current_directory_importable() -> None:
    """Put the current directory first on the import path, as ``python -m`` does, so that
    ``package.module:CALLABLE`` finds a package in the folder the user runs convlens from (the
    ``convlens`` script's own folder is what Python puts there). It stays for the process: the
    model's code may import its siblings later, while it is built or run."""
    here = os.getcwd()
    if "" not in sys.path and here not in sys.path:  # ("": the current directory, whatever it is)
        sys.path.insert(0, here)


def build_model(factory: Callable[[], nn.Module], on_meta: bool = True) -> nn.Module:
    """Build on the meta device when possible (no weight memory, no init time), else on CPU."""
    if on_meta:
        with contextlib.suppress(Exception), torch.device("meta"):
            return factory()
    try:
        return factory()
    except ConvlensError:
        raise
    except (Exception, SystemExit) as e:  # noqa: BLE001
        raise ModelError(f"building the model failed: {_user(e)}") from None


def default_input(spec: str) -> tuple[int, ...]:
    """The input a model is made for, (C, *spatial) without batch: a zoo model's own; a timm model's
    pretrained config (``input_size``); for a torchvision model the smallest crop size (else resize
    size: 520 for the segmentation models) of its weights' preprocessing, which is the size a model
    built without weights takes; else 3x224x224. Reads metadata only."""
    prefix, _, name = spec.partition(":")
    if spec in DEFAULT_INPUT or (prefix == "zoo" and name in DEFAULT_INPUT):
        return tuple(DEFAULT_INPUT[name if prefix == "zoo" else spec])
    if prefix == "timm":
        import timm
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is not None and cfg.input_size:
            return tuple(cfg.input_size)
    elif prefix == "torchvision":
        import torchvision.models as tvm
        try:
            weights = list(tvm.get_model_weights(name))
        except (ValueError, KeyError, AttributeError):
            return FALLBACK_INPUT
        sizes = []
        for w in weights:
            preprocess = w.transforms()
            size = getattr(preprocess, "crop_size", None) or getattr(preprocess, "resize_size", None)
            if size:
                sizes.append((3, size[0], size[-1]))
        if sizes:  # the smallest: ViT-H/14 built without weights is made for 224, its default weights for 518
            return min(sizes)
    return FALLBACK_INPUT


def analyze_spec(factory: Callable[[], nn.Module], shape: tuple[int, ...], name: str | None = None) -> Report:
    """Build on meta and analyze; a meta-built model that needs a real run is built for real once."""
    try:
        return analyze(build_model(factory, on_meta=True), shape, name=name)
    except NeedsRealWeights:
        return analyze(build_model(factory, on_meta=False), shape, name=name)


def _user(e: BaseException) -> str:
    """The user's exception as one line: 'ValueError: text', or 'sys.exit(5)' for an exit."""
    if isinstance(e, SystemExit):
        return f"its code called sys.exit({e.code!r})"
    return f"{type(e).__name__}: {first_line(e)}"
