"""Chapter 7: best-of-N's KL estimate on hand cases, Gao et al.'s curve fits on synthetic data,
and a smoke run of the comparison with its sweep (frontier, over-optimisation, RLAIF, and
chapter 8's GRPO variants and reward sources) on a tiny pipeline."""

import json
import math
import random
from types import SimpleNamespace

import pytest
import torch

from minialign import (bon, compare, dpo, evaluate, experiments, grpo, ppo, preferences,
                       pretrain, reward, sft, world)
from minialign.__main__ import main as cli
from minialign.evaluate import kl_best_of_n_bound


# ==============================================================================================
# error bars: standard errors over prompts, and the table that shows them


def test_standard_error_by_hand():
    assert evaluate.standard_error([1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt(5 / 12))
    assert evaluate.standard_error([0.7]) == 0.0  # one value: no spread to measure
    assert evaluate.win_rate_se([1.0, 0.0], [0.0, 0.0]) == pytest.approx(0.25)  # 1, 0.5


def test_error_bars_average_the_answers_to_one_prompt_first():
    """3 prompts, 2 answers each: the standard errors are those of the 3 per-prompt means."""
    tasks = [SimpleNamespace(prompt=p) for p in "aabbcc"]
    ev = {"tasks": tasks, "gold": [1.0, 1.0, 0.5, 0.5, 0.0, 0.0],
          "breakdown": [{"success": s} for s in (True, False, True, True, False, False)],
          "kl_per_response": [2.0, 0.0, 1.0, 1.0, 3.0, 3.0]}
    sft_like = {"gold": [0.0, 0.0, 0.5, 1.0, 0.0, 1.0]}
    bars = evaluate.error_bars(ev, versus=sft_like)
    # gold per prompt 1, 0.5, 0: sample variance 1/4, SE sqrt(1/4 / 3); over the 6 answers
    # as if independent it would be sqrt(1/5 / 6), too small
    assert bars["gold_reward_mean_se"] == pytest.approx(math.sqrt(1 / 12))
    assert evaluate.standard_error(ev["gold"]) == pytest.approx(math.sqrt(1 / 30))
    assert bars["task_success_rate_se"] == pytest.approx(math.sqrt(1 / 12))  # 0.5, 1, 0
    assert bars["kl_to_ref_se"] == pytest.approx(2 / 3)  # 1, 1, 3: variance 4/3, / 3 prompts
    # outcomes 1, 1 | .5, 0 | .5, 0 -> per prompt 1, .25, .25: variance 3/16, SE 1/4
    assert bars["win_rate_vs_sft_se"] == pytest.approx(0.25)
    no_kl = {k: v for k, v in ev.items() if k != "kl_per_response"}
    assert set(evaluate.error_bars(no_kl)) == {"gold_reward_mean_se", "task_success_rate_se"}
    with pytest.raises(ValueError):
        evaluate.error_bars(ev, versus={"gold": [0.0]})  # not the same prompts


def test_the_table_shows_each_mean_with_its_standard_error_where_it_has_one():
    row = {"gold_reward_mean": 0.6222, "gold_reward_mean_se": 0.0301, "task_success_rate": 0.8,
           "win_rate_vs_sft": 0.691, "win_rate_vs_sft_se": 0.028, "kl_to_sft": 1.27}
    assert compare.plus_minus(row, "gold_reward_mean", "{:.3f}") == "0.622 ± 0.030"
    assert compare.plus_minus(row, "win_rate_vs_sft", "{:.1%}") == "69.1% ± 2.8%"
    assert compare.plus_minus(row, "task_success_rate", "{:.1%}") == "80.0%"  # none recorded
    table = compare.markdown_table({"ppo": row})
    assert "| PPO (RLHF) | 0.622 ± 0.030 | 80.0% | 69.1% ± 2.8% | 1.27 |" in table


# ==============================================================================================
# the KL of best-of-N, estimated on the distinct sampled responses


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 64])
def test_kl_estimate_two_responses_by_hand(n):
    # response 0 (p = 1/4) scores higher: best-of-n returns it unless all n draws are response 1
    logps = torch.tensor([0.25, 0.75], dtype=torch.float64).log()
    expected = kl([1 - 0.75 ** n, 0.75 ** n], [0.25, 0.75])
    got = bon.kl_best_of_n_estimate(logps, [1.0, 0.0], n)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # the log-probs are renormalised over the sampled support: only their ratio matters
    shifted = torch.tensor([0.1, 0.3], dtype=torch.float64).log()
    assert bon.kl_best_of_n_estimate(shifted, [1.0, 0.0], n) == \
        pytest.approx(expected, rel=1e-9, abs=1e-12)
    # a tie goes to the earlier response, as pick_best does
    assert bon.kl_best_of_n_estimate(logps, [0.5, 0.5], n) == \
        pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert got <= kl_best_of_n_bound(n) + 1e-12


