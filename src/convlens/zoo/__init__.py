"""Built-in models, constructible without downloading anything (random weights)."""

from .dilation import dilated_vgg16_voc

BUILTIN = {
    "dilation8_voc": dilated_vgg16_voc,
}
DEFAULT_MODEL = "dilation8_voc"
DEFAULT_INPUT = {"dilation8_voc": (3, 900, 900)}

__all__ = ["BUILTIN", "DEFAULT_INPUT", "DEFAULT_MODEL", "dilated_vgg16_voc"]
