"""Turn a MODEL string into an ``nn.Module``, and ``--input``/``--kwarg`` into the model's call (the CLI's inputs).

MODEL forms: a built-in name (``dilation8_voc``, also ``zoo:dilation8_voc``), ``torchvision:NAME``, ``timm:NAME`` (when timm is
installed), ``hf:TYPE[:CLASS]`` and ``hf:FOLDER`` (:mod:`convlens.huggingface`, when transformers is installed),
``path/to/file.py:CALLABLE`` and ``package.module:CALLABLE``. A CALLABLE is called with no
arguments (an ``nn.Module`` instance is used as it is). Nothing is downloaded: torchvision and timm
models are built with ``weights=None`` / ``pretrained=False``.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn

from .api import analyze
from .defaults import FORMS
from .errors import ConvlensError, ModelError, NeedsRealWeights, first_line
from .huggingface import hf_default_input, hf_factory
from .inputs import MAX_SIZE, Const, Inputs, TensorSpec
from .report import Report
from .zoo import BUILTIN, DEFAULT_INPUT

FALLBACK_INPUT = (3, 224, 224)



def parse_shape(text: str) -> tuple[int, ...]:
    """'3x224x224' -> (3, 224, 224): channels then 1 to 3 spatial sizes, no batch."""
    shape = _sizes(text or "", text)
    if not 2 <= len(shape) <= 4:
        raise ConvlensError(f"bad --input {text!r}: write channels then 1-3 spatial sizes, e.g. 3x224x224 "
                            "(no batch; use --batch)")
    return shape


_INPUT = re.compile(r"(?:(?P<name>[A-Za-z_]\w*(?:\[[^\]=]+\])*)=)?(?P<shape>[^:]*)(?::(?P<dtype>\w+))?")


def parse_inputs(texts: Sequence[str] | None, kwargs: Sequence[str] | None, batch: int,
                 default: Callable[[], tuple[int, ...]]) -> tuple[int, ...] | Inputs:
    """The CLI's ``--input`` (repeatable) and ``--kwarg`` as the model's call: one plain shape gives
    (N, C, *spatial) as before; else :class:`~convlens.inputs.Inputs`.

    ``--input [NAME=]SHAPE[:DTYPE]``: SHAPE without batch (``--batch`` N is put in front; empty for a
    tensor of shape (N,), ``label=:int64``), ``NAME`` a
    forward parameter (a keyword argument; ``batch[image]`` an entry of a dict argument, ``images[0]`` of a
    list), unnamed ones positional in order; DTYPE a torch dtype (``int64``, ``bool``, ``float16``).
    ``--kwarg NAME=VALUE``: a constant argument, VALUE a Python literal or ``true``/``false``/``none``
    (else the text itself). ``default()``: the shape without batch when no ``--input`` is given."""
    texts, kwargs = list(texts or ()), list(kwargs or ())
    if len(texts) <= 1 and not kwargs:
        match = _INPUT.fullmatch(texts[0]) if texts else None
        if not texts or not match.group("name") and not match.group("dtype"):
            return (batch, *(parse_shape(texts[0]) if texts else default()))
    args: list = []
    named: dict = {}
    for text in texts:
        match = _INPUT.fullmatch(text)
        if match is None:
            raise ConvlensError(f"bad --input {text!r}: write [NAME=]SHAPE[:DTYPE], e.g. pixel_values=3x224x224 "
                                "or mask=1x224x224:int64 (no batch; use --batch)")
        spec = TensorSpec((batch, *_sizes(match.group("shape"), text)), _dtype(match.group("dtype"), text))
        if match.group("name") is None:
            args.append(spec)
        else:
            _put(named, match.group("name"), spec, text)
    if not texts:
        args.append((batch, *default()))
    for text in kwargs:
        name, eq, value = text.partition("=")
        if not eq or not name.strip().isidentifier():
            raise ConvlensError(f"bad --kwarg {text!r}: write NAME=VALUE, e.g. interpolate_pos_encoding=true")
        if name.strip() in named:
            raise ConvlensError(f"--kwarg {name.strip()} is also an --input: give each argument once")
        named[name.strip()] = Const(_literal(value.strip()))
    return Inputs(*args, **_lists(named))


def _sizes(text: str, whole: str) -> tuple[int, ...]:
    """The sizes after the batch ('' for a tensor of shape (N,): a class label per sample)."""
    if not text.strip():
        return ()
    if not re.fullmatch(r"\s*\d+(\s*[x×,]\s*\d+)*\s*", text or ""):
        raise ConvlensError(f"bad --input {whole!r}: the shape is sizes joined by x, e.g. 3x224x224 or 77 "
                            "(no batch; use --batch)")
    shape = tuple(int(s) for s in re.split(r"[x×,]", text.replace(" ", "")))
    if any(s <= 0 or s > MAX_SIZE for s in shape):
        raise ConvlensError(f"bad --input {whole!r}: sizes must be from 1 to {MAX_SIZE}")
    return shape


def _dtype(name: str | None, whole: str) -> torch.dtype | None:
    if name is None:
        return None
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ConvlensError(f"bad --input {whole!r}: {name!r} is no torch dtype (int64, int32, bool, float16, "
                            "bfloat16, float32, ...)")
    return dtype


def _put(named: dict, name: str, spec: TensorSpec, whole: str) -> None:
    """Set ``named[a][b]...`` for the name ``a[b]...`` (entries as dicts; :func:`_lists` turns dicts keyed
    0, 1, ... into lists)."""
    head, *keys = re.findall(r"^[^\[]+|(?<=\[)[^\]]+(?=\])", name)
    path = [head, *(int(k) if k.isdigit() else k for k in keys)]
    where = named
    for key in path[:-1]:
        where = where.setdefault(key, {})
        if not isinstance(where, dict):
            raise ConvlensError(f"bad --input {whole!r}: {key!r} is already a tensor")
    if path[-1] in where:
        raise ConvlensError(f"--input {name} is given twice")
    where[path[-1]] = spec


def _lists(value):
    if not isinstance(value, dict):
        return value
    value = {k: _lists(v) for k, v in value.items()}
    if value and all(isinstance(k, int) for k in value):
        if sorted(value) != list(range(len(value))):
            raise ConvlensError(f"list inputs must be numbered 0, 1, ... without gaps, got {sorted(value)}")
        return [value[i] for i in range(len(value))]
    return value


def _literal(text: str):
    lowered = {"true": True, "false": False, "none": None, "null": None}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def model_factory(spec: str, config: Sequence[str] | None = None) -> Callable[[], nn.Module]:
    """A no-argument builder for the model named by ``spec`` (resolved now, built later); ``config``:
    ``KEY=VALUE`` overrides of an ``hf:`` model's config."""
    if spec.startswith("hf:"):
        return hf_factory(*_hf_name(spec), **parse_config(config))
    if config:
        raise ConvlensError(f"--config applies to hf: models only, not {spec!r}")
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


