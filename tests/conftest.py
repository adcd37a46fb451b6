"""Shared test set-up: hypothesis profiles and the per-family report of the random-network tests."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from hypothesis import HealthCheck, Phase, settings

# Tests run two pytest workers on two cores: one intra-op thread each avoids oversubscription,
# which made the oracle's small forward/backward passes several times slower.
torch.set_num_threads(1)

# per-family counts and progress logs of the random-network tests (a long run in the background can
# point CONVLENS_REPORTS elsewhere, so that other test runs do not clear its logs)
FAMILY_REPORTS = Path(os.environ.get("CONVLENS_REPORTS", Path(__file__).parent / ".family_counts"))

# The test command runs a fixed sample (derandomized, and seeded in the random-network tests), so that
# a run is reproducible wherever it happens; CONVLENS_EXPLORE=1 draws new examples instead.
_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("fixed", deadline=None, print_blob=True, derandomize=True, database=None,
                          suppress_health_check=_SUPPRESS)
settings.register_profile("explore", deadline=None, print_blob=True, suppress_health_check=_SUPPRESS)
# CONVLENS_NO_SHRINK=1 (long runs): report a failing example at once, unshrunk, with its blob
settings.register_profile("fixed-no-shrink", settings.get_profile("fixed"),
                          phases=[p for p in Phase if p is not Phase.shrink])
settings.load_profile("explore" if os.environ.get("CONVLENS_EXPLORE")
                      else "fixed-no-shrink" if os.environ.get("CONVLENS_NO_SHRINK") else "fixed")


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):  # the controller clears the previous run's counts
        FAMILY_REPORTS.mkdir(exist_ok=True)
        for old in [*FAMILY_REPORTS.glob("*.txt"), *FAMILY_REPORTS.glob("*.log")]:
            old.unlink()


def pytest_terminal_summary(terminalreporter):
    reports = sorted(FAMILY_REPORTS.glob("*.txt")) if FAMILY_REPORTS.exists() else []
    if reports:
        terminalreporter.section("random networks per op family")
        for path in reports:
            terminalreporter.write_line(path.read_text())
