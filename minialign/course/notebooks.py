"""Executing the course's notebooks, and stamping each with its measured run time.

    python -m minialign.course notebooks [NAME ...]          full mode, outputs saved in place
    python -m minialign.course notebooks --fast [NAME ...]   fast mode (MINIALIGN_FAST=1) in a
                                                             scratch run folder; only timed

Full mode reads the run folder the notebooks use (runs/default, or MINIALIGN_RUN_DIR) and
trains there what is missing, so run the pipeline and the sweep first (`python -m minialign`,
then `python -m minialign compare --sweep`); its outputs are the ones committed. Either mode
records each notebook's wall time in notebooks/run_times.json, and the first cell of every
notebook gets a "Run time" line from that file: numbers measured by the last execution, on the
machine named there, never typed by hand.

The kernel is this interpreter, through a kernel spec in a scratch Jupyter path, so that a
system-wide `python3` kernel is never picked up by mistake (the tests use the same spec).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from .markers import REPO_DIR

NOTEBOOK_DIR = REPO_DIR / "notebooks"
RUN_TIMES = NOTEBOOK_DIR / "run_times.json"
KERNEL = "minialign-notebooks"
RUN_TIME_PREFIX = "**Run time:**"


def notebooks(names=None) -> list[Path]:
    """The course notebooks in order, or those whose file name starts with one of `names`."""
    paths = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if names:
        paths = [p for p in paths if any(p.name.startswith(n) for n in names)]
    return paths


def write_kernel_spec(jupyter_path: Path, env: dict, kernel: str = KERNEL) -> None:
    """A kernel spec named `kernel` under jupyter_path that runs this interpreter with `env`."""
    spec_dir = Path(jupyter_path) / "kernels" / kernel
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"minialign ({kernel})", "language": "python", "env": env}))


def kernel_env(fast: bool, run_dir: str | Path | None) -> dict:
    """The environment a notebook runs in: the repository importable, Agg figures, no progress
    bars, and (if given) the run folder; MINIALIGN_FAST=1 in fast mode."""
    env = {"MPLBACKEND": "Agg", "MINIALIGN_NO_PROGRESS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_DIR)] + [p for p in os.environ.get(
               "PYTHONPATH", "").split(os.pathsep) if p])}
    if fast:
        env["MINIALIGN_FAST"] = "1"
    if run_dir is not None:
        env["MINIALIGN_RUN_DIR"] = str(run_dir)
    return env


def execute(path: Path, jupyter_path: Path, timeout: int = 3600, kernel: str = KERNEL):
    """Run every cell of the notebook at `path` (working folder: its own). Returns (the executed
    notebook, seconds). Raises nbclient's CellExecutionError at the first failing cell."""
    import nbclient
    import nbformat

    os.environ["JUPYTER_PATH"] = str(jupyter_path)
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, kernel_name=kernel, timeout=timeout,
                                     resources={"metadata": {"path": str(path.parent)}})
    start = time.monotonic()
    client.execute()
    return notebook, time.monotonic() - start


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def run_time_line(name: str, times: dict) -> str | None:
    """The "Run time" sentence for notebook `name` from run_times.json's content, or None when
    neither mode has been timed."""
    full, fast = times.get("full", {}).get(name), times.get("fast", {}).get(name)
    if full is None and fast is None:
        return None
    parts = []
    if full is not None:
        parts.append(f"about {_minutes(full)} in full mode, with the pipeline's stages and the "
                     f"sweep already in `runs/default` (it trains what is missing)")
    if fast is not None:
        parts.append(f"about {_minutes(fast)} in fast mode (`MINIALIGN_FAST=1`, which trains "
                     f"tiny models from nothing)")
    machine = times.get("machine", "the machine that ran it")
    return f"{RUN_TIME_PREFIX} {'; '.join(parts)}. Measured on {machine}; yours will differ."


def stamp_run_time(notebook, line: str | None) -> None:
    """Put `line` in the notebook's first cell, replacing an earlier "Run time" line."""
    cell = notebook.cells[0]
    kept = [ln for ln in cell.source.split("\n") if not ln.startswith(RUN_TIME_PREFIX)]
    while kept and not kept[-1].strip():
        kept.pop()
    cell.source = "\n".join(kept + ([""] + [line] if line else []))


def machine_name() -> str:
    """e.g. "a 2-core x86_64 CPU with native bf16 (AMX)": what the timings depend on most."""
    from ..utils import native_bf16_cpu

    bf16 = native_bf16_cpu()
    return (f"a {os.cpu_count()}-core {platform.machine()} CPU "
            f"{f'with native bf16 ({bf16})' if bf16 else 'without native bf16'}")


def main(argv=None) -> int:
    import nbformat

    parser = argparse.ArgumentParser(prog="python -m minialign.course notebooks",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebook name prefixes (default: all)")
    parser.add_argument("--fast", action="store_true",
                        help="fast mode in a scratch run folder; time only, outputs not saved")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args(argv)

    paths = notebooks(args.names)
    if not paths:
        print(f"no notebook matches {args.names}", file=sys.stderr)
        return 2
    times = json.loads(RUN_TIMES.read_text()) if RUN_TIMES.exists() else {}
    times["machine"] = machine_name()
    mode = "fast" if args.fast else "full"
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch) / "runs" if args.fast else os.environ.get("MINIALIGN_RUN_DIR")
        write_kernel_spec(Path(scratch) / "jupyter", kernel_env(args.fast, run_dir))
        for path in paths:
            print(f"{path.name}: running ({mode} mode)", flush=True)
            executed, seconds = execute(path, Path(scratch) / "jupyter", args.timeout)
            times.setdefault(mode, {})[path.stem] = round(seconds, 1)
            RUN_TIMES.write_text(json.dumps(times, indent=1, sort_keys=True) + "\n")
            if not args.fast:
                nbformat.write(executed, path)
            print(f"{path.name}: {seconds:.0f} s", flush=True)
    for path in notebooks():  # every notebook's first cell says what run_times.json says
        notebook = nbformat.read(path, as_version=4)
        stamp_run_time(notebook, run_time_line(path.stem, times))
        nbformat.write(notebook, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
