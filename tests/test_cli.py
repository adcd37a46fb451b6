"""The CLI as a user runs it: a fresh process, exit status, one-line errors, every MODEL form."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import convlens
from convlens.cli import main
from convlens.zoo import dilated_vgg16_voc


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convlens.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_default_model_table():
    done = run("analyze")
    assert done.returncode == 0, done.stderr
    assert "dilation8_voc on 1x3x900x900" in done.stdout
    assert "1×21×66×66" in done.stdout  # the released model's output on its 900x900 input


def test_default_model_shapes_are_torchs():
    # torch's own shape inference (a meta forward) for every stage of the built-in model at 900x900
    import torch
    with torch.device("meta"):
        model = dilated_vgg16_voc()
    report = convlens.analyze(model, (1, 3, 900, 900))
    x = torch.empty(1, 3, 900, 900, device="meta")
    for name, module in model.frontend.named_children():
        x = module(x)
        assert report[f"frontend.{name}"].output_shape == tuple(x.shape)
    assert report[""].output_shape == tuple(model.context(x).shape) == (1, 21, 66, 66)


def test_json_and_csv_hold_every_row(tmp_path):
    out = tmp_path / "r.json"
    done = run("analyze", "torchvision:resnet18", "--input", "3x64x64", "--batch", "2", "--format", "json",
               "-o", str(out))
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert data["input_shape"] == [2, 3, 64, 64]
    assert len(data["layers"]) > 60  # every module call, not the table's depth
    done = run("analyze", "torchvision:resnet18", "--input", "3x64x64", "--format", "csv")
    assert done.returncode == 0
    assert len(done.stdout.strip().splitlines()) == len(data["layers"]) + 1


def test_depth_limits_table_rows():
    shallow = run("analyze", "torchvision:resnet18", "--input", "3x64x64", "--depth", "1").stdout
    deep = run("analyze", "torchvision:resnet18", "--input", "3x64x64", "--depth", "3").stdout
    assert "layer1.0.conv1" not in shallow and "layer1.0.conv1" in deep


def test_an_input_without_channels_is_refused_with_the_shape_to_write(tmp_path, capsys):
    src = tmp_path / "gray.py"
    src.write_text("import torch.nn as nn\ndef net():\n    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())\n")
    assert main(["analyze", f"{src}:net", "--input", "16x16"]) == 2  # (1, 16, 16): one unbatched image
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "as unbatched" in line and line.endswith("(on the CLI: --input 1x16x16)")
    assert main(["analyze", f"{src}:net", "--input", "1x16x16", "-o", str(tmp_path / "t.txt")]) == 0


def test_depth_all_shows_every_row():
    every = run("analyze", "torchvision:resnet18", "--input", "3x64x64", "--depth", "all").stdout
    assert "layer1.0.conv1" in every and "layer4.1.bn2" in every
    assert f"rows: {len(convlens.analyze(torchvision_resnet18(), (1, 3, 64, 64)))}" in every


def test_version_is_the_installed_distributions():
    from importlib.metadata import version
    done = run("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"convlens {version('convlens')}"
    assert convlens.__version__ == version("convlens")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["arith", "conv", "-i", "224", "-k", "7", "-s", "2", "-p", "3"],
                                  ["arith", "--help"], ["analyze", "--help"], ["survey", "--help"]])
def test_small_commands_start_without_torch(args):
    # a fresh interpreter: what the command imported, after it ran (help and version exit)
    code = ("import sys\nfrom convlens.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'numpy', 'rich', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def torchvision_resnet18():
    import torchvision
    return torchvision.models.resnet18(weights=None)


def test_file_and_module_callables(tmp_path):
    src = tmp_path / "mynet.py"
    src.write_text(textwrap.dedent("""
        import torch.nn as nn
        def build():
            return nn.Sequential(nn.Conv1d(8, 8, 3, dilation=2), nn.Conv1d(8, 4, 3, dilation=4))
        net = build()
    """))
    done = run("analyze", f"{src}:build", "--input", "8x4096", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["layers"][0]["rf"] == [13]
    done = run("analyze", "mynet:net", "--input", "8x100", "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_package_module_from_the_current_directory(tmp_path):
    # the installed script, as a user runs it: Python puts the script's folder on the import path,
    # not the current directory (python -m does, which hid this)
    package = tmp_path / "mypackage"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        from .parts import block
        def UNet():
            return nn.Sequential(block(1, 4), block(4, 2))
    """))
    (package / "parts.py").write_text("import torch.nn as nn\ndef block(i, o):\n    return nn.Conv2d(i, o, 3)\n")
    script = Path(sys.executable).with_name("convlens")
    done = subprocess.run([str(script), "analyze", "mypackage.models:UNet", "--input", "1x16x16", "--format", "json"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["layers"][0]["rf"] == [5, 5]


def test_model_file_with_a_dataclass_and_postponed_annotations(tmp_path):
    # dataclasses look the module up in sys.modules while its body runs
    src = tmp_path / "config_net.py"
    src.write_text(textwrap.dedent("""
        from __future__ import annotations
        from dataclasses import dataclass
        import torch.nn as nn

        @dataclass
        class Config:
            width: int = 4
            kernel: int = 3

        def build(config: Config | None = None) -> nn.Module:
            config = config or Config()
            return nn.Conv2d(3, config.width, config.kernel, dilation=2)
    """))
    assert main(["analyze", f"{src}:build", "--input", "3x32x32", "--format", "json", "-o",
                 str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["layers"][0]["rf"] == [5, 5]


@pytest.mark.parametrize("args, message", [
    (("analyze", "nosuchmodel"), "unknown model"),
    (("analyze", "torchvision:resnet5"), "torchvision has no model 'resnet5'; did you mean torchvision:resnet50"),
    (("analyze", "resnet50"), "did you mean torchvision:resnet50"),
    (("analyze", "zoo:unett"), "the zoo has no model 'unett'; did you mean unet?"),
    (("analyze", "--depth", "al"), "must be 'all' or an integer"),
    (("analyze", "--input", "3x2a4"), "bad --input"),
    (("analyze", "--input", "224x224", "torchvision:resnet18"), "fails on input shape"),
    (("analyze", "missing.py:build"), "no file"),
    (("analyze", "no_such_pkg.mod:build"), "cannot import"),
    (("analyze", "--batch", "0"), "--batch"),
    (("arith", "conv", "-i", "5", "-k", "0"), "kernel"),
    (("arith", "padding", "-i", "5", "-k", "3"), "--target"),
    (("zoo", "nosuchnet"), "no zoo model"),
    (("plan", "--rf", "500", "--max-layers", "3"), "no hole-free schedule"),
    (("plan", "--rf", "33", "--kernel", "1"), "kernel must be"),
])
def test_bad_input_is_one_line_exit_2(args, message):
    done = run(*args)
    assert done.returncode == 2
    *usage, line = done.stderr.strip().splitlines()
    assert "error:" in line and message in line, done.stderr
    assert all(u.startswith("usage:") or u.startswith(" ") for u in usage), done.stderr  # argparse's usage
    assert "Traceback" not in done.stderr


def test_file_that_does_not_import(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("import nonexistent_module_xyz\n")
    done = run("analyze", f"{bad}:build")
    assert done.returncode == 2 and "does not import" in done.stderr and "Traceback" not in done.stderr


def test_arith_matches_torch():
    import torch
    done = run("arith", "conv", "-i", "224", "-k", "7", "-s", "2", "-p", "3")
    y = torch.nn.functional.conv2d(torch.zeros(1, 1, 224, 224), torch.zeros(1, 1, 7, 7), stride=2, padding=3)
    assert int(done.stdout) == y.shape[-1]


def test_coverage_outputs(tmp_path):
    import numpy as np
    args = ("coverage", "torchvision:resnet18", "--input", "3x64x48", "--layer", "layer1", "--unit", "3,4")
    done = run(*args, "-o", str(tmp_path / "c.npy"))
    assert done.returncode == 0, done.stderr
    assert "holes per axis (0, 0)" in done.stdout
    counts = np.load(tmp_path / "c.npy")
    assert counts.shape == (64, 48)  # the map over the input
    done = run(*args, "-o", str(tmp_path / "c.json"))
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["unit"] == [3, 4] and data["covered"] == int(np.count_nonzero(counts))
    nz = np.argwhere(counts)
    assert data["window"] == [[int(nz[:, 0].min()), int(nz[:, 0].max())], [int(nz[:, 1].min()), int(nz[:, 1].max())]]
    done = run(*args, "-o", str(tmp_path / "c.png"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("extra, message", [
    (("--layer", "layer1", "--unit", "1"), "one integer index per spatial axis"),
    (("--unit", "a,b"), "--unit must be integers"),
    ((), "the output is global along axis 0"),
    (("--layer", "fc"), "'fc' is global along axis 0"),
    (("-o", "c.txt"), "-o must end in one of"),
])
def test_coverage_errors_are_one_line(extra, message, tmp_path):
    done = run("coverage", "torchvision:resnet18", "--input", "3x64x64", *extra, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_erf_cli(tmp_path):
    import numpy as np
    done = run("erf", "torchvision:resnet18", "--input", "3x64x64", "--layer", "layer2", "--samples", "2",
               "-o", str(tmp_path / "e.npy"))
    assert done.returncode == 0, done.stderr
    assert "ERF std per axis" in done.stdout
    assert np.load(tmp_path / "e.npy").shape == (64, 64)
    done = run("erf", "torchvision:resnet18", "--input", "3x64x64", "--layer", "nope")
    assert done.returncode == 2 and "no row named 'nope'" in done.stderr


def test_shift_cli():
    done = run("shift", "torchvision:resnet18", "--input", "3x160x160", "--layer", "layer1", "--shift", "4",
               "--format", "json")
    assert done.returncode == 0, done.stderr
    axes = json.loads(done.stdout)["axes"]
    assert [a["smallest"] for a in axes] == [4, 4]  # stride 4 after the stem's conv and max pool
    done = run("shift", "torchvision:resnet18", "--input", "3x64x64")
    assert done.returncode == 2 and "before the global pooling" in done.stderr


def test_animate_cli(tmp_path):
    from PIL import Image
    done = run("animate", "--input", "5x6", "--kernel", "3", "--stride", "2", "--padding", "1",
               "-o", str(tmp_path / "c.gif"))
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "c.gif").n_frames == 3 * 3  # outputs (5+2-3)//2+1 = 3 and (6+2-3)//2+1 = 3
    done = run("animate", "--input", "3", "--kernel", "5", "-o", str(tmp_path / "c.gif"))
    assert done.returncode == 2 and "kernel does not fit" in done.stderr


def test_plot_cli(tmp_path):
    (tmp_path / "up.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        def build():
            return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ConvTranspose2d(4, 1, 3, stride=2))
    """))
    model = str(tmp_path / "up.py") + ":build"
    for kind, suffix in (("rf", "svg"), ("cost", "png"), ("coverage", "png"), ("checkerboard", "png"),
                         ("erf", "png")):
        out = tmp_path / f"{kind}.{suffix}"
        samples = ["--samples", "2"] if kind == "erf" else []
        done = run("plot", model, "--input", "1x16x16", "--kind", kind, *samples, "-o", str(out))
        assert done.returncode == 0, (kind, done.stderr)
        assert out.stat().st_size > 1000
    done = run("plot", model, "--input", "1x16x16", "--kind", "rf", "-o", str(tmp_path / "x.txt"))
    assert done.returncode == 2 and "-o must end in" in done.stderr


def test_zoo_cli_lists_every_model_with_its_real_parameter_count():
    import torch
    from convlens.zoo import ZOO

    done = run("zoo", "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert set(rows) == set(ZOO)
    for name, row in rows.items():
        with torch.device("meta"):
            model = ZOO[name].build()
        assert row["params"] == sum(p.numel() for p in model.parameters()) == row["source_params"]
    table = run("zoo", "dilation8_voc")
    assert table.returncode == 0 and "dilation8_voc" in table.stdout and "dilation7_kitti" not in table.stdout


def test_plan_cli():
    done = run("plan", "--rf", "65", "--kernel", "3", "--format", "json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for s in result["schedules"]:
        assert 1 + 2 * sum(s["dilations"]) == s["rf"] >= 65 and s["holes"] == 0
    assert result["exponential"]["dilations"] == [1, 2, 4, 8, 16, 32]
    table = run("plan", "--rf", "129")
    assert table.returncode == 0 and "1, 2, 4, 8, 16, 32, 64" in table.stdout
