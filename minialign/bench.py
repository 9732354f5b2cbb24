"""Benchmarks on the machine at hand: how fast training and generation are, and why.

    python -m minialign bench [--out runs/default] [--fast] [--compile] [--precision fp32]
    python -m minialign bench --device cuda --size gpt2     a GPU, at GPT-2 small's shape

  matmul peak   the best fp32 GFLOP/s of a large square matmul (the machine's practical peak)
  training      tokens/s of the full training step (forward, backward, clip, AdamW) at the
                default model size, and the model FLOPs utilisation (MFU): achieved FLOP/s over
                the matmul peak, counting 6 N + 12 L T C FLOPs per token (Kaplan et al. 2020;
                N = non-embedding parameters plus the output layer)
  bf16          where bf16 is native (a CPU with AMX or AVX-512 BF16, most GPUs): the bf16
                matmul peak and the training speed under bf16 autocast, the precision
                pretraining then uses (utils.use_bf16); --precision fp32 skips it, as pretraining
  GPU           on CUDA the bf16 MFU is also given against the GPU's datasheet bf16 peak
                (dense tensor-core FLOP/s) where the GPU is in `BF16_PEAK_TFLOPS`
  step profile  where one fp32 training step's time goes, by kind of operation (torch.profiler,
                self time): the matmuls and attention, which do the FLOPs MFU counts, against
                the elementwise work, the norms, the softmax and loss, and AdamW, which do
                almost none; the matmuls' share bounds the MFU from above
  compiled      with --compile: the same fp32 training step with the model under
                torch.compile (inductor), its first step's time (the compilation) and its
                tokens/s against eager's, measured in a child process, since a compiler
                crash on some CPUs ends the process rather than raising
  generation    tokens/s for 128 new tokens at batch 1 and batch 64, with and without the KV
                cache, and the speed-up
  stages        wall time and peak memory of each stage, from DIR/summary.json when a full
                run has written it; and where each stage's time went (sampling, training,
                evaluation, other: utils.TimeSplit), from its DIR/STAGE/metrics.json

Writes DIR/bench.json and prints a table. Timings use time.perf_counter around whole loops,
after warm-up, best of a few repeats (the minimum is the least disturbed by other processes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import pipeline
from .model import GPT, GPTConfig
from .pretrain import SIZES, PretrainConfig
from .utils import (autocast, make_optimizer, native_bf16_cpu, pick_device, read_json, use_bf16,
                    write_json)


def _best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak(device, n: int = 1024, iters: int = 10, repeats: int = 5,
                dtype=torch.float32) -> float:
    """Best GFLOP/s of an n x n matmul (fp32 unless dtype says otherwise)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b

    def run():
        for _ in range(iters):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()

    return 2 * n ** 3 * iters / _best_time(run, repeats) / 1e9


def best_matmul_peak(device, dtype=torch.float32) -> float:
    """The better of a 1024 and a 2048 square matmul (4096 and 8192 on a GPU, which small
    matmuls leave idle): the machine's practical peak."""
    n = (1024, 2048) if device.type == "cpu" else (4096, 8192)
    return max(matmul_peak(device, n[0], dtype=dtype),
               matmul_peak(device, n[1], iters=3, repeats=3, dtype=dtype))


# Datasheet dense bf16 tensor-core peaks, TFLOP/s (NVIDIA's spec sheets; sparsity not counted).
# The MFU people quote (PaLM, nanoGPT) is against this number, not a measured matmul.
BF16_PEAK_TFLOPS = {"H100 PCIe": 756, "H100": 989, "H200": 989, "A100": 312, "L40S": 362,
                    "A10": 125, "L4": 121}


def datasheet_bf16_peak(device) -> float | None:
    """The GPU's datasheet bf16 peak in GFLOP/s, or None (a CPU, or a GPU not in the table)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in BF16_PEAK_TFLOPS.items():  # "H100 PCIe" is looked for before "H100"
        if key in name:
            return tflops * 1000.0
    return None


def flops_per_token(cfg: GPTConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 per parameter of the matmuls, plus attention's 12 L T C."""
    n = 12 * cfg.n_layer * cfg.n_embd ** 2 + cfg.vocab_size * cfg.n_embd
    return 6 * n + 12 * cfg.n_layer * seq_len * cfg.n_embd