def test_kl_estimate_never_exceeds_the_bound_and_is_zero_for_one_response():
    rng = random.Random(0)
    for _ in range(200):
        k, n = rng.randint(1, 12), rng.choice([1, 2, 4, 16, 256])
        logps = torch.tensor([rng.uniform(-8, 0) for _ in range(k)])
        scores = [rng.choice([0.0, 0.5, rng.random()]) for _ in range(k)]  # with ties
        est = bon.kl_best_of_n_estimate(logps, scores, n)
        assert -1e-12 <= est <= kl_best_of_n_bound(n) + 1e-9
    assert bon.kl_best_of_n_estimate(torch.tensor([-3.0]), [0.2], 64) == pytest.approx(0.0)


def test_reward_ranks_break_ties_towards_the_earlier_response():
    assert bon.reward_ranks([0.5, 0.2, 0.5, 0.9]).tolist() == [2.0, 0.0, 1.0, 3.0]


def test_best_of_n_curve_on_repeated_samples():
    # one prompt, 4 samples: response A (true p 0.25, score 1) once, response B (p 0.75,
    # score 0) three times; gold 1 for A, 0 for B
    A, B = [5, 6, 1], [7, 1]
    samples = [{"response_ids": ids} for ids in (B, A, B, B)]
    logps = [math.log(0.75), math.log(0.25), math.log(0.75), math.log(0.75)]
    proxy = [0.0, 1.0, 0.0, 0.0]
    gold = [0.0, 1.0, 0.0, 0.0]
    curve = bon.best_of_n_curve(samples, logps, proxy, gold, n_prompts=1, ns=(1, 2, 4))
    for n in (1, 2, 4):
        r = curve[n]
        assert r["kl_estimate"] == pytest.approx(kl([1 - 0.75 ** n, 0.75 ** n], [0.25, 0.75]))
        # the sample frequencies are exactly 1/4 and 3/4 here: the two estimates agree
        assert r["kl_estimate_freq"] == pytest.approx(r["kl_estimate"])
        assert r["gold_expected"] == pytest.approx(1 - 0.75 ** n)
        assert r["kl_bound"] == pytest.approx(kl_best_of_n_bound(n))
        assert r["support_mass"] == pytest.approx(1.0)
        assert r["distinct_per_prompt"] == 2
    assert curve[1]["chosen"] == [0] and curve[2]["chosen"] == [1]  # nested draws
    assert curve[1]["kl_estimate"] == pytest.approx(0.0, abs=1e-12)


# ==============================================================================================
# Gao et al.'s functional forms, fitted by least squares


@pytest.mark.parametrize("form,alpha,beta", [("bon", 0.8, 0.3), ("rl", 0.5, 0.4)])
def test_fit_gao_recovers_known_parameters(form, alpha, beta):
    kls = [0.0, 0.1, 0.4, 1.0, 2.0, 3.5, 5.0, 8.0]
    d = [math.sqrt(k) for k in kls]
    gold0 = -0.2
    gold = [gold0 + experiments.gao_curve(x, alpha, beta, form) for x in d]
    fit = experiments.fit_gao(kls, gold, form)
    assert fit["alpha"] == pytest.approx(alpha, abs=1e-9)
    assert fit["beta"] == pytest.approx(beta, abs=1e-9)
    assert fit["gold0"] == gold0 and fit["r2"] == pytest.approx(1.0)
    d_peak = alpha / (2 * beta) if form == "bon" else math.exp(alpha / beta - 1)
    assert fit["peak_kl"] == pytest.approx(d_peak ** 2)
    assert fit["peak_gain"] == pytest.approx(experiments.gao_curve(d_peak, alpha, beta, form))


