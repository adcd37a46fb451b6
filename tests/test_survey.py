"""`convlens survey`: patterns, worker limits, resumption, and the file formats read back."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from convlens.cli import main
from convlens.errors import ConvlensError
from convlens.survey import COLUMNS, SurveyRow, expand, read_rows, render, survey
from oracle import unbounded_geometry

MODELS = Path(__file__).parent / "data" / "survey_models.py"


def _builders():
    """The module the survey loads by path, loaded here too for the references."""
    spec = importlib.util.spec_from_file_location("survey_models", MODELS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _spec(name: str) -> str:
    return f"{MODELS}:{name}"


@pytest.fixture(scope="module")
def misbehaving(tmp_path_factory) -> list[SurveyRow]:
    """One survey over a model of every kind of failure, and two good ones."""
    listing = tmp_path_factory.mktemp("survey") / "models.txt"
    listing.write_text("\n".join([
        "# one MODEL per line, optionally its input",
        _spec("good") + " 3x32x32",
        _spec("hangs") + " 3x16x16",
        _spec("raises_at_build"),
        _spec("dies") + " 3x16x16",
        _spec("hogs_memory"),
        "zoo:tcn_seqmnist",
    ]) + "\n")
    return survey([str(listing)], jobs=2, timeout=10, memory=2 << 30)


def test_every_failure_is_a_row_that_says_so(misbehaving):
    by = {r.model.rsplit(":", 1)[-1]: r for r in misbehaving}
    assert [r.model for r in misbehaving][0] == _spec("good")  # pattern order, not finishing order
    assert by["good"].status == "full" and by["good"].input == "3x32x32"
    assert by["tcn_seqmnist"].status == "full"
    assert by["hangs"].status == "timeout" and "10 s" in by["hangs"].error
    assert by["raises_at_build"].status == "failed"
    assert "ValueError: this model cannot be built" in by["raises_at_build"].error
    assert by["dies"].status == "died" and "exit status 3" in by["dies"].error
    assert by["hogs_memory"].status == "memory" and "2.0 GiB" in by["hogs_memory"].error
    for r in misbehaving:
        if r.status not in ("full", "partial"):
            assert r.params is None and r.stages == [] and "\n" not in r.error


def test_a_good_row_agrees_with_torch_and_the_oracle(misbehaving):
    """The row's numbers against independent references: the model's own parameters, torch's
    FlopCounterMode on a real forward, and the gradient oracle's rf, stride and offset."""
    row = next(r for r in misbehaving if r.model == _spec("good"))
    model, shape = _builders().good(), (1, 3, 32, 32)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(shape))
    assert row.params == sum(p.numel() for p in model.parameters())
    assert 2 * row.macs == counter.get_total_flops()
    last = next(s for s in row.stages if s.name == "2")
    for a in range(2):
        geo = unbounded_geometry(model, shape, "2", a)
        assert (last.rf[a], last.stride[a], last.offset[a]) == (str(geo.rf), str(geo.stride), str(geo.offset))
    assert row.analysis_s > 0 and row.forward_s > 0 and row.backend == "meta"


@pytest.mark.parametrize("suffix", [".csv", ".json", ".md"])
def test_every_format_reads_back_what_it_wrote(misbehaving, suffix, tmp_path):
    path = tmp_path / f"out{suffix}"
    path.write_text(render(misbehaving, suffix))
    back = read_rows(path)
    assert back == misbehaving


def test_markdown_cells_escape_the_pipe(tmp_path):
    row = SurveyRow("a|b.py:build", "3x8x8", "failed", error="ValueError: x | y \\ z")
    path = tmp_path / "out.md"
    path.write_text(render([row], ".md"))
    assert read_rows(path)[0] == row
    assert path.read_text().count("| a\\|b.py:build |") == 1