def _training_step(cfg: GPTConfig, batch_size: int, device, bf16: bool = False,
                   compiled: bool = False):
    """A function doing one full training step (forward, backward, clip, AdamW) of a fresh
    model on random tokens (speed does not depend on the data), after three warm-up steps.
    compiled: the model's forward (and so its backward) under torch.compile."""
    torch.manual_seed(0)
    model = GPT(cfg).to(device)
    opt = make_optimizer(model, 1e-4, 0.1)
    forward = torch.compile(model) if compiled else model
    x = torch.randint(0, cfg.vocab_size, (batch_size, cfg.block_size), device=device)
    y = torch.randint(0, cfg.vocab_size, (batch_size, cfg.block_size), device=device)

    def step():
        with autocast(device, bf16):
            _, loss = forward(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(3):
        step()
    return step


def training_speed(cfg: GPTConfig, batch_size: int, device, steps: int = 10, repeats: int = 3,
                   bf16: bool = False, compiled: bool = False):
    """Tokens/s of full training steps; bf16=True runs the forward pass under bf16 autocast, as
    pretraining does where it is native; compiled=True under torch.compile."""
    step = _training_step(cfg, batch_size, device, bf16, compiled)

    def run():
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    seconds = _best_time(run, repeats) / steps
    return batch_size * cfg.block_size / seconds


def compiled_training_speed(cfg: GPTConfig, batch_size: int, device,
                            timeout_s: float = 900) -> dict:
    """The fp32 training step under torch.compile, in a child process: {"first_step_seconds"
    (compilation included), "train_tokens_per_second"}, or {"error": what went wrong} when the
    compiler is missing, fails, or crashes the process (as it did with this project's CPU's
    native kernels: glibc aborted), or runs past timeout_s."""
    job = json.dumps({"config": cfg.__dict__, "batch_size": batch_size, "device": str(device)})
    code = "import sys; from minialign.bench import _compiled_child; _compiled_child(sys.argv[1])"
    root = str(Path(__file__).resolve().parent.parent)  # so that the child imports this copy
    try:
        done = subprocess.run([sys.executable, "-c", code, job], capture_output=True, text=True,
                              timeout=timeout_s, cwd=root)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout_s:.0f} s"}
    last = done.stdout.strip().splitlines()[-1:] if done.stdout else []
    if done.returncode == 0 and last:
        return json.loads(last[0])
    tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-1:]
    return {"error": f"the child process exited with {done.returncode}"
                     + (f": {tail[0][:200]}" if tail else "")}


def _compiled_child(job: str) -> None:
    """compiled_training_speed's child: time the first compiled step, then the speed."""
    import warnings

    warnings.filterwarnings("ignore")
    job = json.loads(job)
    cfg, device = GPTConfig(**job["config"]), torch.device(job["device"])
    start = time.perf_counter()
    _training_step(cfg, job["batch_size"], device, compiled=True)  # compiles, 3 warm-up steps
    first = time.perf_counter() - start
    tps = training_speed(cfg, job["batch_size"], device, compiled=True)
    print(json.dumps({"first_step_seconds": first, "train_tokens_per_second": tps}))


OP_KINDS = ("matmul", "attention", "softmax and loss", "norms", "optimizer", "other elementwise")


def op_kind(name: str) -> str:
    """The kind of a profiler op name, e.g. "aten::addmm" -> "matmul"."""
    name = name.lower()
    if name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"):
        return "matmul"
    if "scaled_dot_product" in name or "flash_attention" in name:
        return "attention"
    if "softmax" in name or "nll_loss" in name or "cross_entropy" in name:
        return "softmax and loss"
    if "layer_norm" in name:
        return "norms"
    if "_foreach_" in name or "adam" in name:
        return "optimizer"
    return "other elementwise"


