"""Does the textbook receptive-field recurrence r_l = r_{l-1} + (k_l - 1) * prod_{i<l} s_i hold on a real
model? Checked layer by layer against convlens on VGG-16, on the dilated Dilation8 network (k -> d (k - 1) + 1)
and on ResNet-50, which is not a chain."""
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

import convlens
from convlens.blocks import dilation_net


def recurrence(model):
    """The recurrence over every conv and max pool in module order, as if the model were a chain."""
    r, jump, rows = 1, 1, {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            k, s, d = (v if isinstance(v, int) else v[0] for v in (m.kernel_size, m.stride, m.dilation))
            r, jump = r + d * (k - 1) * jump, jump * s
            rows[name] = (k, s, d, r)
    return rows


def run(out_dir: Path) -> dict:
    found = {}
    with torch.device("meta"):                        # no weights are allocated
        vgg, d8, resnet = torchvision.models.vgg16(), dilation_net(8), torchvision.models.resnet50()
    report = convlens.analyze(vgg, (1, 3, 224, 224))
    print("VGG-16        k  s  d  recurrence  convlens")
    rows = recurrence(vgg.features)
    found["vgg_layers"] = len(rows)
    for name, (k, s, d, r) in rows.items():
        print(f"features.{name:<4} {k}  {s}  {d}  {r:>10}  {report['features.' + name].rf[0]:>8}")
        found.update({f"vgg_{name}_recurrence": r, f"vgg_{name}_convlens": report["features." + name].rf[0]})
    for key, model, shape, row in [("dilation8", d8, (1, 3, 900, 900), ""),
                                   ("resnet50", resnet, (1, 3, 224, 224), "layer4")]:
        r = list(recurrence(model).values())[-1][3]      # after the last conv (ResNet-50: layer4's last)
        rf = convlens.analyze(model, shape)[row].rf[0]
        print(f"{key} {row or 'output'}: recurrence {r}, convlens {rf}")
        found.update({f"{key}_recurrence": r, f"{key}_convlens": rf})
    return found


if __name__ == "__main__":
    run(Path("."))