def test_patterns_expand_in_order_once_each():
    tasks = expand(["zoo:drn_*", "zoo:drn_c_26", "torchvision:resnet1*", "timm:resnet18"])
    assert [t.model for t in tasks] == ["drn_c_26", "drn_d_22", "torchvision:resnet101", "torchvision:resnet152",
                                        "torchvision:resnet18", "timm:resnet18"]
    assert tasks[0].shape == (3, 224, 224)
    assert expand(["torchvision:inception_v3"])[0].shape == (3, 299, 299)  # its weights' crop size
    assert expand(["torchvision:fcn_resnet50"])[0].shape == (3, 520, 520)
    assert expand(["timm:vit_base_patch16_384"])[0].shape == (3, 384, 384)  # its pretrained config
    assert expand(["zoo:*"], shape=(3, 64, 64))[0].shape == (3, 64, 64)


@pytest.mark.parametrize("patterns, message", [
    (["timm:no_such_model_*"], "pattern 'timm:no_such_model_*' matches no model"),
    (["torchvision:resnet5"], "pattern 'torchvision:resnet5' matches no model"),
    (["zoo:*", "zoo:nothing"], "pattern 'zoo:nothing' matches no model"),
    (["missing/list.txt"], "no file 'missing/list.txt'"),
    ([], "give at least one PATTERN"),
])
def test_a_pattern_that_matches_nothing_is_refused_before_any_work(patterns, message):
    with pytest.raises(ConvlensError, match=message.replace("(", r"\(").replace("*", r"\*")):
        expand(patterns)


def test_cli_refuses_a_pattern_that_matches_nothing(tmp_path, capsys):
    assert main(["survey", "timm:no_such_model_*", "-o", str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "matches no model" in err
    assert not (tmp_path / "out.csv").exists()
    assert main(["survey", "zoo:*", "-o", str(tmp_path / "out.txt")]) == 2
    assert "suffix" in capsys.readouterr().err


def test_an_output_that_is_not_a_survey_is_refused(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ConvlensError, match="is not a convlens survey"):
        survey(["zoo:tcn_seqmnist"], path, jobs=1)


RESUMED = ["zoo:tcn_seqmnist", "zoo:drn_d_22", "zoo:unet", "zoo:drn_c_26", "zoo:segnet_camvid", "zoo:wavenet"]


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if int(fields.get("PPid", "0").strip()) == pid:
            found.append(int(status.parent.name))
    return found


def _kill_and_check_workers_go(run: subprocess.Popen, workers: list[int]) -> None:
    """SIGKILL the survey; within 10 s no process it started may be left."""
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
        time.sleep(0.1)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "a worker outlived its survey"


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "convlens.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def test_a_killed_survey_resumes_to_the_same_file(tmp_path):
    whole = tmp_path / "whole.csv"
    assert subprocess.run([sys.executable, "-m", "convlens.cli", "survey", *RESUMED, "-o", str(whole), "--jobs", "1"],
                          capture_output=True, text=True).returncode == 0
    cut = tmp_path / "cut.csv"
    run = _cli(["survey", *RESUMED, "-o", str(cut), "--jobs", "1"])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None:
        if cut.exists() and 2 <= len(read_rows(cut)) < len(RESUMED):
            break
        time.sleep(0.05)
    assert run.poll() is None, "the survey ended before it could be killed"
    workers = _children(run.pid)
    assert workers
    _kill_and_check_workers_go(run, workers)
    first = read_rows(cut)
    assert 2 <= len(first) < len(RESUMED)
    rerun = subprocess.run([sys.executable, "-m", "convlens.cli", "survey", *RESUMED, "-o", str(cut), "--jobs", "2"],
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    again = read_rows(cut)
    assert [r.comparable() for r in again] == [r.comparable() for r in read_rows(whole)]
    assert again[:len(first)] == first  # the rows it held were kept, timings included, not measured again
    assert list(read_rows(cut)[0].cells()) == list(COLUMNS)


def test_workers_do_not_outlive_a_killed_survey(tmp_path):
    mark = tmp_path / "hanging"
    run = _cli(["survey", _spec("hangs"), "--input", "3x16x16", "-o", str(tmp_path / "out.csv"), "--jobs", "1"],
               env={"SURVEY_TEST_MARK": str(mark)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not mark.exists():
        time.sleep(0.1)
    workers = [p for p in _children(run.pid) if _is_worker(p)]
    assert mark.exists() and workers, "no worker reached the hanging forward"
    _kill_and_check_workers_go(run, workers)


def _is_worker(pid: int) -> bool:
    try:
        return b"from convlens.survey import serve" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
