"""HuggingFace ``transformers`` models built from a config, downloading nothing.

``hf_model("vit", hidden_size=192)`` builds ``AutoModel`` for any ``model_type`` that
``AutoConfig.for_model`` knows, its config's defaults overridden by keyword (a key the config lacks is
refused, with the close ones named: a typo would otherwise be kept silently as a new attribute);
``cls`` picks another class (``"AutoModelForSemanticSegmentation"``, ``"SegformerForSemanticSegmentation"``).
A folder written by ``save_pretrained`` builds its own class (the config's ``architectures``) with its
weights, read from the folder only. On the CLI these are the MODEL forms ``hf:TYPE``, ``hf:TYPE:CLASS``
and ``hf:FOLDER`` with ``--config KEY=VALUE``. The model's ``ModelOutput`` fields name its output rows
(``[last_hidden_state]``, ``[logits]``).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from .errors import ConvlensError


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ConvlensError("hf: models need transformers: pip install 'convlens[hf]'") from None
    return transformers


def _model_types() -> list[str]:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    return sorted(CONFIG_MAPPING_NAMES)


def _close(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=5, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _folder(name: str) -> Path | None:
    path = Path(name).expanduser()
    return path if (path / "config.json").is_file() else None


def hf_config(name: str, **overrides: Any):
    """The ``PretrainedConfig`` of ``name`` (a model type or a ``save_pretrained`` folder) with
    ``overrides`` applied (each must be a key of the config)."""
    transformers = _transformers()
    folder = _folder(name)
    if folder is not None:
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    elif name in _model_types():
        config = transformers.AutoConfig.for_model(name)
    else:
        where = "a folder without config.json" if Path(name).expanduser().is_dir() else "no model type"
        raise ConvlensError(f"hf:{name}: {where}{_close(name, _model_types())}; give a model_type that "
                            "transformers' AutoConfig.for_model knows (vit, convnext, segformer, ...) or a folder "
                            "written by save_pretrained")
    unknown = [k for k in overrides if not hasattr(config, k)]
    if unknown:
        keys = sorted(k for k in config.to_dict() if not k.startswith("_"))
        raise ConvlensError(f"the {config.model_type} config has no key {unknown[0]!r}{_close(unknown[0], keys)} "
                            f"(keys: {', '.join(keys[:12])}{', ...' if len(keys) > 12 else ''})")
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def hf_factory(name: str, cls: str | None = None, **overrides: Any) -> Callable[[], nn.Module]:
    """A no-argument builder of :func:`hf_model` (the config is read and checked now)."""
    transformers = _transformers()
    config = hf_config(name, **overrides)
    folder = _folder(name)
    if cls is None:
        cls = (config.architectures or ["AutoModel"])[0] if folder is not None else "AutoModel"
    builder = getattr(transformers, cls, None)
    if builder is None or not (hasattr(builder, "from_config") or hasattr(builder, "_from_config")):
        raise ConvlensError(f"transformers has no model class {cls!r}{_close(cls, [n for n in dir(transformers) if n[:1].isupper()])}")

    def build() -> nn.Module:
        on_meta = torch.get_default_device().type == "meta"  # (convlens.loading.build_model builds on meta)
        if folder is not None and not on_meta:
            return builder.from_pretrained(str(folder), local_files_only=True, config=config)
        if hasattr(builder, "from_config"):
            return builder.from_config(config)
        return builder._from_config(config)
    return build


def hf_model(name: str, cls: str | None = None, **overrides: Any) -> nn.Module:
    """A HuggingFace model from its config (see the module doc): built on the default device with freshly
    initialised weights, or with a ``save_pretrained`` folder's own weights; ``eval()`` mode."""
    return hf_factory(name, cls, **overrides)().eval()


def hf_default_input(name: str, **overrides: Any) -> tuple[int, ...] | None:
    """(num_channels, *image_size) from the config, None where it states no image size."""
    config = hf_config(name, **overrides)
    size = getattr(config, "image_size", None)
    if size is None:
        return None
    size = (size, size) if isinstance(size, int) else tuple(size)
    return (getattr(config, "num_channels", 3), *size)