def test_fit_gao_with_noise_and_edge_cases():
    rng = random.Random(1)
    kls = [0.05 * i * i for i in range(30)]
    gold = [0.3 + math.sqrt(k) * (1.0 - 0.25 * math.sqrt(k)) + rng.gauss(0, 0.01) for k in kls]
    gold[0] = 0.3
    fit = experiments.fit_gao(kls, gold, "bon")
    assert fit["alpha"] == pytest.approx(1.0, abs=0.05)
    assert fit["beta"] == pytest.approx(0.25, abs=0.03)
    rising = experiments.fit_gao([0.0, 1.0, 4.0], [0.0, 1.0, 2.5], "bon")  # never turns down
    assert rising["beta"] < 0 and rising["peak_kl"] is None
    assert experiments.fit_gao([0.0, 1.0], [0.0, 1.0], "rl") is None  # too few points
    with pytest.raises(ValueError):
        experiments.fit_gao([0.0, 1.0, 2.0], [0.0, 1.0, 2.0], "ppo")


def test_seed_spread_by_hand():
    rows = {f"r{i}": {"gold": g, "win_rate": 0.5, "success": 0.8, "kl": 1.0}
            for i, g in enumerate([0.1, 0.2, 0.3, 0.4, 0.5])}
    s = experiments.seed_spread(rows)["gold"]
    std = math.sqrt(sum((g - 0.3) ** 2 for g in [0.1, 0.2, 0.3, 0.4, 0.5]) / 4)  # 0.158
    assert s["mean"] == pytest.approx(0.3) and s["std"] == pytest.approx(std)
    assert (s["min"], s["max"]) == (0.1, 0.5)
    assert s["gap_2sd"] == pytest.approx(2 * math.sqrt(2) * std)  # a difference of two runs
    assert experiments.seed_spread(rows)["win_rate"]["std"] == 0.0
    assert experiments.seed_spread({"one": rows["r0"]})["gold"]["std"] == 0.0


def test_gap_verdicts_against_the_yardstick():
    golds = {"PPO": 0.70, "DPO": 0.66, "best-of-N": 0.60}
    rows = experiments.gap_verdicts(golds, [("PPO", "DPO"), ("DPO", "best-of-N"),
                                            ("best-of-N", "PPO"), ("PPO", "GRPO")], 0.05)
    assert [r["verdict"] for r in rows] == ["within the noise", "DPO above best-of-N",
                                            "PPO above best-of-N"]  # GRPO: not in the run
    assert rows[0]["gap"] == pytest.approx(0.04) and rows[2]["gap"] == pytest.approx(-0.10)
    assert [experiments.gap_verdict(x, 0.5, 0.1) for x in (0.65, 0.45, 0.35)] == [
        "above", "within the noise", "below"]


def test_peak_inside_the_measured_kls():
    kls = [0.0, 0.5, 1.0, 2.0]
    assert experiments.peak_inside({"peak_kl": 1.2}, kls)
    assert not experiments.peak_inside({"peak_kl": 3.0}, kls)  # beyond the data: extrapolated
    assert not experiments.peak_inside({"peak_kl": 0.0}, kls)  # falling from the start
    assert not experiments.peak_inside({"peak_kl": None}, kls)  # never turns down
    assert not experiments.peak_inside(None, kls)  # too few points to fit


def test_fooling_responses_need_high_proxy_and_low_gold():
    rows = [{"source": "a", "prompt": f"p{i}", "response": "r", "proxy": px, "gold": g}
            for i, (px, g) in enumerate([(2.0, -1.0), (1.0, 0.9), (-1.0, -2.0), (0.5, 0.0)])]
    picked = experiments.fooling_responses(rows, sft_gold=0.2, n=4)
    assert [r["prompt"] for r in picked] == ["p0", "p3"]  # p1: gold too high; p2: proxy too low


