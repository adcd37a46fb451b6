"""Defaults and limits, as plain values: the modules that apply them import them from here, and so
does the command line, whose ``--help`` shows them and which must start without importing torch
(this module imports nothing)."""

from __future__ import annotations

DEFAULT_MODEL = "dilation8_voc"
"""The model the CLI analyzes when given none (the built-in Yu–Koltun dilated network)."""

FORMS = ("a built-in name, torchvision:NAME, timm:NAME, hf:TYPE[:CLASS], hf:FOLDER, path/to/file.py:CALLABLE or "
         "package.module:CALLABLE")
"""The MODEL forms the CLI and the survey take (:func:`convlens.loading.model_factory`)."""

DEFAULT_DEPTH = 2
"""Rows shown by default: the model, its children and grandchildren (ResNet blocks, VGG stages'
layers). JSON and CSV always hold every row."""

COLUMN_NAMES = ("layer", "op", "output_shape", "rf", "stride", "offset", "params", "macs", "activation", "kernel",
                "layer_stride", "padding", "dilation", "groups")
"""The module table's columns after the name (:data:`convlens.render.table.COLUMNS` describes each)."""

DEFAULT_COLUMNS = ("layer", "output_shape", "rf", "stride", "params", "macs")
"""The columns the table shows unless told otherwise (``columns``, ``--columns``)."""

MAX_PIXELS = 2**24
"""Input pixels a coverage map may span unless told otherwise (``max_pixels``, ``--max-pixels``):
4096 x 4096, 128 MiB of int64 counts."""

MAX_FRAMES = 400
"""Frames an animation may have unless told otherwise (``max_frames``, ``--max-frames``): 400 frames
at 600 ms are four minutes of GIF."""

MAX_CELLS = 4096
"""Grid cells (padded input plus output) one picture may draw unless told otherwise (``max_cells``,
``--max-cells``): a 64x64 input with its output is already too small to read."""

TIMEOUT_S = 600.0
"""Seconds a survey gives each model unless told otherwise (``timeout``, ``--timeout``)."""
