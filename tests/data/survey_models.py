"""Models that misbehave, for the survey's tests: each builder is a MODEL (path.py:NAME)."""

import os
import time

import numpy as np
import torch.nn as nn


class _Forward(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = act

    def forward(self, x):
        self.act()
        return self.conv(x)


def good():
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 4, 3))


def _hang():
    mark = os.environ.get("SURVEY_TEST_MARK")  # tells a test that the forward has begun
    if mark:
        open(mark, "w").close()
    time.sleep(3600)


def hangs():
    return _Forward(_hang)


def raises_at_build():
    raise ValueError("this model cannot be built")


def dies():
    return _Forward(lambda: os._exit(3))


_HOG = []


def hogs_memory():
    _HOG.append(np.ones(3 << 30, dtype=np.uint8))  # 3 GiB, every page touched
    time.sleep(3600)
    return good()