def test_an_extra_run_trained_with_another_config_is_stale(tmp_path):
    saved = grpo.GRPOConfig(iterations=32, advantage="rloo")
    metrics = {k: v for k, v in json.loads(json.dumps(vars(saved))).items() if k != "seed"}
    (tmp_path / "metrics.json").write_text(json.dumps({"config": metrics}))
    path = tmp_path / "metrics.json"
    assert experiments._config_changes(path, grpo.GRPOConfig(iterations=32, advantage="rloo")) \
        == []
    assert experiments._config_changes(path, grpo.GRPOConfig(iterations=16, advantage="rloo",
                                                             seed=3)) == ["iterations"]
    assert experiments._config_changes(path, None) == []  # no config to hold it against
    assert experiments._config_changes(tmp_path / "missing.json", saved) == []


def test_an_extra_run_retrains_when_a_stage_it_reads_was_retrained(tmp_path):
    import os

    def finish(stage, run_id=None):  # a stage's files as a finished run leaves them
        (tmp_path / stage).mkdir(exist_ok=True)
        (tmp_path / stage / "metrics.json").write_text(json.dumps({"config": {}}))
        if run_id:
            (tmp_path / stage / "stage.json").write_text(json.dumps({"run_id": run_id}))

    trained, said = [], []

    def ensure():
        return experiments.ensure_stage(tmp_path, "ppo_kl0.1", lambda: trained.append(
            finish("ppo_kl0.1")), said.append, None, ["reward"])

    finish("reward", "first")
    ensure()  # missing: trained, and its inputs recorded
    record = json.loads((tmp_path / "ppo_kl0.1" / "stage.json").read_text())
    assert len(trained) == 1 and record["inputs"] == {"reward": "first"} and record["run_id"]
    ensure()  # nothing changed: found
    assert len(trained) == 1 and "found" in said[-1]
    finish("reward", "second")  # the reward model retrained (same config, new run)
    ensure()
    assert len(trained) == 2 and "retrained since: reward" in said[-1]
    assert json.loads((tmp_path / "ppo_kl0.1" / "stage.json").read_text())["inputs"] == \
        {"reward": "second"}
    # a run from before the record existed: judged by when its input last finished
    (tmp_path / "ppo_kl0.1" / "stage.json").unlink()
    run_time = (tmp_path / "ppo_kl0.1" / "metrics.json").stat().st_mtime
    os.utime(tmp_path / "reward" / "stage.json", (run_time - 60, run_time - 60))
    ensure()
    assert len(trained) == 2  # its input finished before it: found
    os.utime(tmp_path / "reward" / "stage.json", (run_time + 60, run_time + 60))
    ensure()
    assert len(trained) == 3 and "retrained since: reward" in said[-1]


# ==============================================================================================
# the configuration and the command line


def test_default_compare_config_trains_nothing_extra():
    assert not compare.CompareConfig().sweep and not compare.CompareConfig.fast().sweep
    with pytest.raises(ValueError):
        compare.CompareConfig(bon_ns=(2, 4))  # N = 1 (the SFT baseline) must be there
    with pytest.raises(SystemExit):
        cli(["ppo", "--sweep", "--out", "/nonexistent"])


# ==============================================================================================
# smoke: a tiny pipeline, then the sweep


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run7")
    pretrain.train(pretrain.PretrainConfig.fast(max_steps=40, n_docs=1500), run_dir, log=quiet)
    sft.train(sft.SFTConfig.fast(n_demos=300), run_dir, log=quiet)
    preferences.train(preferences.PreferencesConfig.fast(n_prompts=64), run_dir, log=quiet)
    reward.train(reward.RewardConfig.fast(), run_dir, log=quiet)
    ppo.train(ppo.PPOConfig.fast(iterations=3, eval_interval=2), run_dir, log=quiet)
    grpo.train(grpo.GRPOConfig.fast(iterations=3, eval_interval=100), run_dir, log=quiet)
    dpo.train(dpo.DPOConfig.fast(), run_dir, log=quiet)
    bon.train(bon.BoNConfig.fast(n_prompts=24), run_dir, log=quiet)
    return run_dir


def test_compare_without_sweep_only_collects(run_dir):
    m = compare.train(compare.CompareConfig.fast(), run_dir, log=quiet)
    assert set(m["rows"]) == {"pretrained", "sft", "bon", "ppo", "grpo", "dpo"}
    assert "kl_estimate" in m["rows"]["bon"]
    assert not any((run_dir / s).exists() for s in ("ppo_kl0.02", "reward_small", "reward_ai",
                                                     "grpo_verifier"))

    summary = compare.write_summary(run_dir, {}, 1.0, fast=True)
    pretrained_in = json.loads((run_dir / "pretrain" / "metrics.json").read_text())["precision"]
    assert summary["precision"] == pretrained_in in ("fp32", "bf16")
    assert f"pretraining in {pretrained_in}" in (run_dir / "summary.md").read_text()


