"""Time and memory of ``convlens.analyze`` against a bare meta forward and against peer tools.

Every measurement runs in its own fresh Python process (``--one TOOL CASE``), so nothing is cached
between measurements and ``ru_maxrss`` (the process's peak RSS) belongs to that measurement alone.
The parent process only spawns children, collects one JSON line from each and prints a markdown table.

    python benchmarks/bench_analyze.py            # full run: 2 cases, bare-meta, convlens, 4 peers
    python benchmarks/bench_analyze.py --quick    # smoke run: resnet50 only, no peers (< 1 min)
    python benchmarks/bench_analyze.py --transformers   # vit_base, deit_base_distilled, pvt_v2_b2 (timm)
    python benchmarks/bench_analyze.py --json out.json   # also write the raw measurements

Tools:

* ``baseline``  -- not a tool: the peak RSS of a bare-meta process after importing torch + torchvision
  and building the model on meta, before running anything (median over its runs). The "delta RSS"
  column is measured against it.
* ``bare-meta`` -- ``model(torch.empty(shape, device="meta"))`` under ``no_grad``, model built on meta.
* ``convlens``  -- ``convlens.analyze(model, shape)``, model built on meta. The first call in a fresh
  process is reported as ``convlens`` (cold), a second call in the same process as ``convlens (warm)``.
* peers (``torchinfo``, ``torchscan``, ``fvcore``, ``ptflops``) -- a real CPU model (random weights, eval
  mode) and a real CPU input, as those tools require; one call each under ``torch.no_grad()``, in a
  fresh process, with a timeout. Building the model and the input is not timed (its memory is in the
  peak RSS).

bare-meta and convlens are repeated (3 fresh processes by default) and the medians are reported.

Timings are only meaningful on a quiet machine: the "other load" column is the average number of CPUs
that other processes kept busy while a measurement ran (the worst of its kept repeats). bare-meta and
convlens need one free CPU, a peer needs as many as torch has intra-op threads. A full run waits
(``--idle-wait``, up to 120 s per process) for those CPUs to be free before each process and redoes a
run that was contended anyway (``--retries``, at most 2 per measurement).
"""

from __future__ import annotations

import argparse
import contextlib
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
    # Only used for the memory-scaling check (same model, other input sizes): convlens and bare-meta.
    "resnet50@1024x2048": ("resnet50", (1, 3, 1024, 2048)),
    "resnet50@4096x8192": ("resnet50", (1, 3, 4096, 8192)),
    "deeplabv3_resnet101@224": ("deeplabv3_resnet101", (1, 3, 224, 224)),
    # transformers (timm, built on meta): token layouts and global attention, convlens and bare-meta only
    "vit_base_patch16_224@224": ("timm:vit_base_patch16_224", (1, 3, 224, 224)),
    "deit_base_distilled_patch16_224@224": ("timm:deit_base_distilled_patch16_224", (1, 3, 224, 224)),
    "pvt_v2_b2@224": ("timm:pvt_v2_b2", (1, 3, 224, 224)),
}
MAIN_CASES = ["resnet50@224", "deeplabv3_resnet101@1024x2048"]
TOKEN_CASES = ["vit_base_patch16_224@224", "deit_base_distilled_patch16_224@224", "pvt_v2_b2@224"]
# Per model, its cases from the smallest input to the largest.
SCALING = [["resnet50@224", "resnet50@1024x2048", "resnet50@4096x8192"],
           ["deeplabv3_resnet101@224", "deeplabv3_resnet101@1024x2048"]]
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

    if name.startswith("timm:"):
        import timm

        with torch.device("meta") if on_meta else contextlib.nullcontext():
            return timm.create_model(name[5:], pretrained=False).eval()
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


