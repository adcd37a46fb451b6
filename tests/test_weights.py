"""Trained weights (--weights, convlens.load_weights): state dicts from .pt/.pth (weights_only) and
.safetensors give the ERF of the in-memory model; a pickle that would run code is refused; keys that do
not fit are listed."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
import torch.nn as nn

import convlens
from convlens.cli import main

SHAPE = (1, 1, 24, 24)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=2, dilation=2),
                                  nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))

    def forward(self, x):
        return self.body(x)


MODEL = f"{__file__}:Net"


def _trained() -> Net:
    """Weights no fresh build has: far from the default init, and skewed (the ERF shows it)."""
    torch.manual_seed(7)
    net = Net()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3).add_(0.2)
    return net


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_erf_with_saved_weights_is_the_in_memory_models(tmp_path, suffix, capsys):
    net = _trained()
    path = tmp_path / f"net{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(net.state_dict(), str(path))
    else:
        torch.save(net.state_dict(), path)
    want = convlens.erf(net, SHAPE, samples=4, seed=0).map
    out = tmp_path / "erf.npy"
    assert main(["erf", MODEL, "--input", "1x24x24", "--samples", "4", "--weights", str(path), "-o", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), want)
    assert main(["erf", MODEL, "--input", "1x24x24", "--samples", "4", "-o", str(out)]) == 0
    assert not np.array_equal(np.load(out), want)  # (without them: the fresh build's own weights)


def test_checkpoints_wrapped_or_from_data_parallel_load(tmp_path):
    net = _trained()
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    loaded = convlens.load_weights(Net(), path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))


class Payload:
    """Unpickling this would create a folder: code run by a pickle."""

    def __init__(self, where: str):
        self.where = where

    def __reduce__(self):
        return os.makedirs, (self.where,)


def test_a_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"body.0.weight": torch.zeros(4, 1, 3, 3), "x": Payload(str(marker))}, path)
    with pytest.raises(convlens.ConvlensError, match="is refused: loading it would run or build os.makedirs"):
        convlens.load_weights(Net(), path)
    assert main(["erf", MODEL, "--input", "1x24x24", "--weights", str(path)]) == 2
    err = capsys.readouterr().err
    assert "is refused" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


def test_keys_that_do_not_fit_are_listed(tmp_path):
    state = Net().state_dict()
    state.pop("body.4.bias")
    state["head.weight"] = torch.zeros(1)
    path = tmp_path / "other.pt"
    torch.save(state, path)
    with pytest.raises(convlens.ConvlensError, match=re.escape("keys 1 missing (body.4.bias); 1 unexpected "
                                                               "(head.weight)")):
        convlens.load_weights(Net(), path)
    state = Net().state_dict()
    state["body.0.weight"] = torch.zeros(8, 1, 3, 3)
    torch.save(state, path)
    with pytest.raises(convlens.ConvlensError, match=r"body\.0\.weight is \(8, 1, 3, 3\) in the file, \(4, 1, 3, 3\)"):
        convlens.load_weights(Net(), path)


@pytest.mark.parametrize("content, message", [
    (None, "no weights file"),
    (b"not a checkpoint", "cannot read"),
    ([1, 2, 3], "holds no state dict"),
])
def test_files_that_are_no_state_dict(tmp_path, content, message):
    path = tmp_path / "w.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(convlens.ConvlensError, match=message):
        convlens.load_weights(Net(), path)


def test_shift_and_the_reports_erf_take_weights(tmp_path, capsys):
    path = tmp_path / "net.pt"
    torch.save(_trained().state_dict(), path)
    assert main(["shift", MODEL, "--input", "1x24x24", "--weights", str(path), "--format", "json"]) == 0
    capsys.readouterr()
    html = tmp_path / "report.html"
    assert main(["analyze", MODEL, "--input", "1x24x24", "--html", str(html), "--weights", str(path),
                 "-o", str(tmp_path / "t.txt")]) == 0
    assert '"erf": {' in html.read_text()
    assert main(["analyze", MODEL, "--input", "1x24x24", "--weights", str(path)]) == 2
    assert "--weights applies to analyze with --html" in capsys.readouterr().err
    assert main(["plot", MODEL, "--kind", "rf", "--weights", str(path), "-o", str(tmp_path / "rf.png")]) == 2
    assert "--weights applies to --kind erf only" in capsys.readouterr().err
