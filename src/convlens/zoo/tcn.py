"""Temporal convolutional network: Bai, Kolter & Koltun, "An Empirical Evaluation of Generic
Convolutional and Recurrent Networks for Sequence Modeling" (arXiv:1803.01271, 2018), following the
reference code locuslab/TCN (``TCN/tcn.py``, ``TCN/mnist_pixel/model.py``, ``pmnist_test.py``).

TemporalBlock (level i, dilation 2**i): weight-normed Conv1d(k, dilation d, padding (k-1)*d), Chomp1d
(drop the last (k-1)*d steps: causal), ReLU, Dropout, and the same again; the residual is the input,
or a 1x1 Conv1d (with bias, no weight norm) when the channel count changes; ReLU after the sum.
The sequence-MNIST model (``pmnist_test.py`` defaults: levels 8, nhid 25, ksize 7, dropout 0.05,
1 input channel, 784 steps, 10 classes) puts ``Linear(25, 10)`` on the last time step and a
log-softmax on top.

Weight norm is kept as in the reference (``weight_norm=False`` gives plain convs): its parameters
are g (one per output channel) and v (the weight's shape), so each weight-normed conv has
out_channels more parameters than a plain one. Parameter count, from the table:
level 0: conv1 (1*25*7 + 25 + 25) = 225, conv2 (25*25*7 + 25 + 25) = 4,425, downsample 25 + 25 = 50;
levels 1..7: 2 * 4,425 = 8,850 each; Linear 25*10 + 10 = 260;
total 4,700 + 7 * 8,850 + 260 = 66,910 (66,510 without the 16 g vectors). The paper's Table 1 gives
"70K" for the TCN on sequential MNIST.

Receptive field: 1 + 2 * (k - 1) * (2**levels - 1) = 1 + 2 * 6 * 255 = 3,061 steps (longer than the
784-step sequence: the last step sees all of it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from .registry import ZooModel


class Chomp1d(nn.Module):
    def __init__(self, chomp_size: int):
        super().__init__()
        self.chomp_size = chomp_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :-self.chomp_size].contiguous()


class TemporalBlock(nn.Module):
    def __init__(self, n_inputs: int, n_outputs: int, kernel_size: int, dilation: int, dropout: float = 0.05,
                 weight_norm: bool = True):
        super().__init__()
        padding = (kernel_size - 1) * dilation
        wn = _weight_norm if weight_norm else (lambda m: m)
        self.conv1 = wn(nn.Conv1d(n_inputs, n_outputs, kernel_size, padding=padding, dilation=dilation))
        self.chomp1 = Chomp1d(padding)
        self.relu1 = nn.ReLU()
        self.dropout1 = nn.Dropout(dropout)
        self.conv2 = wn(nn.Conv1d(n_outputs, n_outputs, kernel_size, padding=padding, dilation=dilation))
        self.chomp2 = Chomp1d(padding)
        self.relu2 = nn.ReLU()
        self.dropout2 = nn.Dropout(dropout)
        self.net = nn.Sequential(self.conv1, self.chomp1, self.relu1, self.dropout1,
                                 self.conv2, self.chomp2, self.relu2, self.dropout2)
        self.downsample = nn.Conv1d(n_inputs, n_outputs, 1) if n_inputs != n_outputs else None
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(out + res)


class TemporalConvNet(nn.Module):
    def __init__(self, num_inputs: int, num_channels, kernel_size: int = 2, dropout: float = 0.2,
                 weight_norm: bool = True):
        super().__init__()
        layers = []
        for i, out_channels in enumerate(num_channels):
            in_channels = num_inputs if i == 0 else num_channels[i - 1]
            layers.append(TemporalBlock(in_channels, out_channels, kernel_size, 2 ** i, dropout, weight_norm))
        self.network = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


class TCN(nn.Module):
    """Sequence classifier of ``TCN/mnist_pixel/model.py``: TCN, Linear on the last step, log-softmax."""

    def __init__(self, input_size: int, output_size: int, num_channels, kernel_size: int, dropout: float,
                 weight_norm: bool = True):
        super().__init__()
        self.tcn = TemporalConvNet(input_size, num_channels, kernel_size, dropout, weight_norm)
        self.linear = nn.Linear(num_channels[-1], output_size)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        y1 = self.tcn(inputs)
        return F.log_softmax(self.linear(y1[:, :, -1]), dim=1)


def tcn_seqmnist(levels: int = 8, hidden: int = 25, kernel_size: int = 7, input_channels: int = 1,
                 num_classes: int = 10, dropout: float = 0.05, weight_norm: bool = True) -> TCN:
    """The sequential-MNIST TCN of locuslab/TCN's ``pmnist_test.py`` defaults, random weights."""
    return TCN(input_channels, num_classes, [hidden] * levels, kernel_size, dropout, weight_norm)


ENTRIES = [
    ZooModel(
        name="tcn_seqmnist",
        build=tcn_seqmnist,
        input_shape=(1, 784),
        params=66_910,
        source="Bai, Kolter & Koltun 2018 (arXiv:1803.01271), Table 1 'Seq. MNIST, TCN, 70K'; exact count from "
               "locuslab/TCN TCN/tcn.py + TCN/mnist_pixel (levels 8, nhid 25, ksize 7, weight norm)",
        summary="TCN for sequential MNIST: 8 residual blocks of causal dilated convs (k 7), receptive field 3061",
    ),
]