def run_one(tool: str, case: str, threads: int | None = None) -> dict:
    """Run one measurement in this (fresh) process and return its numbers."""
    import torch
    if threads:
        torch.set_num_threads(threads)

    name, shape = CASES[case]
    out: dict = {"tool": tool, "case": case, "threads": torch.get_num_threads()}
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
                if not name.startswith("timm:"):  # (a torchvision ResNet's last stage)
                    layer4 = "backbone.layer4" if name.startswith("deeplab") else "layer4"
                    out["layer4_rf"] = list(result[layer4].rf)
    else:
        torch.manual_seed(0)
        model = _build(name, on_meta=False)
        x = torch.randn(shape)
        out["rss_setup_mib"] = _maxrss_mib()
        # Every peer call runs under no_grad (the kindest setting for them: no autograd graph is kept).
        torch.set_grad_enabled(False)
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

def _busy_cpu_s() -> float | None:
    """CPU-seconds the whole machine has spent busy since boot (Linux /proc/stat), else None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    import resource
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def free_cpu_threshold(tool: str, peer_threads: int | None = None) -> float:
    """Other processes' load (CPUs) above which ``tool``'s measurement counts as contended.

    bare-meta and convlens are single-threaded Python (meta tensors do no arithmetic): they need one free
    CPU. A peer runs real CPU kernels on all torch intra-op threads: it needs all of them free.
    """
    import torch
    needed = 1 if tool in ("baseline", "bare-meta", "convlens") else (peer_threads or torch.get_num_threads())
    return max(0.5, (os.cpu_count() or 1) - needed + 0.5)


def wait_idle(max_wait: float, log, busy_cores: float = 0.5) -> float | None:
    """Wait (up to ``max_wait`` s) until other processes use less than ``busy_cores`` CPUs; return that load."""
    deadline = time.monotonic() + max_wait
    announced = False
    while True:
        b0 = _busy_cpu_s()
        time.sleep(1.0)
        b1 = _busy_cpu_s()
        if b0 is None or b1 is None:
            return None
        load = b1 - b0
        if load < busy_cores or time.monotonic() >= deadline:
            return load
        if not announced:
            log(f"    (machine busy: {load:.1f} CPUs used by other processes; waiting up to {max_wait:.0f} s)")
            announced = True
        time.sleep(4.0)


def spawn(tool: str, case: str, timeout: float, threads: int | None = None) -> dict:
    """Run ``--one tool case`` in a fresh interpreter; never raises.

    Also records ``other_load``: the CPUs that *other* processes kept busy, on average, while the child ran
    (machine busy time from /proc/stat minus the child's own CPU time, over the child's wall time).
    """
    cmd = [sys.executable, os.path.abspath(__file__), "--one", tool, case]
    if threads:
        cmd += ["--peer-threads", str(threads)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    busy0, own0 = _busy_cpu_s(), _children_cpu_s()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"tool": tool, "case": case, "error": f"timeout (>{timeout:.0f} s)"}
    wall = time.perf_counter() - t0
    busy1, own1 = _busy_cpu_s(), _children_cpu_s()
    other = None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0) - (own1 - own0)) / wall
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            res = json.loads(line[len(MARK):])
            res["process_wall_s"] = wall
            res["other_load"] = other
            return res
    if proc.returncode < 0:
        sig = -proc.returncode
        why = "killed by SIGKILL (OOM?)" if sig == 9 else f"killed by signal {sig}"
    else:
        tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        why = tail[-1].strip() if tail else f"exit status {proc.returncode}"
    return {"tool": tool, "case": case, "error": f"error: {why}"[:300], "stderr_tail": proc.stderr[-4000:]}


def measure(tool: str, case: str, repeats: int, timeout: float, log, idle_wait: float = 0.0,
            retries: int = 0, threads: int | None = None) -> dict:
    """``repeats`` fresh processes; a run during which other processes left it fewer free CPUs than it
    needs (see ``free_cpu_threshold``) is thrown away and redone (at most ``retries`` times per
    measurement), after waiting for quiet."""
    runs = []
    limit = free_cpu_threshold(tool, threads)
    while len(runs) < repeats:
        if idle_wait > 0:
            wait_idle(idle_wait, log, limit)
        res = spawn(tool, case, timeout, threads)
        load = res.get("other_load")
        contended = load is not None and load > limit and "error" not in res
        res["contended"] = contended
        log(f"  {case:32s} {tool:10s} run {len(runs) + 1}/{repeats}: "
            + (res["error"] if "error" in res else
               f"{res['time_s']:.3f} s" + (f" (warm {res['time_warm_s']:.3f} s)" if "time_warm_s" in res else "")
               + f", peak RSS {res['rss_peak_mib']:.0f} MiB"
               + ("" if load is None else f", other processes' load {load:.2f} CPUs")
               + (" -> contended, redoing" if contended and retries > 0 else "")))
        if "error" in res:
            return res
        if contended and retries > 0:
            retries -= 1
            continue
        runs.append(res)
    med = dict(runs[-1])
    for key in ("time_s", "time_warm_s", "rss_peak_mib", "rss_cold_mib", "rss_setup_mib"):
        if key in med:
            med[key] = statistics.median(r[key] for r in runs)
    loads = [r["other_load"] for r in runs if r.get("other_load") is not None]
    med["other_load"] = max(loads) if loads else None
    med["contended"] = any(r.get("contended") for r in runs)
    med["runs"] = runs
    return med


def _fmt(x, spec=".3f"):
    return "–" if x is None else format(x, spec)


def _ratio(x):
    return "–" if not x else (f"{x:.2f}x" if x < 10 else f"{x:.0f}x")


def table(results: dict, cases: list[str], tools: list[str]) -> str:
    head = ("| case | tool | time (s) | peak RSS (MiB) | Δ RSS over baseline (MiB) | ratio to bare-meta "
            "| fastest peer / convlens | GMACs reported | other load (CPUs) |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for case in cases:
        base = results.get((case, "baseline"), {})
        bare = results.get((case, "bare-meta"), {})
        peer_times = [results[(case, p)]["time_s"] for p in PEERS
                      if (case, p) in results and "error" not in results[(case, p)]]
        fastest = min(peer_times) if peer_times else None
        rows = []
        for tool in tools:
            res = results.get((case, tool))
            if res is None:
                continue
            if "error" in res:
                rows.append((tool, res["error"], None, None, None, None, None, None))
                continue
            if tool == "baseline":
                rows.append((tool, None, res["rss_peak_mib"], 0.0, None, None, None, None))
                continue
            dr = res["rss_peak_mib"] - base["rss_peak_mib"] if "rss_peak_mib" in base else None
            ratio = res["time_s"] / bare["time_s"] if "time_s" in bare and tool != "bare-meta" else None
            vs = fastest / res["time_s"] if tool == "convlens" and fastest else None
            rows.append((tool, res["time_s"], res["rss_peak_mib"], dr, ratio, vs, res.get("gmacs"),
                         res.get("other_load")))
            if "time_warm_s" in res:  # second call in the same process
                wratio = (res["time_warm_s"] / bare["time_warm_s"]
                          if tool != "bare-meta" and "time_warm_s" in bare else None)
                wvs = fastest / res["time_warm_s"] if tool == "convlens" and fastest else None
                rows.append((f"{tool} (warm)", res["time_warm_s"], None, None, wratio, wvs, None, None))
        for tool, t, rss, dr, ratio, vs, gm, load in rows:
            tcell = t if isinstance(t, str) else _fmt(t)
            lines.append(f"| {case} | {tool} | {tcell} | {_fmt(rss, '.0f')} | {_fmt(dr, '+.0f')} "
                         f"| {_ratio(ratio)} | {_ratio(vs)} "
                         f"| {_fmt(gm, '.2f')} | {_fmt(load, '.2f')} |")
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
    if "deeplabv3_resnet101@1024x2048" in cases:
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
    for series in scaling:
        cells, deltas = [], []
        for case in series:
            cl, base = results.get((case, "convlens"), {}), results.get((case, "baseline"), {})
            if "rss_peak_mib" not in cl or "rss_peak_mib" not in base:
                continue
            d = cl["rss_peak_mib"] - base["rss_peak_mib"]
            deltas.append(d)
            size = "x".join(map(str, CASES[case][1][2:]))
            act = cl.get("peak_activation_mib")
            cells.append(f"{d:+.0f} MiB at {size}" + (f" (its activations: {act:.0f} MiB)" if act else ""))
        if len(deltas) >= 2:
            grow = deltas[-1] - deltas[0]
            # ru_maxrss varies by about 1 MiB between identical runs; more than 2 MiB is real growth.
            verdict = "flat [PASS]" if grow <= 2 else f"grows by {grow:+.0f} MiB [FAIL]"
            out.append(f"- convlens memory independent of input size, {CASES[series[0]][0]}: Δ RSS "
                       + ", ".join(cells) + f": {verdict}")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="resnet50 only, no peers (smoke run, < 1 min)")
    ap.add_argument("--transformers", action="store_true",
                    help="only the transformer cases (vit_base, deit_base_distilled, pvt_v2_b2; timm), no peers")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per bare-meta/convlens measurement")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per peer process")
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated peers to run (full mode)")
    ap.add_argument("--json", type=Path, help="also write the raw measurements here")
    ap.add_argument("--idle-wait", type=float, default=None,
                    help="before each process, wait up to this many seconds for the CPUs it needs to be free "
                         "(default: 120 in a full run, 0 with --quick)")
    ap.add_argument("--retries", type=int, default=None,
                    help="redo a contended run at most this many times per measurement "
                         "(default: 2 in a full run, 0 with --quick)")
    ap.add_argument("--peer-threads", type=int, default=None,
                    help="torch intra-op threads for the peers (default: torch's default, all CPUs)")
    ap.add_argument("--one", nargs=2, metavar=("TOOL", "CASE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.one:
        res = run_one(*args.one, threads=args.peer_threads if args.one[0] in PEERS else None)
        print(MARK + json.dumps(res), flush=True)
        return 0

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    import platform

    import torch
    env_line = (f"python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
                f"{args.peer_threads or torch.get_num_threads()} torch threads for the peers")
    log(env_line)
    peers = [] if args.quick else [p for p in args.peers.split(",") if p]
    idle_wait = args.idle_wait if args.idle_wait is not None else (0.0 if args.quick else 120.0)
    retries = args.retries if args.retries is not None else (0 if args.quick else 2)
    if args.quick:
        main_cases, scaling = ["resnet50@224"], SCALING[:1]
    elif args.transformers:
        main_cases, scaling, peers = TOKEN_CASES, [], []
    else:
        main_cases, scaling = MAIN_CASES + TOKEN_CASES, SCALING
    results: dict = {}
    cheap_cases = list(dict.fromkeys(main_cases + [c for series in scaling for c in series]))
    for case in cheap_cases:
        # In --quick mode the scaling-only cases are measured once, to stay well under a minute.
        repeats = 1 if args.quick and case not in main_cases else args.repeats
        for tool in ("bare-meta", "convlens"):
            results[(case, tool)] = measure(tool, case, repeats, args.timeout, log, idle_wait, retries)
        bare = results[(case, "bare-meta")]
        # The baseline is the bare-meta process just before its forward: torch + torchvision imported,
        # model built on meta, nothing run -- i.e. a process that only imports torch and builds the model.
        results[(case, "baseline")] = ({"error": bare["error"]} if "error" in bare else
                                       {"tool": "baseline", "case": case, "rss_peak_mib": bare["rss_setup_mib"]})
    for case in main_cases:
        for peer in peers if case in MAIN_CASES else []:  # (the peers know nothing of attention)
            results[(case, peer)] = measure(peer, case, 1, args.timeout, log, idle_wait, retries,
                                            args.peer_threads)

    tools = ["baseline", "bare-meta", "convlens", *peers]
    text = [f"Machine: {env_line}.", "", "## Main cases", "", table(results, main_cases, tools)]
    extra = [c for c in cheap_cases if c not in main_cases]
    if extra:
        text += ["", "## Same models at other input sizes (memory scaling check)", "",
                 table(results, extra, ["baseline", "bare-meta", "convlens"])]
    text.append(targets(results, main_cases, args.quick, scaling))
    loaded = sorted({f"{tool} on {case}" for (case, tool), r in results.items() if r.get("contended")})
    if loaded:
        text += ["", f"Warning: other processes left fewer free CPUs (of {os.cpu_count()}) than the measurement "
                 "needs during: " + "; ".join(loaded) + ". Those timings are inflated; rerun on a quiet machine."]
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
