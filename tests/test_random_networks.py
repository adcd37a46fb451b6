"""Hypothesis-generated networks against the gradient oracle (DESIGN.md, "The oracle tests use").

Each network (tests/netgen.py: every op family of the core issue, functional calls, slicing, shared
modules, ops without a rule) is analyzed and compared with torch's shapes and the oracle: the clipped
window and the coverage support of every row's corner, edge and centre units, and, when the net runs on a larger input and its
windows do not depend on the input size, every row's rf, stride and offset. The number of networks
per run is ``CONVLENS_NETWORKS`` (default 500, in two shards); every family must occur in each shard.
"""

from __future__ import annotations

import math
import os
import time

import pytest
from hypothesis import given, seed, settings

import convlens
from checks import check_against_oracle
from conftest import FAMILY_REPORTS
from netgen import FamilyCounter, networks

TOTAL = int(os.environ.get("CONVLENS_NETWORKS", "500"))
SHARDS = 2
# a fixed sample (a seed per shard, so the shards differ): CONVLENS_SEED picks another one,
# CONVLENS_EXPLORE=1 draws new networks every run
SEED = None if os.environ.get("CONVLENS_EXPLORE") else int(os.environ.get("CONVLENS_SEED", "2026"))


@pytest.mark.parametrize("shard", range(SHARDS))
def test_random_networks_match_the_oracle(shard):
    counter = FamilyCounter()
    windows = unbounded = covered = 0
    start = time.perf_counter()

    @settings(max_examples=TOTAL // SHARDS, database=None)
    @given(net=networks())
    @seed(SEED + shard) if SEED is not None else (lambda f: f)
    def check(net):
        nonlocal windows, unbounded, covered
        counter.record(net)
        big = None
        if net.resizable and not net.size_dependent:
            # grow every axis well past the widest window, so the middle units are interior (the
            # size only steers the probe; expected values still come from the oracle alone)
            rfs = [rf for layer in convlens.analyze(net.model, net.input_shape) for rf in layer.rf
                   if isinstance(rf, int)]
            widest = max(rfs, default=1)
            grow = min(max(8, 3 * widest), 24) if net.dim == 3 else max(32, 4 * widest)
            ks = [-(-grow // p) for p in net.period]
            # an even number of periods keeps the centre unit's phase along every axis, where rf,
            # stride and offset are read (pieces with phase gaps along another axis change them);
            # each axis by its own period (one count for all made an axis of period 54 beside one of
            # period 1 grow by 2,600 positions, and its probes take many minutes)
            big = net.larger_input_shape([k + k % 2 for k in ks])
            if net.dim == 3 and math.prod(big[2:]) > 20_000:
                big = None  # a long period in 3-D: the oracle's probes on that volume would take minutes
        # (attention within windows is local: the oracle's detached copy, which cuts every product,
        # only bounds the local windows of rows with global context there)
        checked = check_against_oracle(net.model, net.input_shape, big_shape=big,
                                       local_products="windows" in net.families)
        windows += checked.windows
        unbounded += checked.unbounded
        covered += checked.coverage
        if counter.n % 100 == 0:  # progress of long runs (CONVLENS_NETWORKS=10000)
            FAMILY_REPORTS.mkdir(exist_ok=True)
            (FAMILY_REPORTS / f"progress{shard}.log").write_text(
                f"shard {shard}: {counter.n} networks passed, {time.perf_counter() - start:.0f} s\n")

    check()
    elapsed = time.perf_counter() - start
    FAMILY_REPORTS.mkdir(exist_ok=True)
    (FAMILY_REPORTS / f"shard{shard}.txt").write_text(
        f"shard {shard}: {counter.report()}\n  windows checked {windows}, coverage maps {covered}, "
        f"rf/stride/offset checked {unbounded}, "
        f"{elapsed:.0f} s")
    assert not counter.missing(), f"families never generated: {sorted(counter.missing())}"
