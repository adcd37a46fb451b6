"""torchvision's detection models: ``convlens.analyze`` of the whole detector on meta against a bare meta
forward of its backbone, and against one real CPU forward of the detector (what convlens ran before it
stopped at data-dependent ops), time and peak memory side by side.

Every measurement runs in its own fresh Python process (``--one TOOL MODEL SIZE``): ``ru_maxrss`` is that
measurement's peak RSS, and "delta RSS" is measured against the same process's RSS after importing and
building the model, before the timed call.

    python benchmarks/bench_detection.py                 # every detection model at 320 and 512
    python benchmarks/bench_detection.py --quick         # fasterrcnn_resnet50_fpn only
    python benchmarks/bench_detection.py --repeats 3     # medians over 3 processes
    python benchmarks/bench_detection.py --models ssd300_vgg16,fcos_resnet50_fpn

Tools:

* ``backbone-meta``: ``model.backbone(torch.empty(...))`` on meta, at the size the detector's transform
  makes of the image (the backbone alone: what a user analyzed by hand before).
* ``convlens``: ``convlens.analyze(model, (1, 3, S, S))`` of the whole detector, built on meta.

Each process times its call twice: the first (cold: convlens's rule modules and caches load on first use)
and a second one in the same process (warm).
* ``cpu-forward``: ``model([image])`` for real on the CPU under ``no_grad`` (random weights): only for
  ``fasterrcnn_resnet50_fpn`` and ``retinanet_resnet50_fpn``, the cost convlens avoids.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

MODELS = ["fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
          "fasterrcnn_mobilenet_v3_large_320_fpn", "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2",
          "keypointrcnn_resnet50_fpn", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn",
          "ssd300_vgg16", "ssdlite320_mobilenet_v3_large"]
REAL = ("fasterrcnn_resnet50_fpn", "retinanet_resnet50_fpn")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(tool: str, name: str, size: int) -> dict:
    import torch
    import torchvision.models.detection as tvd

    import convlens

    with torch.device("cpu" if tool == "cpu-forward" else "meta"):
        model = getattr(tvd, name)(weights=None, weights_backbone=None).eval()
    if tool == "backbone-meta":
        with torch.no_grad():  # (the transform's size: its resize and padding, worked out on meta)
            image = model.transform([torch.empty(3, size, size, device="meta")])[0].tensors
        run = lambda: model.backbone(torch.empty(image.shape, device="meta"))  # noqa: E731
    elif tool == "convlens":
        run = lambda: convlens.analyze(model, (1, 3, size, size))  # noqa: E731
    else:
        image = torch.rand(3, size, size)
        run = lambda: model([image])  # noqa: E731
    before = _rss_mib()
    start = time.perf_counter()
    with torch.no_grad():
        run()
    seconds = time.perf_counter() - start
    rss = _rss_mib() - before
    start = time.perf_counter()  # (a second call in the same process: imports and caches warm)
    with torch.no_grad():
        run()
    return {"tool": tool, "model": name, "size": size, "seconds": seconds, "delta_rss_mib": rss,
            "warm_seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=3, metavar=("TOOL", "MODEL", "SIZE"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--models", help="comma-separated subset")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1], int(args.one[2]))))
        return
    models = MODELS[:1] if args.quick else args.models.split(",") if args.models else MODELS
    print("| model | input | backbone on meta (s) | convlens, whole detector (s) | ratio | warm: backbone, convlens "
          "(s) | warm ratio | delta RSS backbone / convlens (MiB) | real CPU forward (s, MiB) |")
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|")
    for name in models:
        for size in (320, 512):
            got = {}
            tools = ["backbone-meta", "convlens"] + (["cpu-forward"] if name in REAL else [])
            for tool in tools:
                runs = []
                for _ in range(1 if tool == "cpu-forward" else args.repeats):
                    done = subprocess.run([sys.executable, __file__, "--one", tool, name, str(size)],
                                          capture_output=True, text=True, check=True)
                    runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
                got[tool] = (statistics.median(r["seconds"] for r in runs),
                             statistics.median(r["delta_rss_mib"] for r in runs),
                             statistics.median(r["warm_seconds"] for r in runs))
            (b, bm, bw), (c, cm, cw) = got["backbone-meta"], got["convlens"]
            real = f"{got['cpu-forward'][0]:.1f}, {got['cpu-forward'][1]:.0f}" if "cpu-forward" in got else ""
            print(f"| {name} | 3x{size}x{size} | {b:.3f} | {c:.3f} | {c / b:.1f}x | {bw:.3f}, {cw:.3f} | "
                  f"{cw / bw:.1f}x | {bm:.0f} / {cm:.0f} | {real} |", flush=True)


if __name__ == "__main__":
    main()