def test_compare_sweep_writes_its_stages_files_and_keys(run_dir):
    cfg = compare.CompareConfig.fast(sweep=True)
    m = compare.train(cfg, run_dir, log=quiet)
    for stage in ("ppo_kl0.02", "dpo_beta1.0", "reward_small", "preferences_ai", "reward_ai",
                  "dpo_ai", "ppo_ai"):
        assert (run_dir / stage / "metrics.json").exists(), stage
    # variants copy the run folder's own stage config and change one knob
    kl_run = json.loads((run_dir / "ppo_kl0.02" / "metrics.json").read_text())["config"]
    assert kl_run["kl_coef"] == 0.02 and kl_run["adaptive_kl"] is False
    assert kl_run["iterations"] == 3  # from the ppo stage of this folder, not PPOConfig.fast()
    rm_ai = json.loads((run_dir / "reward_ai" / "metrics.json").read_text())
    prefs_ai = json.loads((run_dir / "preferences_ai" / "metrics.json").read_text())
    assert rm_ai["labeler"] == prefs_ai["labeler"] == "ai"
    assert prefs_ai["config"]["n_prompts"] == 64  # from this folder's preferences stage
    dpo_ai = json.loads((run_dir / "dpo_ai" / "metrics.json").read_text())
    assert dpo_ai["config"]["preferences"] == "preferences_ai"
    for name in ("frontier.png", "overoptimization.png", "overoptimization.json", "rlaif.json",
                 "rlaif.png", "labelers.png", "metrics.json"):
        assert (run_dir / "compare" / name).exists(), name

    points = m["frontier"]
    assert {"SFT", "PPO (final, over KL coef.)", "PPO (during training)",
            "DPO (over β)"} <= set(points)
    assert len(points["PPO (final, over KL coef.)"]) == 2  # adaptive + β = 0.02
    assert len(points["DPO (over β)"]) == 2  # β = 0.3 (the dpo stage) + 1.0
    assert not any("ai" in str(p) for p in points["DPO (over β)"])

    oo = json.loads((run_dir / "compare" / "overoptimization.json").read_text())
    assert set(oo["best_of_n"]) == {"reward", "reward_small"}
    for r in oo["best_of_n"].values():
        assert r["ns"] == list(cfg.bon_ns)
        for key in ("kl", "kl_bound", "kl_estimate", "kl_estimate_freq", "gold", "proxy",
                    "gold_draw", "support_mass", "fit"):
            assert key in r, key
        assert all(e <= b + 1e-9 for e, b in zip(r["kl_estimate"], r["kl_bound"]))
        assert {"alpha", "beta", "peak_kl", "r2"} <= set(r["fit"])
    assert oo["ppo"]["stage"] == "ppo_kl0.02" and len(oo["ppo"]["gold"]) == len(oo["ppo"]["kl"])
    assert oo["reward_models"]["reward_small"]["n_train_prompts"] <= cfg.small_rm_prompts
    for row in oo["fooling"]:
        assert {"source", "prompt", "response", "proxy", "gold"} <= set(row)
        assert row["proxy"] > 0 and row["gold"] < oo["sft_gold_reward_mean"]

    t1 = json.loads((run_dir / "dpo_logprobT1.0" / "metrics.json").read_text())
    assert t1["config"]["logprob_temperature"] == 1.0 and t1["logprob_temperature"] == 1.0
    assert m["sweep"]["dpo"]["dpo_logprobT1.0"]["logprob_temperature"] == 1.0
    noise = json.loads((run_dir / "compare" / "noise.json").read_text())
    assert set(noise["runs"]) == {"ppo", "ppo_seed1"} and (run_dir / "compare" / "noise.png").exists()
    seeded = json.loads((run_dir / "ppo_seed1" / "metrics.json").read_text())["config"]
    assert seeded["seed"] == 1 and seeded["iterations"] == 3  # the ppo stage's, reseeded
    assert noise["runs"]["ppo_seed1"]["gold"] == pytest.approx(
        json.loads((run_dir / "ppo_seed1" / "metrics.json").read_text())["gold_reward_mean"])
    assert set(noise["dpo"]["runs"]) == {"dpo", "dpo_seed1"}  # DPO over the same seeds
    dpo_seeded = json.loads((run_dir / "dpo_seed1" / "metrics.json").read_text())
    dpo_own = json.loads((run_dir / "dpo" / "metrics.json").read_text())["config"]
    assert dpo_seeded["config"] == {**dpo_own, "seed": 1}  # the dpo stage's config, reseeded
    assert noise["dpo"]["runs"]["dpo_seed1"]["win_rate"] == dpo_seeded["win_rate_vs_sft"]
    assert noise["dpo"]["spread"]["win_rate"]["min"] <= noise["dpo"]["spread"]["win_rate"]["max"]

    rl = json.loads((run_dir / "compare" / "rlaif.json").read_text())
    assert set(rl["labelers"]) == {"human", "AI judge"}
    assert {"PPO, AI labels", "DPO, AI labels", "PPO, human labels"} <= set(rl["policies"])
    for lab in rl["labelers"].values():
        assert all(0 <= v <= 1 for v in lab["labels"].values())

    # chapter 8: each GRPO variant changes its knobs of the grpo stage's config, nothing else
    base = json.loads((run_dir / "grpo" / "metrics.json").read_text())["config"]
    assert base["iterations"] == 3  # this folder's grpo stage
    for stage, changes in experiments.GRPO_VARIANTS.items():
        c = json.loads((run_dir / stage / "metrics.json").read_text())["config"]
        if changes.get("reward_source") == "verifier":  # and VERIFIER_ITERATIONS times as long
            changes = {**changes, "iterations": 3 * experiments.VERIFIER_ITERATIONS}
        changed = {k for k in c if c[k] != base[k]} - {"eval_interval"}
        assert changed == set(changes) and all(c[k] == v for k, v in changes.items()), stage
    g = json.loads((run_dir / "compare" / "grpo.json").read_text())
    assert set(g["runs"]) == {"grpo", *experiments.GRPO_VARIANTS}
    for r in g["runs"].values():
        assert r["length_first"] > 0 and r["length_last"] > 0
        assert len(r["eval_length"]) == len(r["eval_iteration"]) >= 2
    assert g["runs"]["grpo_verifier"]["reward_source"] == "verifier"
    rs = g["reward_sources"]
    assert list(rs["overall"]) == ["SFT", "PPO (reward model)", "GRPO, reward model",
                                   "GRPO, verifier", "GRPO, gold"]
    for name, fams in rs["per_family"].items():
        assert list(fams) == world.FAMILIES
        n = sum(f["n"] for f in fams.values())
        # every held-out prompt the grpo stages evaluated on (a subset in fast mode)
        held_out = evaluate.eval_tasks(grpo.GRPOConfig.fast().eval_prompts)
        assert 0 < n == rs["overall"][name]["n"] == len(held_out)
        assert len(held_out) < len(world.default_world().tasks("eval"))
        pooled = sum(fams[f]["success"] * fams[f]["n"] for f in world.VERIFIABLE)
        assert rs["verifiable"][name]["success"] == pytest.approx(
            pooled / sum(fams[f]["n"] for f in world.VERIFIABLE))
    vs_ppo = rs["verifiable_vs_ppo"]
    assert vs_ppo["PPO (reward model)"] == {"success_diff": 0.0, "success_diff_se": 0.0,
                                            "gold_diff": 0.0, "gold_diff_se": 0.0}
    assert vs_ppo["GRPO, verifier"]["success_diff"] == pytest.approx(
        rs["verifiable"]["GRPO, verifier"]["success"] - rs["verifiable"]["PPO (reward model)"]
        ["success"])
    # GRPO's own row is its final evaluation, repeated: the same prompts, samples and seed
    own = json.loads((run_dir / "grpo" / "metrics.json").read_text())
    assert rs["overall"]["GRPO, reward model"]["gold"] == pytest.approx(own["gold_reward_mean"])
    # the default GRPO again with the noise seeds: the grpo stage's config, reseeded
    grpo_seeded = json.loads((run_dir / "grpo_seed1" / "metrics.json").read_text())
    assert {k for k in base if grpo_seeded["config"][k] != base[k]} <= {"seed", "eval_interval"}
    assert grpo_seeded["config"]["seed"] == 1
    assert set(g["seeds"]["runs"]) == {"grpo", "grpo_seed1"}
    wins = [r["win_rate"] for r in g["seeds"]["runs"].values()]
    assert g["seeds"]["spread"]["win_rate"]["mean"] == pytest.approx(sum(wins) / 2)
    assert g["seeds"]["runs"]["grpo_seed1"]["win_rate"] == grpo_seeded["win_rate_vs_sft"]
    # the verifier with the same seeds, against PPO's seeds, on the verifiable families
    verifier_seeded = json.loads((run_dir / "grpo_verifier_seed1" / "metrics.json").read_text())
    assert verifier_seeded["config"]["seed"] == 1
    assert verifier_seeded["config"]["reward_source"] == "verifier"
    assert verifier_seeded["config"]["iterations"] == 3 * experiments.VERIFIER_ITERATIONS
    vs = g["verifier_seeds"]
    assert set(vs["a"]) == {"grpo_verifier", "grpo_verifier_seed1"}
    assert set(vs["b"]) == {"ppo", "ppo_seed1"}
    assert vs["a"]["grpo_verifier_seed1"] == pytest.approx(
        experiments.verifiable_success(verifier_seeded))
    md = (run_dir / "compare" / "grpo.md").read_text()
    assert "grpo_agg_token-mean" in md and "humor (no verifier)" in md
    assert "over 2 seeds" in md and "Task success on the verifiable families over seeds" in md
    for name in ("grpo_length.png", "reward_sources.png", "reward_sources_training.png"):
        assert (run_dir / "compare" / name).exists(), name

    # a second call finds every stage and the over-optimisation result: nothing retrained
    seconds = {s: json.loads((run_dir / s / "metrics.json").read_text())["seconds"]
               for s in ("ppo_kl0.02", "reward_ai", "grpo_verifier", "grpo_verifier_seed1")}
    compare.train(cfg, run_dir, log=quiet)
    assert seconds == {s: json.loads((run_dir / s / "metrics.json").read_text())["seconds"]
                       for s in seconds}


