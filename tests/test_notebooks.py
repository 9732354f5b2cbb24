"""Every notebook runs top to bottom in a real Jupyter kernel, in fast mode, within a time limit.

The kernel is this interpreter (the virtual environment's), through a kernel spec written to a
temporary Jupyter path, so a system-wide `python3` kernel is never picked up by mistake. Its
environment: MINIALIGN_FAST=1 (notebooks shrink their training), MPLBACKEND=Agg, PYTHONPATH with
the repository, and MINIALIGN_RUN_DIR, a run folder shared by every notebook of the session:
a notebook trains in fast mode what is missing there and reuses what an earlier one left
(`runs/` layout of `python -m minialign`). The working directory is the notebooks folder.

No notebooks yet means no tests (nothing is collected).
"""

import os
import time

import pytest

from minialign.course.markers import REPO_DIR
from minialign.course.notebooks import kernel_env, write_kernel_spec

NOTEBOOKS = sorted((REPO_DIR / "notebooks").glob("*.ipynb"))
TIME_LIMIT_S = int(os.environ.get("MINIALIGN_NOTEBOOK_TIMEOUT", "300"))  # per notebook
KERNEL = "minialign-test"


@pytest.fixture(scope="session")
def notebook_env(tmp_path_factory):
    """A kernel spec for this interpreter and the environment every notebook runs in."""
    jupyter_path = tmp_path_factory.mktemp("jupyter")
    env = kernel_env(fast=True, run_dir=tmp_path_factory.mktemp("runs"))
    write_kernel_spec(jupyter_path, env, KERNEL)
    return jupyter_path, env


if NOTEBOOKS:
    @pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
    def test_notebook_runs_top_to_bottom(path, notebook_env, monkeypatch):
        nbformat = pytest.importorskip("nbformat")
        nbclient = pytest.importorskip("nbclient")
        jupyter_path, env = notebook_env
        monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        notebook = nbformat.read(path, as_version=4)
        deadline = time.monotonic() + TIME_LIMIT_S
        client = nbclient.NotebookClient(
            notebook, kernel_name=KERNEL, timeout=TIME_LIMIT_S,
            timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
            resources={"metadata": {"path": str(path.parent)}})
        start = time.monotonic()
        client.execute()
        seconds = time.monotonic() - start
        print(f"\n{path.name}: {seconds:.0f} s")
        assert seconds <= TIME_LIMIT_S
