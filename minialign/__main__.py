"""The command line: `python -m minialign` runs the whole pipeline; `python -m minialign STAGE`
runs one stage (training the stages it needs first if their results are missing).

    python -m minialign                      every stage, then DIR/summary.{json,md}
    python -m minialign pretrain|sft|reward|ppo|dpo|bon|compare
    python -m minialign bench                speed on this machine (tokens/s, MFU, KV cache)

Flags: --out DIR (default runs/default, or runs/fast with --fast), --seed N, --fast (a small
configuration that finishes in a couple of minutes), --device cpu|cuda|mps|auto.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import pipeline


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minialign", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", nargs="?", default="all",
                        choices=["all", *pipeline.STAGES, "bench"], help="default: all")
    parser.add_argument("--out", default=None, help="run folder (default runs/default, "
                                                    "or runs/fast with --fast)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast", action="store_true", help="small, quick configuration")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path("runs") / ("fast" if args.fast else "default")

    if args.stage == "bench":
        from . import bench

        bench.main(out, fast=args.fast, device=args.device)
        return 0

    timings: dict = {}
    if args.stage != "all":
        pipeline.run(args.stage, out, args.fast, args.seed, args.device, timings)
        return 0
    from . import compare

    start = time.perf_counter()
    for stage in pipeline.ORDER:
        pipeline.run(stage, out, args.fast, args.seed, args.device, timings)
    summary = compare.write_summary(out, timings, time.perf_counter() - start, args.fast)
    print(f"pipeline finished in {summary['total_seconds']:.0f} s (peak memory "
          f"{summary['peak_memory_mb']:.0f} MB): "
          + ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in timings.items()))
    print(f"wrote {out / 'summary.md'} and {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
