"""Shared pytest setup: headless matplotlib, quiet progress bars, the repo on sys.path."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MINIALIGN_NO_PROGRESS", "1")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """Group tests for pytest-xdist (`-n auto --dist loadgroup`, as the README runs them): one
    group per test file, so that a file's module-scoped fixtures (a graded class of mutants,
    a fast run folder) are built once, on one worker; but one group per notebook, since the
    notebooks are the longest tests and independent of each other. (Without the groups, the
    tests of a file are spread over the workers and each builds the file's fixtures again:
    that happened with pytest 9.2, whose node ids ignore the group xdist 3.8 appends to them,
    hence the pin in requirements.txt.)"""
    for item in items:
        group = Path(str(item.fspath)).stem
        if group == "test_notebooks" and "[" in item.name:  # a group name without brackets:
            group = "notebook-" + item.name.split("[", 1)[1].rstrip("]")  # xdist splits on "]"
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_configure(config):
    """Under pytest-xdist, share the cores among the workers instead of each worker's torch
    using them all (which makes two workers slower than one)."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        threads = max(1, (os.cpu_count() or 1) // int(workers))
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the kernels and subprocesses it starts
