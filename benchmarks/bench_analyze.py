"""Time and memory of ``convlens.analyze`` against a bare meta forward and against peer tools.

Every measurement runs in its own fresh Python process (``--one TOOL CASE``), so nothing is cached
between measurements and ``ru_maxrss`` (the process's peak RSS) belongs to that measurement alone.
The parent process only spawns children, collects one JSON line from each and prints a markdown table.

    python benchmarks/bench_analyze.py            # full run: 2 cases, bare-meta, convlens, 4 peers
    python benchmarks/bench_analyze.py --quick    # smoke run: resnet50 only, no peers (< 1 min)
    python benchmarks/bench_analyze.py --json out.json   # also write the raw measurements

Tools:

* ``baseline``  -- imports torch + torchvision and builds the model on meta; runs nothing. Its peak RSS
  is the reference that the "delta RSS" column is measured against.
* ``bare-meta`` -- ``model(torch.empty(shape, device="meta"))`` under ``no_grad``, model built on meta.
* ``convlens``  -- ``convlens.analyze(model, shape)``, model built on meta. The first call in a fresh
  process is reported as ``convlens`` (cold), a second call in the same process as ``convlens (warm)``.
* peers (``torchinfo``, ``torchscan``, ``fvcore``, ``ptflops``) -- a real CPU model (random weights, eval
  mode) and a real CPU input, as those tools require; one call each, in a fresh process, with a timeout.
  Building the model and the input is not timed (but its memory is in the peak RSS).

bare-meta and convlens are repeated (3 fresh processes by default) and the medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    "resnet50@224": ("resnet50", (1, 3, 224, 224)),
    "deeplabv3_resnet101@1024x2048": ("deeplabv3_resnet101", (1, 3, 1024, 2048)),
    # Only used for the memory-scaling check (same model, other input size): convlens and bare-meta.
    "resnet50@1024x2048": ("resnet50", (1, 3, 1024, 2048)),
    "deeplabv3_resnet101@224": ("deeplabv3_resnet101", (1, 3, 224, 224)),
}
MAIN_CASES = ["resnet50@224", "deeplabv3_resnet101@1024x2048"]
SCALING_PAIRS = [("resnet50@224", "resnet50@1024x2048"),
                 ("deeplabv3_resnet101@224", "deeplabv3_resnet101@1024x2048")]
PEERS = ["torchinfo", "torchscan", "fvcore", "ptflops"]
MARK = "@@BENCH@@"


# ----------------------------------------------------------------------------------------- child side

def _maxrss_mib() -> float:
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def _build(name: str, on_meta: bool):
    import torch
    import torchvision

    seg = name in torchvision.models.list_models(module=torchvision.models.segmentation)
    kwargs = {"weights": None, **({"weights_backbone": None} if seg else {})}
    if on_meta:
        with torch.device("meta"):
            model = torchvision.models.get_model(name, **kwargs)
    else:
        model = torchvision.models.get_model(name, **kwargs)
    return model.eval()


def _gmacs(value) -> float | None:
    return None if value is None else float(value) / 1e9


def run_one(tool: str, case: str) -> dict:
    """Run one measurement in this (fresh) process and return its numbers."""
    import torch

    name, shape = CASES[case]
    out: dict = {"tool": tool, "case": case}
    if tool in ("baseline", "bare-meta", "convlens"):
        if tool == "convlens":
            import convlens
        model = _build(name, on_meta=True)
        out["rss_setup_mib"] = _maxrss_mib()
        if tool == "baseline":
            out["time_s"] = 0.0
        elif tool == "bare-meta":
            def call():
                with torch.no_grad():
                    return model(torch.empty(shape, device="meta"))
        else:
            def call():
                return convlens.analyze(model, shape)
        if tool != "baseline":
            t0 = time.perf_counter()
            result = call()
            out["time_s"] = time.perf_counter() - t0
            out["rss_cold_mib"] = _maxrss_mib()
            t0 = time.perf_counter()
            result = call()
            out["time_warm_s"] = time.perf_counter() - t0
            if tool == "convlens":
                out["gmacs"] = _gmacs(result.totals.macs)
                out["peak_activation_mib"] = result.totals.peak_activation_bytes / 2**20
                out["backend"] = result.backend
                layer4 = "backbone.layer4" if name.startswith("deeplab") else "layer4"
                out["layer4_rf"] = list(result[layer4].rf)
    else:
        torch.manual_seed(0)
        model = _build(name, on_meta=False)
        x = torch.randn(shape)
        out["rss_setup_mib"] = _maxrss_mib()
        if tool == "torchinfo":
            from torchinfo import summary
            t0 = time.perf_counter()
            stats = summary(model, input_size=shape, verbose=0)
            out["time_s"] = time.perf_counter() - t0
            out["gmacs"] = _gmacs(stats.total_mult_adds)
        elif tool == "torchscan":
            from torchscan import crawl_module
            t0 = time.perf_counter()
            report = crawl_module(model, args=(x,))
            out["time_s"] = time.perf_counter() - t0
            macs = report["totals"].get("macs") or {}
            out["gmacs"] = _gmacs(macs.get("value", macs.get("known_value")))
        elif tool == "fvcore":
            from fvcore.nn import FlopCountAnalysis
            t0 = time.perf_counter()
            flops = FlopCountAnalysis(model, x).total()  # fvcore counts one fused multiply-add as one flop
            out["time_s"] = time.perf_counter() - t0
            out["gmacs"] = _gmacs(flops)
        elif tool == "ptflops":
            from ptflops import get_model_complexity_info
            t0 = time.perf_counter()
            macs, _params = get_model_complexity_info(model, tuple(shape[1:]), as_strings=False,
                                                      print_per_layer_stat=False)
            out["time_s"] = time.perf_counter() - t0
            out["gmacs"] = _gmacs(macs)
        else:
            raise SystemExit(f"unknown tool {tool!r}")
    out["rss_peak_mib"] = _maxrss_mib()
    return out


# ---------------------------------------------------------------------------------------- parent side

def spawn(tool: str, case: str, timeout: float) -> dict:
    """Run ``--one tool case`` in a fresh interpreter; never raises."""
    cmd = [sys.executable, os.path.abspath(__file__), "--one", tool, case]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"tool": tool, "case": case, "error": f"timeout (>{timeout:.0f} s)"}
    wall = time.perf_counter() - t0
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            res = json.loads(line[len(MARK):])
            res["process_wall_s"] = wall
            return res
    if proc.returncode < 0:
        sig = -proc.returncode
        why = "killed by SIGKILL (OOM?)" if sig == 9 else f"killed by signal {sig}"
    else:
        tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        why = tail[-1].strip() if tail else f"exit status {proc.returncode}"
    return {"tool": tool, "case": case, "error": f"error: {why}"[:300], "stderr_tail": proc.stderr[-4000:]}


def measure(tool: str, case: str, repeats: int, timeout: float, log) -> dict:
    runs = []
    for i in range(repeats):
        res = spawn(tool, case, timeout)
        log(f"  {case:32s} {tool:10s} run {i + 1}/{repeats}: "
            + (res["error"] if "error" in res else
               f"{res['time_s']:.3f} s" + (f" (warm {res['time_warm_s']:.3f} s)" if "time_warm_s" in res else "")
               + f", peak RSS {res['rss_peak_mib']:.0f} MiB"))
        if "error" in res:
            return res
        runs.append(res)
    med = dict(runs[-1])
    for key in ("time_s", "time_warm_s", "rss_peak_mib", "rss_cold_mib", "rss_setup_mib"):
        if key in med:
            med[key] = statistics.median(r[key] for r in runs)
    med["runs"] = runs
    return med


def _fmt(x, spec=".3f"):
    return "–" if x is None else format(x, spec)


def table(results: dict, cases: list[str], tools: list[str]) -> str:
    head = ("| case | tool | time (s) | peak RSS (MiB) | Δ RSS over baseline (MiB) | ratio to bare-meta "
            "| fastest peer / convlens | GMACs reported |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for case in cases:
        base = results.get((case, "baseline"), {})
        bare = results.get((case, "bare-meta"), {})
        cl = results.get((case, "convlens"), {})
        peer_times = [results[(case, p)]["time_s"] for p in PEERS
                      if (case, p) in results and "error" not in results[(case, p)]]
        fastest = min(peer_times) if peer_times else None
        rows = []
        for tool in tools:
            res = results.get((case, tool))
            if res is None:
                continue
            if "error" in res:
                rows.append((tool, res["error"], None, None, None, None, None))
                continue
            if tool == "baseline":
                rows.append((tool, None, res["rss_peak_mib"], 0.0, None, None, None))
                continue
            dr = res["rss_peak_mib"] - base["rss_peak_mib"] if "rss_peak_mib" in base else None
            ratio = res["time_s"] / bare["time_s"] if "time_s" in bare and tool != "bare-meta" else None
            vs = fastest / res["time_s"] if tool == "convlens" and fastest else None
            rows.append((tool, res["time_s"], res["rss_peak_mib"], dr, ratio, vs, res.get("gmacs")))
            if "time_warm_s" in res:  # second call in the same process
                wratio = (res["time_warm_s"] / bare["time_warm_s"]
                          if tool != "bare-meta" and "time_warm_s" in bare else None)
                wvs = fastest / res["time_warm_s"] if tool == "convlens" and fastest else None
                rows.append((f"{tool} (warm)", res["time_warm_s"], None, None, wratio, wvs, None))
        for tool, t, rss, dr, ratio, vs, gm in rows:
            tcell = t if isinstance(t, str) else _fmt(t)
            lines.append(f"| {case} | {tool} | {tcell} | {_fmt(rss, '.0f')} | {_fmt(dr, '+.0f')} "
                         f"| {_fmt(ratio, '.2f') + 'x' if ratio else '–'} | {_fmt(vs, '.0f') + 'x' if vs else '–'} "
                         f"| {_fmt(gm, '.2f')} |")
    return "\n".join(lines)


def targets(results: dict, cases: list[str], quick: bool, scaling) -> str:
    out = ["", "Targets:", ""]

    def ok(b):
        return "PASS" if b else "FAIL"

    for case in cases:
        bare, cl = results.get((case, "bare-meta"), {}), results.get((case, "convlens"), {})
        if "time_s" in bare and "time_s" in cl:
            r_cold = cl["time_s"] / bare["time_s"]
            r_warm = cl["time_warm_s"] / bare["time_warm_s"]
            out.append(f"- {case}: convlens <= 3x bare-meta: cold {r_cold:.2f}x [{ok(r_cold <= 3)}], "
                       f"warm {r_warm:.2f}x [{ok(r_warm <= 3)}]")
        elif "error" in cl:
            out.append(f"- {case}: convlens {cl['error']}")
    if not quick:
        case = "deeplabv3_resnet101@1024x2048"
        cl = results.get((case, "convlens"), {})
        ok_peers = {p: results[(case, p)]["time_s"] for p in PEERS
                    if (case, p) in results and "error" not in results[(case, p)]}
        if ok_peers and "time_s" in cl:
            best = min(ok_peers, key=ok_peers.get)
            speed = ok_peers[best] / cl["time_s"]
            out.append(f"- {case}: convlens >= 100x faster than the fastest peer ({best}, {ok_peers[best]:.2f} s): "
                       f"{speed:.0f}x cold [{ok(speed >= 100)}], {ok_peers[best] / cl['time_warm_s']:.0f}x warm")
        else:
            out.append(f"- {case}: no peer finished, nothing to compare against")
    for small, big in scaling:
        a, b = results.get((small, "convlens"), {}), results.get((big, "convlens"), {})
        ba, bb = results.get((small, "baseline"), {}), results.get((big, "baseline"), {})
        if all("rss_peak_mib" in r for r in (a, b, ba, bb)):
            da, db = a["rss_peak_mib"] - ba["rss_peak_mib"], b["rss_peak_mib"] - bb["rss_peak_mib"]
            grow = db - da
            out.append(f"- convlens memory independent of input size, {CASES[small][0]}: Δ RSS {da:+.0f} MiB at "
                       f"{'x'.join(map(str, CASES[small][1][2:]))} vs {db:+.0f} MiB at "
                       f"{'x'.join(map(str, CASES[big][1][2:]))} (peak {a['rss_peak_mib']:.0f} vs "
                       f"{b['rss_peak_mib']:.0f} MiB): growth {grow:+.0f} MiB [{ok(grow <= 25)}]")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="resnet50 only, no peers (smoke run, < 1 min)")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per bare-meta/convlens measurement")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per peer process")
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated peers to run (full mode)")
    ap.add_argument("--json", type=Path, help="also write the raw measurements here")
    ap.add_argument("--one", nargs=2, metavar=("TOOL", "CASE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.one:
        res = run_one(*args.one)
        print(MARK + json.dumps(res), flush=True)
        return 0

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    import platform
    import torch
    log(f"python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads")
    peers = [] if args.quick else [p for p in args.peers.split(",") if p]
    if args.quick:
        main_cases, scaling = ["resnet50@224"], [("resnet50@224", "resnet50@1024x2048")]
    else:
        main_cases, scaling = MAIN_CASES, SCALING_PAIRS
    results: dict = {}
    cheap_cases = list(dict.fromkeys(main_cases + [c for pair in scaling for c in pair]))
    for case in cheap_cases:
        results[(case, "baseline")] = measure("baseline", case, 1, args.timeout, log)
        for tool in ("bare-meta", "convlens"):
            results[(case, tool)] = measure(tool, case, args.repeats, args.timeout, log)
    for case in main_cases:
        for peer in peers:
            results[(case, peer)] = measure(peer, case, 1, args.timeout, log)

    tools = ["baseline", "bare-meta", "convlens", *peers]
    text = ["## Main cases", "", table(results, main_cases, tools)]
    extra = [c for c in cheap_cases if c not in main_cases]
    if extra:
        text += ["", "## Same models at the other input size (memory scaling check)", "",
                 table(results, extra, ["baseline", "bare-meta", "convlens"])]
    text.append(targets(results, main_cases, args.quick, scaling))
    for (case, tool), res in results.items():
        if "error" in res and res.get("stderr_tail"):
            text += ["", f"<details><summary>{tool} on {case}: {res['error']}</summary>", "", "```",
                     res["stderr_tail"].strip()[-2500:], "```", "</details>"]
    print("\n".join(text))
    if args.json:
        args.json.write_text(json.dumps([{**v} for v in results.values()], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
