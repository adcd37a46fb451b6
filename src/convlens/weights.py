"""Trained weights from a file, never by unpickling arbitrary objects.

``load_weights(model, path)`` reads a state dict from ``.safetensors`` (``safetensors.torch.load_file``) or
from a ``torch.save`` file (``.pt``, ``.pth``, ``.bin``, ...) with ``torch.load(weights_only=True)``, which
refuses a pickle that would run code or build objects other than tensors and plain containers. A
checkpoint that holds the state dict under ``state_dict``, ``model`` or ``model_state_dict`` is unwrapped,
and a ``module.`` prefix (``DataParallel``) is dropped where the model's own keys lack it. Keys must match
the model's exactly: a :class:`ConvlensError` lists the missing and unexpected ones, or the first shape
that differs. The ERF and the shift check read these weights (the geometry does not depend on them).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
import torch.nn as nn

from .errors import ConvlensError, first_line

WRAPPERS = ("state_dict", "model", "model_state_dict")
"""Keys under which training scripts commonly keep the state dict in a checkpoint."""

SHOWN = 5
"""Missing or unexpected keys a message names at most."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, by name (see the module doc)."""
    path = Path(path)
    if not path.is_file():
        raise ConvlensError(f"no weights file {str(path)!r}")
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ConvlensError(".safetensors files need safetensors: pip install 'convlens[weights]'") from None
        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # noqa: BLE001 - safetensors' own errors: a bad header, a truncated file
            raise ConvlensError(f"cannot read {str(path)!r} as safetensors: {first_line(e)}") from None
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found:
            raise ConvlensError(f"{str(path)!r} is refused: loading it would run or build {found.group(1)}, not "
                                "only tensors; save a state dict instead: torch.save(model.state_dict(), path), or "
                                "safetensors") from None
        raise ConvlensError(f"cannot read {str(path)!r} as a torch.save file or .safetensors: "
                            f"{_unpickler_detail(str(e))}") from None
    except Exception as e:  # noqa: BLE001 - not a torch.save file at all
        raise ConvlensError(f"cannot read {str(path)!r} as a torch.save file or .safetensors: "
                            f"{type(e).__name__}: {first_line(e)[:160]}") from None
    for key in WRAPPERS:
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ConvlensError(f"{str(path)!r} holds no state dict (a dict of tensors, also under "
                            f"{', '.join(WRAPPERS)}): save one with torch.save(model.state_dict(), path)")
    return data


def _unpickler_detail(message: str) -> str:
    """What torch's weights-only unpickler stopped at, without its paragraphs of advice."""
    advice = ("Weights only load failed", "Please file an issue", "Check the documentation", "Re-running")
    lines = [line.strip() for line in message.splitlines() if line.strip() and not line.strip().startswith(advice)]
    return "; ".join(lines)[:200] or "not a pickle"


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the weights file ``path`` into ``model`` in place (strict: every key, every shape); returns it."""
    state = read_state_dict(path)
    own = model.state_dict()
    if state and all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in own):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = [f"{len(found)} {what} ({', '.join(found[:SHOWN])}{', ...' if len(found) > SHOWN else ''})"
                 for what, found in (("missing", missing), ("unexpected", unexpected)) if found]
        raise ConvlensError(f"the weights in {str(path)!r} do not fit the model: keys {'; '.join(parts)}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ConvlensError(f"the weights in {str(path)!r} do not fit the model: {k} is "
                                f"{tuple(v.shape)} in the file, {tuple(own[k].shape)} in the model")
    if any(t.device.type == "meta" for t in own.values()):
        model.load_state_dict(state, strict=True, assign=True)
    else:
        model.load_state_dict(state, strict=True)
    return model
