"""Chapter 7's experiments: the frontier with more than one point per method, over-optimisation
and RLAIF, each extra run a stage of its own in the run folder (skipped when present).

  frontier_sweep     PPO with several fixed KL coefficients (ppo_kl{b}) and DPO with several
                     beta (dpo_beta{b}): the frontier with more than one point per method;
                     DPO scoring log-probs at temperature 1 instead of the sampling
                     temperature (dpo_logprobT{t})
  overoptimization   gold and proxy reward as optimisation pressure grows (Gao et al. 2022):
                     best-of-N up to large N scored by the reward model and by one trained on
                     less data (reward_small); PPO with a weak KL penalty; Gao et al.'s curves
                     fitted with d = sqrt(KL); the responses that fool the proxy
  rlaif              the AI judge's preference data (preferences_ai), and the reward model, DPO
                     and PPO trained on it (reward_ai, dpo_ai, ppo_ai), against the human-label
                     versions on gold, per family
  seed_noise         PPO retrained with other seeds (ppo_seed{s}): how far two runs that differ
                     only in their randomness land apart, the yardstick for every other gap;
                     DPO with the same seeds (dpo_seed{s})
  grpo_sweep         chapter 8: GRPO against Dr. GRPO and RLOO, its three loss aggregations
                     with the response length over training (Dr. GRPO's length bias), and
                     three reward sources (reward model, verifier, gold) per task family; GRPO
                     and the verifier's run over seeds

Every extra run copies the configuration of the run folder's own stage (ppo, dpo, reward,
preferences) and changes one knob, so a fast run folder gets fast variants and a default one
default variants. The knobs of the experiments are in compare.CompareConfig; the summary table
and the frontier they feed are in compare.py, the figures in plots.py.

    python -m minialign compare --sweep    (after the other stages: about 45 min on 2 cores)
"""

from __future__ import annotations

import json
import math
import statistics
import uuid
from dataclasses import asdict, fields, replace
from pathlib import Path

from .compare import CompareConfig, bon_kl, frontier_points
from .utils import (FOOLING_SEED_OFFSET, PRESSURE_SEED_OFFSET, display_path, read_json, timer,
                    write_json, write_text)


def run(out_dir, cfg: CompareConfig, device: str = "cpu", log=print) -> dict:
    """The experiments in turn. Returns what the compare stage records of them (the full
    results are in DIR/compare/overoptimization.json and rlaif.json)."""
    out_dir = Path(out_dir)
    sweep = frontier_sweep(out_dir, cfg, device, log)
    oo = overoptimization(out_dir, cfg, device, log)
    recorded = {"sweep": {k: v for k, v in sweep.items() if k != "points"},
                "overoptimization": {
                    "fits": {**{f"best_of_n/{s}": r["fit"] for s, r in oo["best_of_n"].items()},
                             **({"ppo": oo["ppo"]["fit"]} if oo["ppo"] else {})},
                    "file": "compare/overoptimization.json"}}
    if cfg.noise_seeds:
        n = seed_noise(out_dir, cfg, device, log)
        recorded["noise"] = {k: n[k] for k in ("spread", "file")}
    if cfg.rlaif:
        r = rlaif(out_dir, cfg, device, log)
        recorded["rlaif"] = {n: p["gold"] for n, p in r["policies"].items()}
    if cfg.grpo_variants:
        g = grpo_sweep(out_dir, cfg, device, log)
        recorded["grpo"] = {"runs": {s: {k: r[k] for k in ("gold", "success", "kl")}
                                     for s, r in g["runs"].items()},
                            "file": "compare/grpo.json"}
    return recorded


# ==============================================================================================
# plumbing for the extra runs: each one a stage of the run folder, trained once


