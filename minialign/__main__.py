"""The command line: `python -m minialign` runs the whole pipeline; `python -m minialign STAGE`
runs one stage (training the stages it needs first if their results are missing).

    python -m minialign                      every stage, then DIR/summary.{json,md}
    python -m minialign pretrain|sft|reward|ppo|dpo|bon|compare
    python -m minialign compare --sweep      chapter 7's experiments: PPO and DPO at several KL
                                             coefficients and betas (the frontier), best-of-N
                                             up to N = 256 and a reward model trained on less
                                             data (over-optimisation), RLAIF; each an extra stage
                                             of DIR, skipped if present (about 20-30 minutes on
                                             a laptop; seconds with --fast)
    python -m minialign bench                speed on this machine (tokens/s, MFU, KV cache)

Flags: --out DIR (default runs/default, or runs/fast with --fast), --seed N, --fast (a small
configuration that finishes in a couple of minutes), --device cpu|cuda|mps|auto, --sweep (for
compare, and for the whole pipeline's compare step; the plain pipeline never sweeps).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import pipeline
from .utils import peak_memory_mb


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
    parser.add_argument("--sweep", action="store_true",
                        help="compare: also run chapter 7's experiments (20-30 min on a laptop)")
    args = parser.parse_args(argv)
    if args.sweep and args.stage not in ("compare", "all"):
        parser.error("--sweep goes with the compare stage (or the whole pipeline)")
    out = Path(args.out) if args.out else Path("runs") / ("fast" if args.fast else "default")

    if args.stage == "bench":
        from . import bench

        bench.main(out, fast=args.fast, device=args.device)
        return 0

    timings: dict = {}
    from . import compare

    def run(stage):
        if stage == "compare" and args.sweep:  # the compare stage with CompareConfig(sweep=True)
            for dep in pipeline.STAGES["compare"][2]:
                if not pipeline.is_done(out, dep):
                    pipeline.run(dep, out, args.fast, args.seed, args.device, timings)
            print(f"== compare --sweep ({'fast' if args.fast else 'default'} config) ==")
            start = time.perf_counter()
            compare.train(pipeline.make_config("compare", args.fast, args.seed, sweep=True), out,
                          args.device)
            timings["compare"] = {"seconds": time.perf_counter() - start,
                                  "peak_memory_mb": peak_memory_mb()}
        else:
            pipeline.run(stage, out, args.fast, args.seed, args.device, timings)

    if args.stage != "all":
        run(args.stage)
        return 0
    start = time.perf_counter()
    for stage in pipeline.ORDER:
        run(stage)
    summary = compare.write_summary(out, timings, time.perf_counter() - start, args.fast)
    print(f"pipeline finished in {summary['total_seconds']:.0f} s (peak memory "
          f"{summary['peak_memory_mb']:.0f} MB): "
          + ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in timings.items()))
    print(f"wrote {out / 'summary.md'} and {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
