"""Strided conv, pooling or padding? Cost, receptive field and the border pixels each one reads."""
from pathlib import Path

import torch.nn as nn

import convlens


def candidates(c=64):
    return {"conv 3x3, stride 1, padding 1": nn.Conv2d(c, c, 3, 1, 1),
            "conv 3x3 pad 1, then max pool 2x2/2": nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.MaxPool2d(2)),
            "conv 3x3, stride 2, padding 1": nn.Conv2d(c, c, 3, 2, 1),
            "conv 3x3, stride 2, padding 0": nn.Conv2d(c, c, 3, 2, 0),
            "max pool 2x2, stride 2": nn.MaxPool2d(2),
            "max pool 3x3, stride 2": nn.MaxPool2d(3, 2)}


def run(out_dir: Path) -> dict:
    found = {}
    print(f"{'on 64x224x224':<36}{'out':>4} {'rf':>4} {'stride':>7} {'offset':>6} {'params':>7} {'MACs':>13} "
          f"{'corner pad':>10} {'unread':>7}")
    for i, (label, model) in enumerate(candidates().items()):
        report = convlens.analyze(model, (1, 64, 224, 224))
        out = report[""]
        unread = sum(d.data["pixels"][0] for d in report.diagnostics if d.kind == "unread-border")
        row = dict(out=out.output_shape[-1], rf=out.rf[0], stride=out.stride[0], offset=out.offset[0],
                   params=report.totals.params, macs=report.totals.macs, corner=out.padding_share(0, 0), unread=unread)
        print(f"{label:<36}{row['out']:>4} {row['rf']:>4} {str(row['stride']):>7} {str(row['offset']):>6} "
              f"{row['params']:>7,} {row['macs']:>13,} {row['corner']:>10.1%} {unread:>7}")
        found.update({f"{i}_{k}": v for k, v in row.items()})
    return found


if __name__ == "__main__":
    run(Path("."))
