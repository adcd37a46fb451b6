"""Built-in models, constructible without downloading anything (random weights).

``ZOO`` maps each name to its ``ZooModel`` entry (builder, default input, the parameter count of its
source); every name also works as MODEL on the command line. ``convlens zoo`` lists them.
"""

from . import dilation
from .dilation import dilated_vgg16_voc
from .registry import ZooModel, entries

ZOO: dict[str, ZooModel] = entries(*dilation.ENTRIES)
BUILTIN = {name: m.build for name, m in ZOO.items()}
DEFAULT_INPUT = {name: m.input_shape for name, m in ZOO.items()}
DEFAULT_MODEL = "dilation8_voc"

__all__ = ["BUILTIN", "DEFAULT_INPUT", "DEFAULT_MODEL", "ZOO", "ZooModel", "dilated_vgg16_voc"]
