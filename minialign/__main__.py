"""The command line: `python -m minialign` runs the whole pipeline; `python -m minialign STAGE`
runs one stage (training the stages it needs first if their results are missing or stale).
A rerun resumes: a stage whose results are up to date (same config, same upstream runs) is
skipped and says so; `--force STAGE` retrains it.

    python -m minialign                      every stage, then DIR/summary.{json,md}
    python -m minialign pretrain|sft|preferences|reward|ppo|grpo|dpo|bon|compare
    python -m minialign compare --sweep      chapters 7 and 8's experiments: PPO and DPO at
                                             several KL coefficients and betas (the frontier),
                                             best-of-N up to N = 256 and a reward model trained
                                             on less data (over-optimisation), PPO and DPO with
                                             four more seeds (the noise), RLAIF, GRPO's variants;
                                             each an extra stage of DIR, skipped if present and
                                             made from the current upstream runs (about 40 min on
                                             this project's 2-core machine; seconds with --fast)
    python -m minialign bench                speed on this machine (tokens/s, MFU, KV cache);
                                             --compile also times torch.compile's step,
                                             --precision fp32 skips bf16 (as on a laptop)
    python -m minialign prm                  process vs outcome reward models on chained sums:
                                             best-of-N by PRM, ORM and majority vote, N = 1..64
                                             (its own tiny models; not part of the default run)
    python -m minialign pretrain_length      SFT's task success against pretraining length:
                                             pretraining cut short (320 and 480 steps), each
                                             fine-tuned (not part of the default run)
    torchrun --standalone --nproc_per_node=N -m minialign STAGE
                                             data-parallel training (DDP) over N processes
                                             (CPU: gloo; GPUs: NCCL, one per process)
    --size gpt2 --device cuda                GPT-2 small's shape on a GPU (bf16 autocast)
    --log tensorboard                        scalars for TensorBoard under DIR/tensorboard

    python -m minialign dpo --impl exercises train with your own functions (exercises/, solutions/
                                             or a folder of chapter files) wherever the library
                                             calls them; unwritten ones fall back to the
                                             library's (the run goes to runs/exercises)

Flags: --out DIR (default runs/default, or runs/fast with --fast), --seed N, --fast (a small
configuration that finishes in a couple of minutes), --device cpu|cuda|mps|auto,
--precision fp32|bf16|auto (pretraining's arithmetic; auto: bf16 where native), --sweep (for
compare, and for the whole pipeline's compare step; the plain pipeline never sweeps).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import dist, pipeline
from .course import impl
from .course.impl import StudentCodeError


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
    parser.add_argument("--precision", choices=["fp32", "bf16", "auto"], default=None,
                        help="pretraining's arithmetic: auto (default) is bf16 mixed precision "
                             "where the hardware has bf16 natively (a CUDA GPU; a CPU with AMX or "
                             "AVX-512 BF16), else fp32; fp32 forces full precision everywhere")
    parser.add_argument("--sweep", action="store_true",
                        help="compare: also run chapter 7's and 8's experiments "
                             "(about 45 min on 2 cores); the compare stage itself always "
                             "reruns, each of its extra runs only if missing or stale")
    parser.add_argument("--force", action="append", metavar="STAGE",
                        choices=["all", *pipeline.STAGES],
                        help="retrain STAGE even if its results are up to date (repeat for "
                             "several; 'all' retrains everything); the stages after it follow")
    parser.add_argument("--impl", default=None, metavar="exercises|solutions|DIR",
                        help="train with your own functions: every exercise written in these "
                             "chapter files replaces the library's wherever it is called; stubs "
                             "fall back to the library's (the run goes to runs/NAME)")
    parser.add_argument("--size", default="default", choices=["default", "gpt2"],
                        help="model size: default (the CPU size) or gpt2 (GPT-2 small's shape, "
                             "1024 positions: a GPU size; with --device cuda)")
    parser.add_argument("--log", default=None, choices=["tensorboard"],
                        help="also write every stage's scalars for TensorBoard, under TRL's "
                             "names, to DIR/tensorboard (needs `pip install tensorboard`)")
    parser.add_argument("--compile", action="store_true",
                        help="bench: also time the fp32 training step under torch.compile")
    args = parser.parse_args(argv)
    if args.compile and args.stage != "bench":
        parser.error("--compile goes with the bench stage")
    if args.log == "tensorboard":
        from . import tracking

        try:
            tracking.check_tensorboard()
        except RuntimeError as e:
            parser.error(str(e))
        tracking.enable()  # every stage trained from now on writes its curves as it goes
    # under torchrun: join the process group (gloo on CPU, NCCL on CUDA); rank 0 prints
    device = dist.init(args.device)
    if device is not None:
        args.device = str(device)  # this rank's GPU
    if not dist.is_main():
        sys.stdout = open(os.devnull, "w")
    if args.sweep and args.stage not in ("compare", "all"):
        parser.error("--sweep goes with the compare stage (or the whole pipeline)")
    if args.impl is not None:
        try:
            impl.use(args.impl)
        except (FileNotFoundError, SyntaxError, StudentCodeError) as e:
            parser.error(f"--impl {args.impl}: {e}")
    out = Path(args.out) if args.out else pipeline.default_run_dir(args.fast, relative=True)
    try:
        return _run(args, out)
    except StudentCodeError as e:  # the learner's function failed: say so, no traceback
        print(f"\nstopped: {e}", file=sys.stderr)
        return 1
    finally:
        dist.close()


def _run(args, out: Path) -> int:
    if args.stage == "bench":
        from . import bench

        bench.main(out, fast=args.fast, device=args.device, size=args.size,
                   torch_compile=args.compile, precision=args.precision or "auto")
        return 0

    from . import compare

    timings: dict = {}
    stages = pipeline.ORDER if args.stage == "all" else [args.stage]
    overrides = {"compare": {"sweep": True}} if args.sweep else {}
    force = list(args.force or ())
    if args.sweep and args.stage in ("compare", "all"):
        # the sweep is the compare stage's own work: rerun it, so that a change in the
        # experiments' code (not part of any stage's record) is never skipped; its extra runs
        # are still each trained only when missing or stale
        force.append("compare")
    if args.size != "default":
        from .pretrain import SIZES

        overrides["pretrain"] = SIZES[args.size]
    start = time.perf_counter()
    skipped = pipeline.update(stages, out, args.fast, args.seed, args.device, timings,
                              precision=args.precision, force=force,
                              overrides=overrides)
    if args.log == "tensorboard" and dist.is_main():  # the skipped stages' curves, afterwards
        from . import tracking

        tracking.write_run(out, skipped)
    if args.stage != "all" or not dist.is_main():
        return 0
    summary = compare.write_summary(out, timings, time.perf_counter() - start, args.fast,
                                    skipped=skipped)
    print(f"pipeline finished in {summary['total_seconds']:.0f} s (peak memory "
          f"{summary['peak_memory_mb']:.0f} MB): "
          + ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in timings.items())
          + (f"; up to date, skipped: {', '.join(skipped)}" if skipped else ""))
    print(f"wrote {out / 'summary.md'} and {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