def step_profile(cfg: GPTConfig, batch_size: int, device, steps: int = 5) -> dict:
    """{kind: fraction of the training step's op self time} (OP_KINDS) over `steps` fp32
    steps under torch.profiler. The profiler adds a little time to every op, most to the many
    small ones, so "other elementwise" reads a bit high."""
    from torch.profiler import ProfilerActivity, profile

    step = _training_step(cfg, batch_size, device)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    totals = dict.fromkeys(OP_KINDS, 0.0)
    for event in prof.key_averages():
        totals[op_kind(event.key)] += event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {kind: t / whole for kind, t in totals.items()}


def generation_speed(cfg: GPTConfig, batch_size: int, new_tokens: int, use_cache: bool, device,
                     prompt_len: int = 8, repeats: int = 2) -> float:
    """Generated tokens/s (all rows generate every token: no end-of-turn stopping)."""
    torch.manual_seed(0)
    model = GPT(cfg).to(device).eval()
    idx = torch.randint(0, cfg.vocab_size, (batch_size, prompt_len), device=device)
    model.generate(idx, 4, use_cache=use_cache)  # warm-up

    def run():
        model.generate(idx, new_tokens, use_cache=use_cache,
                       generator=torch.Generator(device=device).manual_seed(0))

    return batch_size * new_tokens / _best_time(run, repeats)


