"""Why dilation, shown: a plain 3x3 stack against the Yu-Koltun context module on a task that needs context.

The task (synthetic, generated on the fly, seeded): each 64x64 image (``--size``) is 2-channel Gaussian noise with
one to four small "beacons", 3x3 squares that are bright in channel 0 (type A images) or in channel 1
(type B images). Every pixel within Chebyshev distance ``RADIUS`` (20 px) of a beacon is labelled with
the image's type, every other pixel "background":

    0 = background, 1 = A, 2 = B.

Away from the beacons a pixel is pure noise, so its label cannot be read from what is near it: it is
decided by beacons up to 20 px away in every direction. A unit must see a window of at least
2 * 20 + 1 = 41 px to get it right everywhere.

The two models share a 3x3 input stem (2 -> C maps, ReLU) and a 1x1 classifier head (C -> 3), and
differ only in the dilations of the 8 layers between them, so their parameter counts are equal:

- plain:   seven 3x3 convolutions (dilation 1, padding 1), each with ReLU, then a 1x1 convolution;
- context: ``ContextModule(C)``, the same seven 3x3 convolutions dilated 1, 1, 2, 4, 8, 16, 1, each
           with ReLU, then a 1x1 convolution (Yu & Koltun 2016).

Both bodies get the paper's identity initialisation (the plain one is ``ContextModule`` with all
dilations 1); with PyTorch's default initialisation the 10-layer plain stack, which has no
normalisation, does not get past predicting "background" everywhere within this budget.

The receptive fields (from ``convlens.analyze``) are 17 px for the plain stack and 69 px for the
context model, so the plain stack cannot see most of the beacons that decide its pixels' labels. The
table's "oracle" row is roughly the best a 17 px window allows: the labels computed from only the
beacons that touch the window. Both models are trained with Adam on the same stream of fresh images
and scored by mean IoU over the three classes on a held-out set. One run's mIoU depends on its seed
(the initial weights of the stem and head, the image stream, the held-out set): the table gives the
mean over ``--seeds`` runs (seeds 0, 1, ...) and their range.

    .venv/bin/python examples/why_dilation.py --markdown           # the README table (5 seeds)
    .venv/bin/python examples/why_dilation.py --seeds 1 --steps 50 # a quick look
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import convlens
from convlens.blocks import ContextModule

RADIUS = 20            # a beacon decides the labels of the pixels within this Chebyshev distance
MAX_BEACONS = 4        # beacons per image: 1 to MAX_BEACONS, all of the image's type
BEACON_LEVEL = 1.0     # a beacon adds this to its channel over a 3x3 square
NOISE = 0.3            # standard deviation of the Gaussian noise on both channels
CLASSES = ("background", "A", "B")
BATCH = 16
EVAL_IMAGES = 256
LR = 3e-3
#: the dilations of the body's seven 3x3 layers; padding = dilation keeps the size
DILATIONS = {"plain": (1, 1, 1, 1, 1, 1, 1), "context": (1, 1, 2, 4, 8, 16, 1)}


def near(rows: torch.Tensor, cols: torch.Tensor, keep: torch.Tensor, radius: int, size: int) -> torch.Tensor:
    """(n, size, size) mask of the pixels within Chebyshev distance ``radius`` of a kept point; the
    points are given per image by ``rows``, ``cols`` and ``keep``, each (n, points)."""
    axis = torch.arange(size)
    row_near = (axis[None, None, :] - rows[..., None]).abs() <= radius           # (n, points, size)
    col_near = (axis[None, None, :] - cols[..., None]).abs() <= radius
    square = row_near[..., :, None] & col_near[..., None, :]                      # (n, points, size, size)
    return (square & keep[..., None, None]).any(1)


def make_batch(n: int, size: int, gen: torch.Generator,
               radius: int = RADIUS) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (n, 2, size, size) and their labels (n, size, size), drawn from ``gen``; a
    ``radius`` other than ``RADIUS`` gives the labels of the same images as seen from that distance."""
    counts = torch.randint(1, MAX_BEACONS + 1, (n,), generator=gen)
    types = torch.randint(0, 2, (n,), generator=gen)                     # one beacon type per image
    rows = torch.randint(1, size - 1, (n, MAX_BEACONS), generator=gen)   # 3x3 squares fit inside
    cols = torch.randint(1, size - 1, (n, MAX_BEACONS), generator=gen)
    present = torch.arange(MAX_BEACONS)[None, :] < counts[:, None]
    images = NOISE * torch.randn(n, 2, size, size, generator=gen)
    images[torch.arange(n), types] += BEACON_LEVEL * near(rows, cols, present, 1, size)   # the 3x3 squares
    labels = (types[:, None, None] + 1) * near(rows, cols, present, radius, size)        # 0, 1 (A) or 2 (B)
    return images, labels