def base_config(out_dir: Path, stage: str, cls, **changes):
    """The configuration `stage` of this run folder was trained with, with `changes`: an extra
    run then differs from the pipeline's own in the knobs named and nothing else."""
    path = Path(out_dir) / stage / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python -m minialign {stage}` (or "
                                f"pipeline.ensure('{stage}')) before the chapter 7 experiments")
    known = {f.name for f in fields(cls)}
    saved = {k: v for k, v in read_json(path)["config"].items() if k in known}
    return cls(**{**saved, **changes})


def ensure_stage(out_dir: Path, stage: str, train_fn, log, config=None, inputs=()) -> dict:
    """The metrics of `stage`, from its folder if it has run (pipeline.is_done) with `config`
    (the dataclass train_fn trains it with; None: any) from the current runs of `inputs` (the
    stages it reads), else trained. Once trained, DIR/STAGE/stage.json records the run ids of
    its inputs, and its own, as the pipeline's stages do."""
    from . import pipeline

    out_dir = Path(out_dir)
    changed = _config_changes(out_dir / stage / "metrics.json", config)
    done = pipeline.is_done(out_dir, stage)
    retrained = _retrained_inputs(out_dir, stage, inputs) if done else []
    if done and not changed and not retrained:
        log(f"[compare] {stage}: found in {display_path(out_dir)}")
        return read_json(out_dir / stage / "metrics.json")
    why = [f"its config changed: {', '.join(changed)}"] if changed else []
    why += [f"retrained since: {', '.join(retrained)}"] if retrained else []
    log(f"[compare] {stage}: training" + (f" ({'; '.join(why)})" if why else ""))
    (out_dir / stage / "stage.json").unlink(missing_ok=True)  # not up to date until it ends
    train_fn()
    write_json({"inputs": {dep: pipeline.stage_record(out_dir, dep).get("run_id")
                           for dep in inputs}, "run_id": uuid.uuid4().hex},
               out_dir / stage / "stage.json")
    return read_json(out_dir / stage / "metrics.json")


def _retrained_inputs(out_dir: Path, stage: str, inputs) -> list[str]:
    """The stages among `inputs` retrained since `stage` was trained from them: their run ids
    differ from those its stage.json recorded. A run trained before that record existed is
    judged by modification times instead (an input finished after the run's metrics were
    written)."""
    from . import pipeline

    recorded = pipeline.stage_record(out_dir, stage).get("inputs")
    if recorded is not None:
        return [dep for dep in inputs
                if recorded.get(dep) != pipeline.stage_record(out_dir, dep).get("run_id")]
    trained = (out_dir / stage / "metrics.json").stat().st_mtime

    def finished(dep):  # when the input last finished training (0: never)
        for name in ("stage.json", "metrics.json"):
            if (out_dir / dep / name).exists():
                return (out_dir / dep / name).stat().st_mtime
        return 0.0

    return [dep for dep in inputs if finished(dep) > trained]


def _config_changes(metrics_path: Path, config) -> list[str]:
    """The fields whose values differ between `config` and the config a finished run saved in
    its metrics (a default changed since, or the stage it varies was retrained with another):
    such a run is stale. Fields the saved config lacks (added to the code later) are left out."""
    if config is None or not Path(metrics_path).exists():
        return []
    saved = read_json(metrics_path).get("config", {})
    wanted = json.loads(json.dumps(asdict(config), default=str))  # tuples as lists, as saved
    return [k for k, v in wanted.items() if k in saved and saved[k] != v]


def ppo_variant(out_dir, kl_coef: float, cfg: CompareConfig, device="cpu",
                log=print) -> tuple[str, dict]:
    """PPO with a fixed KL coefficient (stage ppo_kl{b}); otherwise the ppo stage's config."""
    from . import ppo

    out_dir, stage = Path(out_dir), f"ppo_kl{float(kl_coef)}"
    changes = dict(kl_coef=float(kl_coef), adaptive_kl=False)
    if cfg.ppo_eval_interval:
        changes["eval_interval"] = cfg.ppo_eval_interval
    ppo_cfg = base_config(out_dir, "ppo", ppo.PPOConfig, **changes)
    return stage, ensure_stage(out_dir, stage, lambda: ppo.train(
        ppo_cfg, out_dir, device, log, stage=stage), log, ppo_cfg, ["reward"])


def ppo_seed_variant(out_dir, seed: int, device="cpu", log=print) -> tuple[str, dict]:
    """PPO with another seed (stage ppo_seed{s}); otherwise the ppo stage's config."""
    from . import ppo

    out_dir, stage = Path(out_dir), f"ppo_seed{int(seed)}"
    ppo_cfg = base_config(out_dir, "ppo", ppo.PPOConfig, seed=int(seed))
    return stage, ensure_stage(out_dir, stage, lambda: ppo.train(
        ppo_cfg, out_dir, device, log, stage=stage), log, ppo_cfg, ["reward"])


def dpo_seed_variant(out_dir, seed: int, device="cpu", log=print) -> tuple[str, dict]:
    """DPO with another seed (stage dpo_seed{s}: the order of its batches and its evaluation
    samples change); otherwise the dpo stage's config."""
    from . import dpo

    out_dir, stage = Path(out_dir), f"dpo_seed{int(seed)}"
    dpo_cfg = base_config(out_dir, "dpo", dpo.DPOConfig, seed=int(seed))
    return stage, ensure_stage(out_dir, stage, lambda: dpo.train(
        dpo_cfg, out_dir, device, log, stage=stage), log, dpo_cfg, [dpo_cfg.preferences])


def dpo_variant(out_dir, beta: float, device="cpu", log=print) -> tuple[str, dict]:
    """DPO with this beta (stage dpo_beta{b}; the dpo stage itself if it has this beta)."""
    from . import dpo

    out_dir = Path(out_dir)
    dpo_cfg = base_config(out_dir, "dpo", dpo.DPOConfig, beta=float(beta))
    if read_json(out_dir / "dpo" / "metrics.json")["config"]["beta"] == float(beta):
        return "dpo", read_json(out_dir / "dpo" / "metrics.json")
    stage = f"dpo_beta{float(beta)}"  # the name notebook 06's beta sweep uses too
    return stage, ensure_stage(out_dir, stage, lambda: dpo.train(
        dpo_cfg, out_dir, device, log, stage=stage), log, dpo_cfg, [dpo_cfg.preferences])


def dpo_temperature_variant(out_dir, temperature: float, device="cpu",
                            log=print) -> tuple[str, dict]:
    """DPO scoring log-probs at `temperature` (stage dpo_logprobT{t}); otherwise the dpo
    stage's config (which scores them at the sampling temperature)."""
    from . import dpo

    out_dir, stage = Path(out_dir), f"dpo_logprobT{float(temperature)}"
    dpo_cfg = base_config(out_dir, "dpo", dpo.DPOConfig,
                          logprob_temperature=float(temperature))
    return stage, ensure_stage(out_dir, stage, lambda: dpo.train(
        dpo_cfg, out_dir, device, log, stage=stage), log, dpo_cfg, [dpo_cfg.preferences])


def preferences_variant(out_dir, stage: str, device="cpu", log=print, **changes) -> dict:
    """Preference data like the preferences stage's, with `changes` (labeler="ai")."""
    from . import preferences

    out_dir = Path(out_dir)
    cfg = base_config(out_dir, "preferences", preferences.PreferencesConfig, **changes)
    return ensure_stage(out_dir, stage, lambda: preferences.train(cfg, out_dir, device, log,
                                                                  stage=stage), log, cfg, ["sft"])


def reward_variant(out_dir, stage: str, device="cpu", log=print, **changes) -> dict:
    """A reward model like the reward stage's, with `changes` (preferences="preferences_ai",
    max_prompts=...)."""
    from . import reward

    out_dir = Path(out_dir)
    rm_cfg = base_config(out_dir, "reward", reward.RewardConfig, **changes)
    return ensure_stage(out_dir, stage, lambda: reward.train(rm_cfg, out_dir, device, log,
                                                             stage=stage), log, rm_cfg,
                        [rm_cfg.preferences])


# ==============================================================================================
# 1. the frontier with several KL coefficients and several beta


def frontier_sweep(out_dir, cfg: CompareConfig, device: str = "cpu", log=print) -> dict:
    """Train the PPO (fixed KL coefficients) and DPO (several beta) runs that are missing, then
    draw DIR/compare/frontier.png. Returns {"points": frontier_points, "ppo": {stage: row},
    "dpo": {stage: row}}, a row being gold, proxy (PPO), KL and the coefficient."""
    from . import plots

    out_dir = Path(out_dir)
    runs = {"ppo": {}, "dpo": {}}
    for b in cfg.ppo_kl_coefs:
        stage, m = ppo_variant(out_dir, b, cfg, device, log)
        runs["ppo"][stage] = {"kl_coef": b, "gold": m["gold_reward_mean"],
                              "proxy": m["proxy_reward_mean"], "kl": m["kl_to_ref"],
                              "seconds": m["seconds"]}
    for b in cfg.dpo_betas:
        stage, m = dpo_variant(out_dir, b, device, log)
        runs["dpo"][stage] = {"beta": b, "gold": m["gold_reward_mean"], "kl": m["kl_to_ref"],
                              "seconds": m["seconds"]}
    for t in cfg.dpo_logprob_temperatures:
        stage, m = dpo_temperature_variant(out_dir, t, device, log)
        runs["dpo"][stage] = {"logprob_temperature": t, "gold": m["gold_reward_mean"],
                              "kl": m["kl_to_ref"], "win_rate": m["win_rate_vs_sft"],
                              "seconds": m["seconds"]}
    points = frontier_points(out_dir)
    plots.reward_kl_frontier(points, out_dir / "compare" / "frontier.png")
    return {"points": points, **runs}


# ==============================================================================================
# 1b. noise: the same PPO run with other seeds

NOISE_KEYS = {"gold": "gold_reward_mean", "win_rate": "win_rate_vs_sft",
              "success": "task_success_rate", "kl": "kl_to_ref"}


def noise_rows(runs: dict) -> dict:
    """{stage: metrics} of runs that differ only in their seed -> {stage: {seed, gold, win_rate,
    success, kl}}, the rows seed_spread reads."""
    return {stage: {"seed": m["config"]["seed"],
                    **{k: m[metric] for k, metric in NOISE_KEYS.items()}}
            for stage, m in runs.items()}


def seed_spread(rows: dict) -> dict:
    """rows: {stage: {key: value}} for runs that differ only in their seed -> per key the mean,
    the standard deviation across runs (Bessel-corrected), the range, and twice the standard
    deviation of a difference between two such runs (sqrt(2) x std x 2): a gap between two runs
    smaller than that is within the noise."""
    spread = {}
    for key in NOISE_KEYS:
        xs = [r[key] for r in rows.values()]
        std = statistics.stdev(xs) if len(xs) > 1 else 0.0  # (n - 1) in the denominator
        spread[key] = {"mean": statistics.fmean(xs), "std": std, "min": min(xs), "max": max(xs),
                       "gap_2sd": 2 * math.sqrt(2) * std}
    return spread


def gap_verdict(a: float, b: float, gap_2sd: float) -> str:
    """Where `a` lies against `b` by the seed noise (seed_spread's gap_2sd): "above" or "below"
    when the gap exceeds it, "within the noise" when it does not."""
    return "above" if a - b > gap_2sd else "below" if b - a > gap_2sd else "within the noise"


def gap_verdicts(values: dict, duos, gap_2sd: float) -> list[dict]:
    """Each comparison a notebook makes, judged against the seed noise. values: {name: number}
    (a gold reward, say); duos: (a, b) name pairs, those with a name missing from `values`
    left out; gap_2sd: seed_spread's yardstick for that number. Returns one row per duo:
    a, b, gap (values[a] - values[b]) and verdict: "a above b" or "b above a" when the gap
    exceeds gap_2sd, "within the noise" when it does not."""
    rows = []
    for a, b in duos:
        if a not in values or b not in values:
            continue
        where = gap_verdict(values[a], values[b], gap_2sd)
        verdict = {"above": f"{a} above {b}", "below": f"{b} above {a}"}.get(where, where)
        rows.append({"a": a, "b": b, "gap": values[a] - values[b], "verdict": verdict})
    return rows


def seed_noise(out_dir, cfg: CompareConfig, device: str = "cpu", log=print) -> dict:
    """Train PPO with each of cfg.noise_seeds (the ppo stage is seed 0's run) and measure how
    far runs that differ only in their randomness land apart: training rollouts and evaluation
    samples both change with the seed. DPO too, with the same seeds (dpo_seed{s}; the dpo stage
    is seed 0's): the order of its batches and its evaluation samples change. Writes
    DIR/compare/noise.{json,png} (the figure: PPO's). Returns {"runs": {stage: {seed, gold,
    win_rate, success, kl}}, "spread": seed_spread(runs), "dpo": {"runs", "spread"} alike,
    "file"}."""
    from . import plots

    out_dir = Path(out_dir)
    runs = {"ppo": read_json(out_dir / "ppo" / "metrics.json")}
    dpo_runs = {"dpo": read_json(out_dir / "dpo" / "metrics.json")}
    for s in cfg.noise_seeds:
        stage, m = ppo_seed_variant(out_dir, s, device, log)
        runs[stage] = m
        stage, m = dpo_seed_variant(out_dir, s, device, log)
        dpo_runs[stage] = m
    rows, dpo_rows = noise_rows(runs), noise_rows(dpo_runs)
    result = {"runs": rows, "spread": seed_spread(rows),
              "dpo": {"runs": dpo_rows, "spread": seed_spread(dpo_rows)},
              "file": "compare/noise.json"}
    write_json(result, out_dir / "compare" / "noise.json")
    plots.seed_noise(rows, out_dir / "compare" / "noise.png")
    g = result["spread"]["gold"]
    log(f"[compare] noise over {len(rows)} PPO seeds: gold {g['mean']:.3f} ± {g['std']:.3f} "
        f"(std); a gap between two runs under {g['gap_2sd']:.3f} is within the noise")
    w = result["dpo"]["spread"]["win_rate"]
    log(f"[compare] DPO over {len(dpo_rows)} seeds: win rate against SFT {w['min']:.1%} to "
        f"{w['max']:.1%} (mean {w['mean']:.1%})")
    return result


# ==============================================================================================
# 2. over-optimisation (Gao et al. 2022): the fits, then the experiment


def fit_gao(kl, gold, form: str) -> dict | None:
    """Least squares fit of Gao et al.'s functional forms, with d = sqrt(KL):

        best-of-N  ("bon"):  gold(d) - gold(0) = d (alpha - beta d)
        RL         ("rl"):   gold(d) - gold(0) = d (alpha - beta log d)

    kl, gold: lists, the first point the starting policy (KL 0; a slightly negative KL from
    sampling noise counts as 0). Both forms are linear in (alpha, beta), so one lstsq solves
    them. Returns alpha, beta, gold0, the KL where the fitted gold peaks (None if it never
    turns down), the fitted gain there, and R^2; None with fewer than 3 points.
    """
    import numpy as np

    if form not in ("bon", "rl"):
        raise ValueError("form must be 'bon' or 'rl'")
    if len(kl) != len(gold):
        raise ValueError(f"{len(kl)} KLs but {len(gold)} gold rewards")
    if len(kl) < 3:
        return None
    d = np.sqrt(np.clip(np.asarray(kl, dtype=float), 0.0, None))  # (P,)
    y = np.asarray(gold, dtype=float) - gold[0]  # (P,) gold gained since KL 0
    d_log_d = np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)  # d log d -> 0 at 0
    X = np.stack([d, -d ** 2 if form == "bon" else -d_log_d], axis=1)  # (P, 2)
    (alpha, beta), *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ np.array([alpha, beta])
    total = ((y - y.mean()) ** 2).sum()
    r2 = float(1.0 - (resid ** 2).sum() / total) if total > 0 else None
    if beta <= 0:  # the fitted curve never turns down
        d_peak = math.inf
    else:  # d/dd [d(alpha - beta d)] = 0, or d/dd [d(alpha - beta log d)] = 0
        d_peak = alpha / (2 * beta) if form == "bon" else math.exp(min(alpha / beta - 1, 50.0))
        d_peak = max(d_peak, 0.0)  # falling from the start: the peak is the starting policy
    peak_gain = gao_curve(d_peak, alpha, beta, form) if math.isfinite(d_peak) else None
    return {"form": form, "alpha": float(alpha), "beta": float(beta), "gold0": float(gold[0]),
            "peak_kl": d_peak ** 2 if math.isfinite(d_peak) else None,
            "peak_gain": peak_gain, "r2": r2}


def peak_inside(fit: dict | None, kl) -> bool:
    """Whether a `fit_gao` fit peaks strictly inside the KLs it was fitted on (kl: a list):
    only then do the data themselves show the gold reward rising and turning down. A peak
    beyond the last point is an extrapolation; one at the first point, no rise at all."""
    return bool(fit and fit["peak_kl"] is not None and min(kl) < fit["peak_kl"] < max(kl))


def gao_curve(d, alpha: float, beta: float, form: str):
    """The fitted gain d (alpha - beta d) or d (alpha - beta log d); d a float or an array."""
    import numpy as np

    d = np.asarray(d, dtype=float)
    if form == "bon":
        out = d * (alpha - beta * d)
    else:
        out = np.where(d > 0, d * (alpha - beta * np.log(np.where(d > 0, d, 1.0))), 0.0)
    return float(out) if out.ndim == 0 else out


def fooling_responses(rows: list[dict], sft_gold: float, n: int) -> list[dict]:
    """The responses that fool the proxy: the reward model scores them above the average SFT
    answer (proxy > 0: scores are normalised on SFT samples) while their gold reward is below
    SFT's mean, ordered by how much more the proxy likes them than the gold reward does
    (standardised over `rows`), at most n // 2 from one source, each (prompt, response) once."""

    if not rows:
        return []

    def z(key):
        xs = [r[key] for r in rows]
        mean, sd = statistics.fmean(xs), (statistics.pstdev(xs) or 1.0)
        return [(x - mean) / sd for x in xs]

    gap = [p - g for p, g in zip(z("proxy"), z("gold"))]
    order = sorted(range(len(rows)), key=lambda i: -gap[i])
    picked, seen, per_source = [], set(), {}
    for i in order:
        r = rows[i]
        key = (r["prompt"], r["response"])
        if r["proxy"] <= 0 or r["gold"] >= sft_gold or key in seen:
            continue
        if per_source.get(r["source"], 0) >= max(1, n // 2):
            continue
        seen.add(key)
        per_source[r["source"]] = per_source.get(r["source"], 0) + 1
        picked.append({**r, "proxy_minus_gold_z": gap[i]})
        if len(picked) == n:
            break
    return picked


def overoptimization(out_dir, cfg: CompareConfig, device: str = "cpu", log=print) -> dict:
    """Gold and proxy reward as optimisation pressure grows. Writes DIR/compare/
    overoptimization.json and overoptimization.png and returns the same dict:

      best_of_n   {reward stage: per N (cfg.bon_ns): kl_bound, kl_estimate(_freq), gold and
                  proxy (expected under best-of-N, and one draw), plus the Gao fit}, for the
                  reward model (reward) and one trained on cfg.small_rm_prompts prompts
                  (reward_small), on the same cfg.bon_prompts held-out prompts and samples
      ppo         the run with the smallest fixed KL coefficient: gold, proxy and KL at each
                  evaluation (its `curve`), and the Gao fit
      fooling     the responses that fool the proxy (best-of-N at the largest N, and the final
                  weak-KL PPO policy): prompt, response, proxy, gold
      reward_models  accuracy and agreement with gold of the two reward models

    A result already in the run folder for the same configuration, newer than the stages it
    read, is returned as it is (the sampling of best-of-N is the slow part).
    """
    from . import plots

    out_dir = Path(out_dir)
    path = out_dir / "compare" / "overoptimization.json"
    if _overoptimization_up_to_date(path, out_dir, cfg):
        result = read_json(path)
        plots.overoptimization(overoptimization_panels(result),
                               out_dir / "compare" / "overoptimization.png")
        return result
    with timer() as elapsed:
        rms = {"reward": read_json(out_dir / "reward" / "metrics.json"),
               "reward_small": reward_variant(out_dir, "reward_small", device, log,
                                              max_prompts=cfg.small_rm_prompts)}
        best_of_n, fool_pool, tok, n_prompts = _best_of_n_pressure(out_dir, cfg, list(rms),
                                                                   device, log)
        # PPO with a weak KL penalty, from its evaluations during training
        ppo_result = None
        if cfg.ppo_kl_coefs:
            b = min(cfg.ppo_kl_coefs)
            stage, m = ppo_variant(out_dir, b, cfg, device, log)
            c = m["curve"]
            ppo_result = {"stage": stage, "kl_coef": b, "iteration": c["iteration"],
                          "kl": [max(0.0, k) for k in c["kl"]], "gold": c["gold"],
                          "proxy": c["proxy"], "fit": fit_gao(c["kl"], c["gold"], "rl")}
            fool_pool += _policy_responses(out_dir, stage, f"PPO β={b:g} (final)", device, m, tok)
        sft_gold = read_json(out_dir / "sft" / "metrics.json")["gold_reward_mean"]
        result = {
            "best_of_n": best_of_n, "ppo": ppo_result,
            "fooling": fooling_responses(fool_pool, sft_gold, cfg.n_fooling),
            "sft_gold_reward_mean": sft_gold,
            "reward_models": {s: {k: m.get(k) for k in ("n_train_prompts", "n_train_pairs",
                                                         "val_accuracy", "bayes_accuracy",
                                                         "gold_pair_accuracy", "gold_correlation",
                                                         "length_correlation")}
                              for s, m in rms.items()},
            "n_prompts": n_prompts, "samples_per_prompt": max(cfg.bon_ns),
        }
    result["seconds"] = elapsed()
    result["config"] = _jsonable(asdict(cfg))
    write_json(result, path)
    plots.overoptimization(overoptimization_panels(result),
                           out_dir / "compare" / "overoptimization.png")
    return result


OVEROPTIMIZATION_KNOBS = ("ppo_kl_coefs", "ppo_eval_interval", "bon_ns", "bon_prompts",
                          "small_rm_prompts", "n_fooling", "seed")


def _overoptimization_up_to_date(path: Path, out_dir: Path, cfg: CompareConfig) -> bool:
    """Whether `path` holds a result for this configuration, newer than the stages it read."""
    inputs = [out_dir / s / "metrics.json" for s in
              ("sft", "reward", "reward_small",
               *([f"ppo_kl{min(cfg.ppo_kl_coefs)}"] if cfg.ppo_kl_coefs else []))]
    def knobs(config: dict) -> dict:  # the fields of CompareConfig that this result reads
        return {k: config.get(k) for k in OVEROPTIMIZATION_KNOBS}

    return (path.exists() and knobs(read_json(path).get("config") or {})
            == knobs(_jsonable(asdict(cfg)))
            and all(f.exists() and f.stat().st_mtime <= path.stat().st_mtime for f in inputs))


def _best_of_n_pressure(out_dir: Path, cfg: CompareConfig, rm_stages: list[str], device, log):
    """Best-of-N under growing N: one set of SFT samples (max N per held-out prompt), scored by
    each reward model in rm_stages. Returns ({stage: curve and Gao fit}, the responses each
    reward model picks at the largest N, the tokenizer, the number of prompts)."""
    from . import bon
    from .reward import load_reward_model
    from .sft import load_model as load_sft

    bon_cfg = base_config(out_dir, "bon", bon.BoNConfig)
    policy, tok = load_sft(out_dir, device)
    policy.eval()
    tasks = bon.held_out_tasks(cfg.bon_prompts)
    log(f"[compare] best-of-N: {max(cfg.bon_ns)} samples for each of {len(tasks)} prompts")
    cands = bon.sample_candidates(policy, tok, tasks, max(cfg.bon_ns), bon_cfg.max_new_tokens,
                                  bon_cfg.temperature, cfg.seed + PRESSURE_SEED_OFFSET)
    del policy
    prompts = [t.prompt for t in cands["tasks"]]
    texts = [s["text"] for s in cands["samples"]]
    ended = [s["ended"] for s in cands["samples"]]
    gold = [g["total"] for g in cands["gold"]]
    best_of_n, fool_pool = {}, []
    for stage in rm_stages:
        rm = load_reward_model(out_dir, device, stage)
        proxy = rm.score_texts(tok, prompts, texts, ended)
        del rm
        curve = bon.best_of_n_curve(cands["samples"], cands["logps"], proxy, gold, len(tasks),
                                    cfg.bon_ns)
        rows = {k: [curve[n][k] for n in cfg.bon_ns] for k in
                ("kl_bound", "kl_estimate", "kl_estimate_freq", "gold_expected",
                 "proxy_expected", "proxy_reward_mean")}
        rows["gold_draw"] = [sum(curve[n]["gold"]) / len(tasks) for n in cfg.bon_ns]
        kl = [bon_kl(curve[n])[0] for n in cfg.bon_ns]
        best_of_n[stage] = {"ns": list(cfg.bon_ns), "kl": kl,
                            "kl_kind": bon_kl(curve[cfg.bon_ns[-1]])[1],
                            "gold": rows.pop("gold_expected"),
                            "proxy": rows.pop("proxy_expected"), **rows,
                            "support_mass": curve[1]["support_mass"],
                            "distinct_per_prompt": curve[1]["distinct_per_prompt"],
                            "fit": fit_gao(kl, [curve[n]["gold_expected"] for n in cfg.bon_ns],
                                           "bon")}
        fool_pool += [{"source": f"best-of-{cfg.bon_ns[-1]} ({stage})", "prompt": prompts[j],
                       "family": cands["tasks"][j].family,
                       "response": texts[j] + ("" if ended[j] else " …[no end]"),
                       "proxy": proxy[j], "gold": gold[j]}
                      for j in curve[cfg.bon_ns[-1]]["chosen"]]
    return best_of_n, fool_pool, tok, len(tasks)


def _policy_responses(out_dir: Path, stage: str, source: str, device, metrics, tok) -> list[dict]:
    """One response per held-out prompt from a trained policy, scored by proxy and gold."""
    from . import evaluate, ppo
    from .reward import load_reward_model

    c = metrics["config"]
    policy = ppo.load_policy(out_dir, device, stage).eval()
    ev = evaluate.evaluate_policy(policy, tok, evaluate.eval_tasks(c.get("eval_prompts", 0)), 1,
                                  c["max_new_tokens"], seed=c["seed"] + FOOLING_SEED_OFFSET,
                                  temperature=c["temperature"])
    rm = load_reward_model(out_dir, device, "reward")
    texts = [r["text"] for r in ev["responses"]]
    proxy = rm.score_texts(tok, [t.prompt for t in ev["tasks"]], texts,
                           [r["ended"] for r in ev["responses"]])
    return [{"source": source, "prompt": t.prompt, "family": t.family,
             "response": x + ("" if r["ended"] else " …[no end]"), "proxy": p, "gold": g}
            for t, r, x, p, g in zip(ev["tasks"], ev["responses"], texts, proxy, ev["gold"])]


def overoptimization_panels(result: dict) -> dict:
    """The panels of plots.overoptimization from an `overoptimization` result, each with its
    fitted Gao curve drawn over the range of its points."""
    import numpy as np

    def fitted(fit, kl):
        if not fit:
            return None
        d = np.linspace(0.0, math.sqrt(max(max(kl), 1e-6)) * 1.05, 100)
        form = "d(α - βd)" if fit["form"] == "bon" else "d(α - β log d)"
        return {"d": d.tolist(),
                "gold": (fit["gold0"]
                         + gao_curve(d, fit["alpha"], fit["beta"], fit["form"])).tolist(),
                "label": f"fit {form}: α={fit['alpha']:.2f}, β={fit['beta']:.2f}"}

    panels = {}
    for stage, r in result["best_of_n"].items():
        name = "reward model" if stage == "reward" else "reward model, less data"
        n_train = result["reward_models"][stage]["n_train_prompts"]
        panels[f"best-of-N, {name} ({n_train} prompts)"] = {
            "kl": r["kl"], "gold": r["gold"], "proxy": r["proxy"], "fit": fitted(r["fit"], r["kl"]),
            "labels": [f"N={n}" for n in r["ns"]], "kl_kind": r["kl_kind"]}
    if result.get("ppo"):
        p = result["ppo"]
        panels[f"PPO, fixed KL coef. β={p['kl_coef']:g}"] = {
            "kl": p["kl"], "gold": p["gold"], "proxy": p["proxy"], "fit": fitted(p["fit"], p["kl"]),
            "labels": [f"it {i}" for i in p["iteration"]], "kl_kind": "from samples"}
    return panels


def _jsonable(x):
    """asdict(cfg) as it reads back from JSON (tuples become lists)."""
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


# ==============================================================================================
# 3. RLAIF: the same pipeline on the AI judge's labels


def label_agreement(out_dir, stage: str) -> dict:
    """How often a preferences stage's labels agree with the gold reward, per family, on its
    training pairs whose two responses differ in gold: `labels` (the sampled labels the reward
    model learns from: noise and bias) and `labeler` (the labeler's own preference,
    P(chosen > rejected) > 1/2: its bias alone, what infinitely many labels would say)."""
    from . import preferences, world

    w = world.default_world()
    pairs = preferences.pairs_of(preferences.load_rankings(out_dir, stage, "train"))
    counts = {}
    for p in pairs:
        gc = w.gold_reward(p.prompt, p.chosen, p.chosen_ended)
        gr = w.gold_reward(p.prompt, p.rejected, p.rejected_ended)
        if gc == gr:
            continue
        fam = w.task(p.prompt).family
        c = counts.setdefault(fam, [0, 0.0, 0.0])
        c[0] += 1
        c[1] += float(gc > gr)
        c[2] += float((p.p_chosen > 0.5) == (gc > gr)) if p.p_chosen != 0.5 else 0.5
    fams = [f for f in world.FAMILIES if f in counts]
    out = {"labels": {f: counts[f][1] / counts[f][0] for f in fams},
           "labeler": {f: counts[f][2] / counts[f][0] for f in fams},
           "pairs": {f: counts[f][0] for f in fams}}
    n = sum(out["pairs"].values()) or 1
    out["labels_overall"] = sum(c[1] for c in counts.values()) / n
    out["labeler_overall"] = sum(c[2] for c in counts.values()) / n
    return out


def rlaif(out_dir, cfg: CompareConfig, device: str = "cpu", log=print) -> dict:
    """RLAIF: the AI judge's preference data (preferences_ai: the preferences stage's config with
    labeler="ai"), a reward model on it (reward_ai), DPO on it (dpo_ai) and PPO against that
    reward model (ppo_ai), each with its human-label stage's config. Compared with reward, dpo
    and ppo on the gold reward, overall and per family, and on where each labeler disagrees
    with gold. Writes
    DIR/compare/rlaif.json, rlaif.png (gold per family) and labelers.png; returns the dict."""
    from . import dpo, plots, ppo

    out_dir = Path(out_dir)
    with timer() as elapsed:
        preferences_variant(out_dir, "preferences_ai", device, log, labeler="ai")
        rm_ai = reward_variant(out_dir, "reward_ai", device, log, preferences="preferences_ai")
        dpo_cfg = base_config(out_dir, "dpo", dpo.DPOConfig, preferences="preferences_ai")
        ppo_cfg = base_config(out_dir, "ppo", ppo.PPOConfig)
        dpo_ai = ensure_stage(out_dir, "dpo_ai", lambda: dpo.train(
            dpo_cfg, out_dir, device, log, stage="dpo_ai"), log, dpo_cfg, ["preferences_ai"])
        ppo_ai = ensure_stage(out_dir, "ppo_ai", lambda: ppo.train(
            ppo_cfg, out_dir, device, log, stage="ppo_ai", reward_stage="reward_ai"), log,
            ppo_cfg, ["reward_ai"])
        sft = read_json(out_dir / "sft" / "metrics.json")
        human = {s: read_json(out_dir / s / "metrics.json") for s in ("reward", "dpo", "ppo")}
        labelers = {}
        for name, data, stage, m in (("human", "preferences", "reward", human["reward"]),
                                     ("AI judge", "preferences_ai", "reward_ai", rm_ai)):
            labelers[name] = {"stage": stage, **label_agreement(out_dir, data),
                              **{k: m[k] for k in ("val_accuracy", "gold_pair_accuracy",
                                                   "gold_correlation", "n_train_pairs")},
                              "rm_gold_correlation": {f: v["gold_correlation"]
                                                      for f, v in m["per_family"].items()}}
        policies = {}
        for name, m in (("SFT", sft), ("PPO, human labels", human["ppo"]),
                        ("PPO, AI labels", ppo_ai), ("DPO, human labels", human["dpo"]),
                        ("DPO, AI labels", dpo_ai)):
            policies[name] = {"gold": m["gold_reward_mean"], "success": m["task_success_rate"],
                              "kl": m.get("kl_to_ref", 0.0),
                              "win_rate_vs_sft": m.get("win_rate_vs_sft", 0.5),
                              "per_family": {f: v["gold"] for f, v in m["per_family"].items()}}
    result = {"labelers": labelers, "policies": policies, "seconds": elapsed()}
    write_json(result, out_dir / "compare" / "rlaif.json")
    plots.family_bars({n: {f: {"gold": g} for f, g in p["per_family"].items()}
                       for n, p in policies.items()}, "gold", out_dir / "compare" / "rlaif.png",
                      title="gold reward per family: human vs AI feedback")
    plots.labeler_agreement(result["labelers"], out_dir / "compare" / "labelers.png")
    return result


# ==============================================================================================
# 4. GRPO (chapter 8): three advantages, three loss aggregations, three reward sources

# stage -> what it changes in the grpo stage's config (the grpo stage itself: GRPO's std-scaled
# advantage, each response averaged over its own tokens, the KL in the loss, the reward model)
GRPO_VARIANTS = {
    # Dr. GRPO (Liu et al. 2025): both of its fixes, no std scaling and one constant divisor
    "grpo_drgrpo": dict(advantage="dr_grpo", loss_aggregation="seq-mean-token-sum-norm"),
    # RLOO (Ahmadian et al. 2024): the leave-one-out baseline, the KL folded into the reward
    "grpo_rloo": dict(advantage="rloo", kl_in="reward"),
    # the aggregation alone (GRPO's advantage): DAPO's and Dr. GRPO's
    "grpo_agg_token-mean": dict(loss_aggregation="token-mean"),
    "grpo_agg_seq-mean-token-sum-norm": dict(loss_aggregation="seq-mean-token-sum-norm"),
    # the reward source alone: the rule-based verifier (VERIFIER_ITERATIONS), and the oracle
    "grpo_verifier": dict(reward_source="verifier"),
    "grpo_gold": dict(reward_source="gold"),
}
# The verifier's runs train for this many times the grpo stage's iterations. Its rewards are 0
# or 1, so dynamic sampling drops the groups whose answers are all right or all wrong, about two
# thirds of them, and in as many iterations it learns from about a third as many groups as the
# reward model's run. What stops that run at 16 iterations, a proxy that starts being hacked,
# does not apply to the outcomes a verifier checks; what it cannot check (style, jokes) it leaves
# unguarded, and chapter 8 shows what that costs. Over PPO's five seeds, with the earlier
# 4-layer model, its task success on the verifiable families was level with PPO's at 16
# iterations (86.3% against 85.0%, +1.3 ± 1.3 points) and ahead at 32 (88.6%, +3.6 ± 1.1); with
# the 3-layer model, at 32, 86.4% against 81.9% (+4.6 ± 0.7).
VERIFIER_ITERATIONS = 2
# the policies of the reward-source comparison: name -> stage
REWARD_SOURCE_POLICIES = {"SFT": "sft", "PPO (reward model)": "ppo",
                          "GRPO, reward model": "grpo", "GRPO, verifier": "grpo_verifier",
                          "GRPO, gold": "grpo_gold"}
STYLE_COMPONENTS = ("concise", "polite", "ending", "honest", "harmless")
# what reward_sources averages per policy and family: the outcome, the gold reward and its
# components (helpful: 1 for a right answer, or for a known joke; 0.5 for an on-topic ramble)
ROW_KEYS = ("success", "gold", "proxy", "helpful", *STYLE_COMPONENTS)


def grpo_variant(out_dir, stage: str, cfg: CompareConfig, device="cpu", log=print,
                 changes: dict | None = None) -> dict:
    """The GRPO run `stage`: the grpo stage's config with `changes` (default: those
    GRPO_VARIANTS names for it), trained if missing; a verifier's run for VERIFIER_ITERATIONS
    times the iterations unless `changes` sets them. Returns its metrics."""
    from . import grpo

    out_dir = Path(out_dir)
    changes = dict(GRPO_VARIANTS[stage] if changes is None else changes)
    if cfg.grpo_eval_interval:
        changes["eval_interval"] = cfg.grpo_eval_interval
    grpo_cfg = base_config(out_dir, "grpo", grpo.GRPOConfig, **changes)
    if grpo_cfg.reward_source == "verifier" and "iterations" not in changes:
        grpo_cfg = replace(grpo_cfg, iterations=grpo_cfg.iterations * VERIFIER_ITERATIONS)
    return ensure_stage(out_dir, stage, lambda: grpo.train(grpo_cfg, out_dir, device, log,
                                                           stage=stage), log, grpo_cfg, ["reward"])


def _mean_of(rows: list[dict], key: str):
    values = [r[key] for r in rows if key in r]
    return sum(values) / len(values) if values else None


def grpo_row(m: dict) -> dict:
    """One GRPO run in a line: its knobs, the keys every policy reports, and its response
    lengths (tokens): in the rollouts of the first and the last quarter of training (the same
    prompts for every run of one seed), of the answers it trained with a negative advantage
    there, and on the held-out prompts at each evaluation."""
    c, h = m["config"], m["history"]
    q = max(1, len(h) // 4)
    return {"advantage": c["advantage"], "aggregation": c["loss_aggregation"],
            "kl_in": c["kl_in"], "reward_source": c["reward_source"],
            "gold": m["gold_reward_mean"], "gold_se": m["gold_reward_mean_se"],
            "success": m["task_success_rate"], "success_se": m["task_success_rate_se"],
            "win_rate_vs_sft": m["win_rate_vs_sft"], "win_rate_vs_sft_se": m["win_rate_vs_sft_se"],
            "kl": m["kl_to_ref"], "proxy": m["proxy_reward_mean"], "seconds": m["seconds"],
            "length_first": _mean_of(h[:q], "response_length"),
            "length_last": _mean_of(h[-q:], "response_length"),
            "length_neg_first": _mean_of(h[:q], "response_length/adv_neg"),
            "length_neg_last": _mean_of(h[-q:], "response_length/adv_neg"),
            "eval_iteration": m["curve"]["iteration"], "eval_length": m["curve"].get("length")}


def grpo_sweep(out_dir, cfg: CompareConfig, device: str = "cpu", log=print) -> dict:
    """Train the GRPO variants that are missing (cfg.grpo_variants), then compare them with the
    grpo stage. With cfg.noise_seeds, also the grpo stage and the verifier's run with those
    seeds (grpo_seed{s}, grpo_verifier_seed{s}): GRPO's own spread, and the verifier's task
    success on the verifiable families against PPO's seeds (seed_noise's ppo_seed{s}).
    Writes DIR/compare/grpo.json ({"runs": {stage: grpo_row}, "seeds", "verifier_seeds" (see
    verifiable_over_seeds), "reward_sources": see reward_sources}), grpo.md (the tables),
    grpo_length.png (response length over training, reward-model runs) and, when a verifier or
    gold run is among them, reward_sources.png (task success per family) and
    reward_sources_training.png (proxy and gold over training).
    Returns the dict."""
    from . import plots

    out_dir = Path(out_dir)
    runs = {"grpo": read_json(out_dir / "grpo" / "metrics.json")}
    for stage in cfg.grpo_variants:
        runs[stage] = grpo_variant(out_dir, stage, cfg, device, log)
    result = {"runs": {stage: grpo_row(m) for stage, m in runs.items()}}
    if cfg.noise_seeds:  # the default GRPO again with PPO's noise seeds: its own spread
        seeds = {"grpo": runs["grpo"]}
        seeds.update({f"grpo_seed{int(s)}": grpo_variant(out_dir, f"grpo_seed{int(s)}", cfg,
                                                         device, log, {"seed": int(s)})
                      for s in cfg.noise_seeds})
        rows = noise_rows(seeds)
        result["seeds"] = {"runs": rows, "spread": seed_spread(rows)}
        if "grpo_verifier" in runs:  # the verifier with the same seeds, against PPO's seeds
            verifier = {"grpo_verifier": runs["grpo_verifier"]}
            verifier.update({f"grpo_verifier_seed{int(s)}": grpo_variant(
                out_dir, f"grpo_verifier_seed{int(s)}", cfg, device, log,
                {**GRPO_VARIANTS["grpo_verifier"], "seed": int(s)}) for s in cfg.noise_seeds})
            ppo_runs = {s: read_json(out_dir / s / "metrics.json") for s in
                        ["ppo", *(f"ppo_seed{int(s)}" for s in cfg.noise_seeds)]
                        if (out_dir / s / "metrics.json").exists()}
            if len(ppo_runs) > 1:
                result["verifier_seeds"] = verifiable_over_seeds(verifier, ppo_runs)
    by_rm = {s: m for s, m in runs.items() if m["reward_source"] == "reward_model"}
    plots.grpo_response_length({s: {"history": m["history"], "curve": m["curve"]}
                                for s, m in by_rm.items()},
                               out_dir / "compare" / "grpo_length.png")
    if {"grpo_verifier", "grpo_gold"} & set(runs):
        result["reward_sources"] = _reward_sources_cached(out_dir, device, log)
        plots.family_bars(result["reward_sources"]["per_family"], "success",
                          out_dir / "compare" / "reward_sources.png",
                          title="task success per family: one algorithm, three reward sources")
        plots.grpo_reward_sources({runs[s]["reward_source"]: runs[s]["curve"] for s in
                                   ("grpo", "grpo_verifier", "grpo_gold") if s in runs},
                                  out_dir / "compare" / "reward_sources_training.png")
    write_json(result, out_dir / "compare" / "grpo.json")
    write_text(grpo_markdown(result), out_dir / "compare" / "grpo.md")
    return result


def reward_sources(out_dir, device: str = "cpu", log=print) -> dict:
    """SFT, PPO and GRPO with each reward source found in the run folder, evaluated alike (the
    grpo stage's held-out evaluation: same prompts, samples and seed, so GRPO's own numbers are
    its final evaluation's). Per policy and family (and pooled over world.VERIFIABLE): task
    success, gold, the reward model's score (proxy) and the mean of each gold component
    (ROW_KEYS: helpfulness, and what the verifier cannot see, STYLE_COMPONENTS); and on the
    verifiable families, each policy's difference from PPO's task success and gold, paired by
    prompt, with its standard error.
    Returns {"overall": {name: row}, "per_family": {name: {family: row}}, "verifiable": {name:
    row}, "verifiable_vs_ppo": {name: differences}, "stages": {name: stage}}."""
    from . import evaluate, world
    from .reward import load_reward_model
    from .sft import load_model as load_sft
    from .utils import EVAL_SEED_OFFSET, load_stage_model

    out_dir = Path(out_dir)
    c = read_json(out_dir / "grpo" / "metrics.json")["config"]
    _, tok = load_sft(out_dir, device)
    rm = load_reward_model(out_dir, device, "reward")
    tasks = evaluate.eval_tasks(c.get("eval_prompts", 0))  # those the grpo stages evaluated on
    result = {"overall": {}, "per_family": {}, "verifiable": {}, "stages": {}}
    by_prompt = {}  # name -> {verifiable prompt: (success, gold) of its answers}
    for name, stage in REWARD_SOURCE_POLICIES.items():
        if not (out_dir / stage / "model.pt").exists():
            continue
        policy = load_stage_model(out_dir, stage, device).eval()
        ev = evaluate.evaluate_policy(policy, tok, tasks, c["eval_samples"], c["max_new_tokens"],
                                      seed=c["seed"] + EVAL_SEED_OFFSET,
                                      temperature=c["temperature"])
        texts = [r["text"] for r in ev["responses"]]
        proxy = rm.score_texts(tok, [t.prompt for t in ev["tasks"]], texts,
                               [r["ended"] for r in ev["responses"]])
        rows = [{"family": t.family, "success": float(b["success"]), "gold": b["total"],
                 "proxy": p, **{k: b[k] for k in ("helpful", *STYLE_COMPONENTS)}}
                for t, b, p in zip(ev["tasks"], ev["breakdown"], proxy)]
        result["overall"][name] = _family_row(rows)
        result["verifiable"][name] = _family_row([r for r in rows
                                                  if r["family"] in world.VERIFIABLE])
        result["per_family"][name] = {f: _family_row([r for r in rows if r["family"] == f])
                                      for f in world.FAMILIES}
        result["stages"][name] = stage
        by_prompt[name] = {}
        for t, r in zip(ev["tasks"], rows):
            if r["family"] in world.VERIFIABLE:
                by_prompt[name].setdefault(t.prompt, []).append((r["success"], r["gold"]))
        log(f"[compare] {name}: success {result['overall'][name]['success']:.1%}, gold "
            f"{result['overall'][name]['gold']:+.3f}")
    if "PPO (reward model)" in by_prompt:
        result["verifiable_vs_ppo"] = {name: _paired(answers, by_prompt["PPO (reward model)"])
                                       for name, answers in by_prompt.items()}
    return result


def verifiable_success(m: dict) -> float:
    """Task success of one run on the families a verifier can judge (world.VERIFIABLE), pooled
    over their held-out prompts, from the run's own final evaluation (metrics["per_family"])."""
    from . import world

    fams = [m["per_family"][f] for f in world.VERIFIABLE]
    return sum(f["success"] * f["n"] for f in fams) / sum(f["n"] for f in fams)


def verifiable_over_seeds(a_runs: dict, b_runs: dict) -> dict:
    """Two methods, each trained with several seeds ({stage: metrics}): each run's task success
    on the verifiable families, each method's mean and spread over its seeds, and the
    difference of the means a - b with its standard error (sqrt(var_a / n_a + var_b / n_b),
    the seeds being independent runs). Returns {"a": {stage: success}, "b": {...}, "a_mean",
    "a_std", "b_mean", "b_std", "diff", "diff_se"}."""
    out = {}
    for side, runs in (("a", a_runs), ("b", b_runs)):
        if len(runs) < 2:
            raise ValueError(f"verifiable_over_seeds needs two runs or more per method, got "
                             f"{len(runs)}")
        out[side] = {stage: verifiable_success(m) for stage, m in runs.items()}
        out[f"{side}_mean"] = statistics.fmean(out[side].values())
        out[f"{side}_std"] = statistics.stdev(out[side].values())
    out["diff"] = out["a_mean"] - out["b_mean"]
    out["diff_se"] = math.sqrt(out["a_std"] ** 2 / len(a_runs) + out["b_std"] ** 2 / len(b_runs))
    return out


def _paired(a: dict, b: dict) -> dict:
    """Mean difference a - b in task success and in gold over the prompts of `b`, each prompt's
    answers averaged first ({prompt: [(success, gold), ...]}), with standard errors over
    prompts: paired, so the prompts' own difficulty cancels."""
    from .evaluate import standard_error

    out = {}
    for i, key in enumerate(("success", "gold")):
        diffs = [sum(x[i] for x in a[p]) / len(a[p]) - sum(x[i] for x in b[p]) / len(b[p])
                 for p in b]
        out[f"{key}_diff"] = sum(diffs) / len(diffs)
        out[f"{key}_diff_se"] = standard_error(diffs)
    return out


def _reward_sources_cached(out_dir: Path, device, log) -> dict:
    """reward_sources from DIR/compare/grpo.json when it is newer than every stage it
    evaluates (five evaluations of the held-out prompts saved), else measured anew."""
    path = out_dir / "compare" / "grpo.json"
    saved = read_json(path).get("reward_sources") if path.exists() else None
    stages = [s for s in REWARD_SOURCE_POLICIES.values() if (out_dir / s / "model.pt").exists()]
    inputs = [out_dir / s / "metrics.json" for s in ("reward", *stages)]
    if (saved and sorted(saved["stages"].values()) == sorted(stages)
            and set(ROW_KEYS) <= set(next(iter(saved["overall"].values()), {}))
            and all(f.stat().st_mtime <= path.stat().st_mtime for f in inputs if f.exists())):
        log("[compare] reward sources: found in compare/grpo.json")
        return saved
    return reward_sources(out_dir, device, log)


def _family_row(rows: list[dict]) -> dict:
    """Means (and standard errors of success and gold) over some evaluated responses."""
    from .evaluate import standard_error

    out = {k: sum(r[k] for r in rows) / len(rows) for k in ROW_KEYS}
    out.update(n=len(rows), success_se=standard_error([r["success"] for r in rows]),
               gold_se=standard_error([r["gold"] for r in rows]))
    return out


def grpo_markdown(result: dict) -> str:
    """The tables of grpo_sweep as Markdown: the runs, and (when present) task success and gold
    per family for each reward source."""
    lines = ["## GRPO variants", "",
             "| run | advantage | aggregation | KL in | reward | gold | task success | "
             "win rate vs SFT | KL to SFT | response length (rollouts: first → last quarter) "
             "| of negative-advantage answers | held-out length (start → end) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for stage, r in result["runs"].items():
        ev = r["eval_length"]
        lines.append(
            f"| {stage} | {r['advantage']} | {r['aggregation']} | {r['kl_in']} | "
            f"{r['reward_source']} | {r['gold']:+.3f} ± {r['gold_se']:.3f} | "
            f"{r['success']:.1%} | {r['win_rate_vs_sft']:.1%} ± {r['win_rate_vs_sft_se']:.1%} | "
            f"{r['kl']:.2f} | {_arrow(r['length_first'], r['length_last'])} | "
            f"{_arrow(r['length_neg_first'], r['length_neg_last'])} | "
            f"{_arrow(ev[0], ev[-1]) if ev else '–'} |")
    if "seeds" in result:
        w, g = result["seeds"]["spread"]["win_rate"], result["seeds"]["spread"]["gold"]
        lines += ["", f"GRPO (reward model) over {len(result['seeds']['runs'])} seeds: win rate "
                  f"vs SFT {w['min']:.1%} to {w['max']:.1%}, mean {w['mean']:.1%} (std "
                  f"{w['std']:.1%}); gold {g['min']:+.3f} to {g['max']:+.3f}, mean "
                  f"{g['mean']:+.3f} (std {g['std']:.3f})."]
    if "verifier_seeds" in result:
        v = result["verifier_seeds"]
        lines += ["", f"Task success on the verifiable families over seeds: GRPO with the verifier "
                  f"{v['a_mean']:.1%} (std {v['a_std']:.1%}, {len(v['a'])} seeds), PPO with the "
                  f"reward model {v['b_mean']:.1%} (std {v['b_std']:.1%}, {len(v['b'])} seeds): "
                  f"a difference of {v['diff']:+.1%} ± {v['diff_se']:.1%}."]
    if "reward_sources" in result:
        lines += ["", reward_sources_table(result["reward_sources"])]
    return "\n".join(lines) + "\n"


def _arrow(a, b) -> str:
    return "–" if a is None or b is None else f"{a:.1f} → {b:.1f}"


def reward_sources_table(rs: dict) -> str:
    """Task success and gold per family (rows) for each policy (columns) of reward_sources,
    then the families a verifier can judge pooled, then all."""
    from . import world

    names = list(rs["per_family"])
    lines = ["| family | " + " | ".join(f"{n}: success / gold" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    rows = [(f, {n: rs["per_family"][n][f] for n in names}) for f in world.FAMILIES]
    rows += [("verifiable families", rs["verifiable"]), ("all", rs["overall"])]
    for label, by_name in rows:
        verifiable = label in world.VERIFIABLE or label == "verifiable families"
        tag = label if verifiable or label == "all" else f"{label} (no verifier)"
        lines.append(f"| {tag} | " + " | ".join(
            f"{by_name[n]['success']:.1%} / {by_name[n]['gold']:+.2f}" for n in names) + " |")
    return "\n".join(lines)