def _hf_name(spec: str) -> tuple[str, str | None]:
    """'hf:vit' -> ('vit', None); 'hf:segformer:SegformerForSemanticSegmentation' -> (type, class);
    'hf:path/to/folder' -> (folder, None)."""
    rest = spec.removeprefix("hf:")
    if not rest:
        raise ConvlensError("hf: needs a model type or a folder: hf:vit, hf:segformer:AutoModelForSemanticSegmentation, "
                            "hf:path/to/saved")
    if Path(rest).expanduser().is_dir():
        return rest, None
    name, _, cls = rest.partition(":")
    return name, cls or None


def parse_config(texts: Sequence[str] | None) -> dict:
    """``--config KEY=VALUE`` (repeatable) as a dict; VALUE a Python literal (lists too), true/false/none,
    else the text."""
    out = {}
    for text in texts or ():
        key, eq, value = text.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ConvlensError(f"bad --config {text!r}: write KEY=VALUE, e.g. hidden_size=192 or depths=[1,1,3,1]")
        out[key.strip()] = _literal(value.strip())
    return out


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


def default_input(spec: str, config: Sequence[str] | None = None) -> tuple[int, ...]:
    """The input a model is made for, (C, *spatial) without batch: a zoo model's own; a timm model's
    pretrained config (``input_size``); an ``hf:`` model's config (``num_channels``, ``image_size``); for a
    torchvision model the smallest crop size (else resize
    size: 520 for the segmentation models) of its weights' preprocessing, which is the size a model
    built without weights takes; else 3x224x224. Reads metadata only."""
    prefix, _, name = spec.partition(":")
    if prefix == "hf":
        return hf_default_input(_hf_name(spec)[0], **parse_config(config)) or FALLBACK_INPUT
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


def analyze_spec(factory: Callable[[], nn.Module], shape: tuple[int, ...] | Inputs, name: str | None = None,
                 grid: str | None = None) -> Report:
    """Build on meta and analyze; a meta-built model that needs a real run is built for real once."""
    try:
        return analyze(build_model(factory, on_meta=True), shape, name=name, grid=grid)
    except NeedsRealWeights:
        return analyze(build_model(factory, on_meta=False), shape, name=name, grid=grid)


def _user(e: BaseException) -> str:
    """The user's exception as one line: 'ValueError: text', or 'sys.exit(5)' for an exit."""
    if isinstance(e, SystemExit):
        return f"its code called sys.exit({e.code!r})"
    return f"{type(e).__name__}: {first_line(e)}"