def build_model(kind: str, channels: int) -> nn.Sequential:
    """Stem (3x3, 2 -> C, ReLU), the ``kind`` body (8 layers, C -> C), head (1x1, C -> 3 classes)."""
    if kind not in DILATIONS:
        raise ValueError(f"unknown model kind {kind!r}")
    body = ContextModule(channels, dilations=DILATIONS[kind], padding="layer", init="identity")
    stem = nn.Sequential(nn.Conv2d(2, channels, 3, padding=1), nn.ReLU(inplace=True))
    return nn.Sequential(stem, body, nn.Conv2d(channels, len(CLASSES), 1))


def train(model: nn.Module, steps: int, size: int, seed: int) -> float:
    """Adam on ``steps`` fresh batches (the same stream for every model); returns the seconds taken."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        images, labels = make_batch(BATCH, size, gen)
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return time.perf_counter() - start


def mean_iou(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over the classes of |predicted & true| / |predicted | true|, pooled over all images."""
    ious = []
    for c in range(len(CLASSES)):
        pred, true = predictions == c, labels == c
        union = (pred | true).sum().item()
        if union:
            ious.append((pred & true).sum().item() / union)
    return sum(ious) / len(ious)


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """mIoU of ``model`` on the held-out set."""
    model.eval()
    predictions = torch.cat([model(chunk).argmax(1) for chunk in images.split(32)])
    return mean_iou(predictions, labels)


@dataclass
class Row:
    """One line of the results table (``None``: not applicable): mIoU and training seconds per seed."""

    model: str
    layers: str
    params: int | None
    rf: int | None
    miou: list[float]
    seconds: list[float] | None


def print_table(rows: list[Row], markdown: bool) -> None:
    """The rows as aligned plain text, or as a markdown table: mIoU as the mean over the seeds and,
    for several, the lowest and highest."""
    seeds = len(rows[0].miou)
    header = ("model", "layers", "params", "rf (px)", "mIoU" if seeds == 1 else f"mIoU, mean of {seeds} seeds",
              "range" if seeds > 1 else "", "train s")
    cells = [(r.model, r.layers, "-" if r.params is None else f"{r.params:,}",
              "-" if r.rf is None else str(r.rf), f"{sum(r.miou) / len(r.miou):.3f}",
              f"{min(r.miou):.3f}-{max(r.miou):.3f}" if seeds > 1 else "",
              "-" if r.seconds is None else f"{sum(r.seconds) / len(r.seconds):.0f}") for r in rows]
    if seeds == 1:
        header, cells = header[:5] + header[6:], [c[:5] + c[6:] for c in cells]
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" if i < 2 else "--:" for i in range(len(header))) + "|")
        for row in cells:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(x) for x in col) for col in zip(header, *cells)]
    for row in (header, *cells):
        print("  ".join(x.ljust(w) if i < 2 else x.rjust(w) for i, (x, w) in enumerate(zip(row, widths))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=700, help=f"training steps per model (batch {BATCH})")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--channels", type=int, default=16, help="maps C in the stem and body")
    parser.add_argument("--seeds", type=int, default=5, help="runs, with seeds 0 .. SEEDS-1 (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows: dict[str, Row] = {}
    for seed in range(args.seeds):
        for row in run(args, seed):
            if row.model in rows:
                rows[row.model].miou += row.miou
                if row.seconds is not None:
                    rows[row.model].seconds += row.seconds
            else:
                rows[row.model] = row
    print(f"task: {args.size}x{args.size} noise, 1-{MAX_BEACONS} beacons of type A or B; label = the type "
          f"within {RADIUS} px of a beacon (needs rf >= {2 * RADIUS + 1}); {args.steps} steps x {BATCH} images, "
          f"mIoU on {EVAL_IMAGES} held-out images, seeds 0-{args.seeds - 1}")
    print_table(list(rows.values()), args.markdown)


def run(args: argparse.Namespace, seed: int) -> list[Row]:
    """The table's rows for one seed."""
    eval_images, eval_labels = make_batch(EVAL_IMAGES, args.size, torch.Generator().manual_seed(seed + 1))
    rows = [Row("all background", "-", None, None, [mean_iou(torch.zeros_like(eval_labels), eval_labels)], None)]
    for kind, dilations in DILATIONS.items():
        layers = f"stem + 7 x 3x3 (d={','.join(map(str, dilations))}) + 1x1 + head"
        torch.manual_seed(seed)
        model = build_model(kind, args.channels)
        report = convlens.analyze(model, (1, 2, args.size, args.size))
        seconds = train(model, args.steps, args.size, seed)
        rf = report[""].rf[0]
        rows.append(Row(kind, layers, report.totals.params, rf, [evaluate(model, eval_images, eval_labels)],
                        [seconds]))
        if kind == "plain":  # the labels from the beacons that reach into a plain unit's window
            _, seen = make_batch(EVAL_IMAGES, args.size, torch.Generator().manual_seed(seed + 1), rf // 2 + 1)
            rows.append(Row(f"oracle, {rf} px window", "-", None, rf, [mean_iou(seen, eval_labels)], None))
    return rows


if __name__ == "__main__":
    main()