def test_verifiable_over_seeds_pools_the_verifiable_families_and_compares_the_means():
    def run(successes):  # per_family as a stage's metrics hold it; humor: no verifier
        fams = {f: {"success": x, "n": n} for f, (x, n) in successes.items()}
        return {"per_family": fams}

    verifiable = {f: (0.5, 10) for f in world.VERIFIABLE}
    a1 = run({**verifiable, "arithmetic": (1.0, 30), "humor": (0.0, 100)})
    a2 = run({**verifiable, "humor": (1.0, 100)})
    b1 = run({**verifiable, "arithmetic": (0.0, 30), "humor": (1.0, 100)})
    b2 = run(verifiable)
    n = 10 * (len(world.VERIFIABLE) - 1) + 30
    assert experiments.verifiable_success(a1) == pytest.approx((5 * (n - 30) / 10 + 30) / n)
    assert experiments.verifiable_success(a2) == pytest.approx(0.5)  # humor never counts
    out = experiments.verifiable_over_seeds({"a1": a1, "a2": a2}, {"b1": b1, "b2": b2})
    sa, sb = [out["a"]["a1"], out["a"]["a2"]], [out["b"]["b1"], out["b"]["b2"]]
    assert out["a_mean"] == pytest.approx(sum(sa) / 2)
    assert out["b_mean"] == pytest.approx(sum(sb) / 2)
    assert out["diff"] == pytest.approx(out["a_mean"] - out["b_mean"])
    var = lambda xs: sum((x - sum(xs) / 2) ** 2 for x in xs)  # noqa: E731 (n - 1 = 1)
    assert out["diff_se"] == pytest.approx(((var(sa) + var(sb)) / 2) ** 0.5)
    with pytest.raises(ValueError, match="two runs or more"):
        experiments.verifiable_over_seeds({"a1": a1}, {"b1": b1, "b2": b2})