def main(out_dir, fast: bool = False, device: str = "cpu", size: str = "default",
         torch_compile: bool = False, precision: str = "auto") -> dict:
    dev = pick_device(device)
    pc = PretrainConfig.fast(**SIZES[size]) if fast else PretrainConfig(**SIZES[size])
    cfg = pc.model_config(pc.vocab_size)
    batch = pc.micro_batch_size or pc.batch_size  # rows per forward pass, as pretraining runs
    threads = torch.get_num_threads()
    print(f"bench on {dev} ({threads} threads), model: {cfg.n_layer} layers, {cfg.n_embd} "
          f"channels, {cfg.n_head} heads, vocab {cfg.vocab_size}, context {cfg.block_size}")
    peak = best_matmul_peak(dev)
    tps = training_speed(cfg, batch, dev)
    achieved = tps * flops_per_token(cfg, cfg.block_size) / 1e9
    profile = step_profile(cfg, batch, dev) if dev.type == "cpu" else None
    compiled = None
    if torch_compile:
        compiled = compiled_training_speed(cfg, batch, dev)
        if "train_tokens_per_second" in compiled:
            compiled["speedup_over_eager"] = compiled["train_tokens_per_second"] / tps
    bf16 = None
    if use_bf16(dev, precision):  # the precision pretraining picks here (fp32: bf16 skipped)
        bf16_peak = best_matmul_peak(dev, torch.bfloat16)
        bf16_tps = training_speed(cfg, batch, dev, bf16=True)
        bf16_achieved = bf16_tps * flops_per_token(cfg, cfg.block_size) / 1e9
        sheet = datasheet_bf16_peak(dev)
        bf16 = {"matmul_peak_gflops": bf16_peak, "train_tokens_per_second": bf16_tps,
                "train_gflops": bf16_achieved, "mfu": bf16_achieved / bf16_peak,
                "speedup_over_fp32": bf16_tps / tps, "datasheet_peak_gflops": sheet,
                "mfu_vs_datasheet": bf16_achieved / sheet if sheet else None}
    gen_cfg = GPTConfig(**{**cfg.__dict__, "block_size": 8 + 128})
    gen = {}
    for b in (1, 64):
        with_cache = generation_speed(gen_cfg, b, 128, True, dev)
        without = generation_speed(gen_cfg, b, 128, False, dev)
        gen[f"batch_{b}"] = {"cache_tokens_per_second": with_cache,
                             "no_cache_tokens_per_second": without,
                             "speedup": with_cache / without}
    result = {
        "device": str(dev), "threads": threads, "size": size, "precision": precision,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "model": {"n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "n_head": cfg.n_head,
                  "vocab_size": cfg.vocab_size, "block_size": cfg.block_size,
                  "params": GPT(cfg).num_params()},
        "matmul_peak_gflops": peak,
        "train_tokens_per_second": tps,
        "train_gflops": achieved,
        "mfu": achieved / peak,
        "flops_per_token": flops_per_token(cfg, cfg.block_size),
        "step_profile": profile,  # fraction of an fp32 step's op time per kind (CPU only)
        "compiled": compiled,  # --compile: the fp32 step under torch.compile (or its error)
        "bf16": bf16,  # None where bf16 is not native (pretraining then runs in fp32)
        "native_bf16_cpu": native_bf16_cpu() if dev.type == "cpu" else None,  # "AMX", ...
        "generation_128_tokens": gen,
    }
    summary_path = Path(out_dir) / "summary.json"
    if summary_path.exists():
        summary = read_json(summary_path)
        result["stages_from"] = str(summary_path)
        result["stages"] = summary.get("stages", {})
    # where each stage's time went (utils.TimeSplit), as its metrics.json recorded it
    result["time_split"] = pipeline.time_splits(out_dir)
    write_json(result, Path(out_dir) / "bench.json")

    print(f"\nfp32 matmul peak            {peak:8.1f} GFLOP/s")
    print(f"training                    {tps:8.0f} tokens/s  {achieved:6.1f} GFLOP/s  "
          f"MFU {achieved / peak:.0%}  (batch {batch} x {cfg.block_size})")
    if profile:
        print("an fp32 training step's time, by kind of operation (profiler self time): " +
              ", ".join(f"{k} {v:.0%}" for k, v in profile.items()))
        flop_share = profile["matmul"] + profile["attention"]
        print(f"  the matmuls and attention, which do the FLOPs, take {flop_share:.0%} of it: "
              f"MFU could reach at most that even at the matmul peak")
    if compiled is not None:
        if "error" in compiled:
            print(f"training, torch.compile     failed: {compiled['error']}")
        else:
            print(f"training, torch.compile     {compiled['train_tokens_per_second']:8.0f} "
                  f"tokens/s  {compiled['speedup_over_eager']:.2f}x eager; first step (compiling) "
                  f"{compiled['first_step_seconds']:.1f} s")
    if bf16:
        print(f"bf16 matmul peak            {bf16['matmul_peak_gflops']:8.1f} GFLOP/s")
        print(f"training, bf16 autocast     {bf16['train_tokens_per_second']:8.0f} tokens/s  "
              f"{bf16['train_gflops']:6.1f} GFLOP/s  MFU {bf16['mfu']:.0%} of the bf16 peak, "
              f"{bf16['speedup_over_fp32']:.2f}x fp32 (what pretraining uses here)")
        if bf16["mfu_vs_datasheet"] is not None:
            print(f"MFU against the datasheet bf16 peak ({bf16['datasheet_peak_gflops'] / 1000:.0f} "
                  f"TFLOP/s)  {bf16['mfu_vs_datasheet']:.1%}")
    else:
        print("bf16: not native on this device; pretraining runs in fp32"
              if precision == "auto" else "bf16: skipped (--precision fp32); pretraining runs "
                                          "in fp32")
    for b, r in gen.items():
        print(f"generation, {b.replace('_', ' '):9s}     {r['cache_tokens_per_second']:8.0f} "
              f"tokens/s with KV cache, {r['no_cache_tokens_per_second']:8.0f} without: "
              f"{r['speedup']:.1f}x")
    if result.get("stages"):
        print(f"\nstages (from {summary_path}):")
        for name, s in result["stages"].items():
            print(f"  {name:10s} {s['seconds']:7.1f} s   peak memory {s['peak_memory_mb']:7.0f} MB")
    if result["time_split"]:
        from .compare import time_split_table

        print(f"\nwhere the time of the stages in {out_dir} went:")
        print("\n".join(time_split_table(result["time_split"])[2:]))
    print(f"\nwrote {Path(out_dir) / 'bench.json'}")
    return result
