"""Why do dilations 2, 4, 8 leave holes when 1, 2, 5 do not? The coverage map of the centre unit of each
stack, the exact verdict, and Wang et al.'s rule beside it."""
from pathlib import Path

import torch.nn as nn

import convlens
from convlens.render.figures import save_coverage_figure


def run(out_dir: Path) -> dict:
    found = {}
    print("dilations  rf   covered  holes per axis  Wang et al.'s M2 <= 3")
    for i, dilations in enumerate([(2, 4, 8), (1, 2, 5), (2, 2, 2)]):
        key = "d" + "".join(map(str, dilations))
        stack = nn.Sequential(*[nn.Conv2d(1, 1, 3, dilation=d, padding=d) for d in dilations])
        report = convlens.analyze(stack, (1, 1, 64, 64))
        grid, cov = report.gridding(""), report.coverage("", (32, 32))
        m2 = grid.runs[0].hdc_m2[0]
        print(f"{', '.join(map(str, dilations)):<10}{report[''].rf[0]:>3}   {cov.covered:>3} of {cov.pixels:<3}"
              f"  {cov.holes[0]:>6}          M2 = {m2}: {'passes' if m2 <= 3 else 'fails'}")
        found.update({f"{key}_rf": report[""].rf[0], f"{key}_covered": cov.covered, f"{key}_pixels": cov.pixels,
                      f"{key}_holes": cov.holes[0], f"{key}_m2": m2, f"{key}_grids": grid.grids})
        if dilations != (2, 2, 2):
            save_coverage_figure(cov, out_dir / f"s10_{i}_{key}.png")
    return found


if __name__ == "__main__":
    run(Path("."))
