"""WaveNet: van den Oord et al., "WaveNet: A Generative Model for Raw Audio" (arXiv:1609.03499, 2016),
with the layer table of the reference TensorFlow code ibab/tensorflow-wavenet (``wavenet/model.py``
and the default ``wavenet_params.json``).

Layer table (defaults of ``wavenet_params.json``: filter_width 2, dilations 1, 2, 4, ..., 512
repeated 5 times, residual_channels 32, dilation_channels 32, skip_channels 512,
quantization_channels 256, use_biases true, scalar_input false):

* causal layer: kernel-2 causal conv 256 -> 32, no bias (the reference code never gives it one);
  without scalar input its width is filter_width (2), ``initial_filter_width`` 32 is used only for
  scalar input;
* 50 residual layers, dilation d: two kernel-2 causal convs 32 -> 32 dilated by d ("filter" and
  "gate"), ``tanh(filter) * sigmoid(gate)``, then a 1x1 "dense" conv 32 -> 32 added to the layer's
  input (residual) and a 1x1 "skip" conv 32 -> 512;
* post-processing: sum of the 50 skip outputs -> ReLU -> 1x1 conv 512 -> 512 -> ReLU -> 1x1 conv
  512 -> 256 (logits over the 256 mu-law levels).

Biases: the json's ``"use_biases": true`` is followed (the ``WaveNetModel`` constructor's own default
is False; ``bias=False`` gives that variant): filter, gate, dense, skip and both post-processing
convs have biases, the causal layer has none.

Causality is by left zero padding of (filter_width - 1) * dilation (the reference code crops
instead, so its output is shorter by the receptive field; the geometry of each output unit is the
same). Input: a one-hot (256, T) sequence; output (256, T).

Parameter count (use_biases true), from the table:
causal 2*256*32 = 16,384; per residual layer 2*(2*32*32 + 32) + (32*32 + 32) + (32*512 + 512)
= 22,112, times 50 = 1,105,600; post-processing 512*512 + 512 + 512*256 + 256 = 393,984;
total 1,515,968 (without biases: 1,484,800).

Receptive field (the reference code's ``calculate_receptive_field``):
(filter_width - 1) * sum(dilations) + 1 + (filter_width - 1) = 5 * 1023 + 2 = 5,117 samples.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import ZooModel


class ResidualLayer(nn.Module):
    """Gated causal dilated layer: returns (input + dense(z), skip(z)), z = tanh(filter) * sigmoid(gate)."""

    def __init__(self, residual_channels: int, dilation_channels: int, skip_channels: int, dilation: int,
                 filter_width: int = 2, bias: bool = True):
        super().__init__()
        self.pad = nn.ConstantPad1d(((filter_width - 1) * dilation, 0), 0.0)
        self.filter = nn.Conv1d(residual_channels, dilation_channels, filter_width, dilation=dilation, bias=bias)
        self.gate = nn.Conv1d(residual_channels, dilation_channels, filter_width, dilation=dilation, bias=bias)
        self.dense = nn.Conv1d(dilation_channels, residual_channels, 1, bias=bias)
        self.skip = nn.Conv1d(dilation_channels, skip_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.pad(x)
        z = torch.tanh(self.filter(p)) * torch.sigmoid(self.gate(p))
        return x + self.dense(z), self.skip(z)


class WaveNet(nn.Module):
    def __init__(self, dilations, quantization_channels: int = 256, residual_channels: int = 32,
                 dilation_channels: int = 32, skip_channels: int = 512, filter_width: int = 2,
                 initial_filter_width: int = 2, bias: bool = True):
        super().__init__()
        self.causal = nn.Sequential(
            nn.ConstantPad1d((initial_filter_width - 1, 0), 0.0),
            nn.Conv1d(quantization_channels, residual_channels, initial_filter_width, bias=False),
        )
        self.layers = nn.ModuleList(
            ResidualLayer(residual_channels, dilation_channels, skip_channels, d, filter_width, bias)
            for d in dilations)
        self.relu1 = nn.ReLU()
        self.postprocess1 = nn.Conv1d(skip_channels, skip_channels, 1, bias=bias)
        self.relu2 = nn.ReLU()
        self.postprocess2 = nn.Conv1d(skip_channels, quantization_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.causal(x)
        total = None
        for layer in self.layers:
            x, skip = layer(x)
            total = skip if total is None else total + skip
        return self.postprocess2(self.relu2(self.postprocess1(self.relu1(total))))


def wavenet(stacks: int = 5, layers_per_stack: int = 10, residual_channels: int = 32, dilation_channels: int = 32,
            skip_channels: int = 512, quantization_channels: int = 256, filter_width: int = 2,
            bias: bool = True) -> WaveNet:
    """WaveNet with dilations 1, 2, ..., 2**(layers_per_stack - 1) repeated ``stacks`` times
    (defaults: ibab/tensorflow-wavenet's ``wavenet_params.json``), random weights."""
    dilations = [2 ** i for i in range(layers_per_stack)] * stacks
    return WaveNet(dilations, quantization_channels, residual_channels, dilation_channels, skip_channels,
                   filter_width, initial_filter_width=filter_width, bias=bias)


ENTRIES = [
    ZooModel(
        name="wavenet",
        build=wavenet,
        input_shape=(256, 16000),  # one second at the reference code's 16 kHz sample rate
        params=1_515_968,
        source="van den Oord et al. 2016 (arXiv:1609.03499); layer table and count from "
               "ibab/tensorflow-wavenet wavenet/model.py with the default wavenet_params.json (use_biases true)",
        summary="WaveNet, 5 stacks of gated causal dilated convs (dilations 1..512), receptive field 5117 samples",
    ),
]
