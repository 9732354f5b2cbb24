"""Smoke runs of every stage with tiny configurations, in order, in one run folder: each stage
must train, write its checkpoint, metrics and figures, and report the metrics the course
relies on. (Quality is measured by the full run, not here: these models are too small.)"""

import json

import pytest

from minialign import bon, compare, dpo, ppo, preferences, pretrain, reward, sft


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("run")


def quiet(*_):
    pass


def load(run_dir, stage):
    return json.loads((run_dir / stage / "metrics.json").read_text())


@pytest.fixture(scope="module")
def pipeline(run_dir):
    """Every stage, tiny, in order (later tests read what this wrote)."""
    out = {}
    out["pretrain"] = pretrain.train(pretrain.PretrainConfig.fast(max_steps=40, n_docs=1500),
                                     run_dir, log=quiet)
    out["sft"] = sft.train(sft.SFTConfig.fast(n_demos=300), run_dir, log=quiet)
    out["preferences"] = preferences.train(preferences.PreferencesConfig.fast(n_prompts=64),
                                           run_dir, log=quiet)
    out["dpo"] = dpo.train(dpo.DPOConfig.fast(), run_dir, log=quiet)
    assert not (run_dir / "reward").exists()  # DPO needs the preferences, not a reward model
    out["reward"] = reward.train(reward.RewardConfig.fast(), run_dir, log=quiet)
    out["ppo"] = ppo.train(ppo.PPOConfig.fast(iterations=3, eval_interval=2), run_dir, log=quiet)
    out["bon_log"] = []
    out["bon"] = bon.train(bon.BoNConfig.fast(n_prompts=24), run_dir, log=out["bon_log"].append)
    out["compare"] = compare.train(compare.CompareConfig.fast(), run_dir, log=quiet)
    return out


def test_sft_writes_checkpoint_metrics_and_figures(pipeline, run_dir):
    m = load(run_dir, "sft")
    for key in ["gold_reward_mean", "task_success_rate", "pretrained_gold_reward_mean",
                "pretrained_task_success_rate", "end_rate", "per_family"]:
        assert key in m
    for key in ["gold_reward_mean_se", "task_success_rate_se", "pretrained_gold_reward_mean_se",
                "pretrained_task_success_rate_se", "win_rate_vs_pretrained_se"]:
        rate = m[key.removesuffix("_se")]
        assert 0 <= m[key] < 0.5, key  # a standard error over the held-out prompts,
        assert (m[key] == 0) == (rate in (0, 1)), key  # zero only where every prompt agrees
    assert (run_dir / "sft" / "model.pt").exists()
    assert (run_dir / "sft" / "success_by_family.png").exists()
    assert 0 <= m["task_success_rate"] <= 1 and m["gold_reward_mean"] <= 1


def test_reward_model_metrics(pipeline, run_dir):
    m = load(run_dir, "reward")
    for key in ["val_accuracy", "bayes_accuracy", "gold_correlation"]:
        assert key in m
    assert 0.5 <= m["bayes_accuracy"] <= 1  # max(p, 1 - p) >= 1/2 for every pair
    assert 0 <= m["val_accuracy"] <= 1
    assert m["history"]["val_loss"][0] == pytest.approx(0.6931, abs=1e-3)  # zero head: ln 2
    assert m["history"]["val_accuracy"][0] == 0.0  # strict >: ties are wrong
    # the evaluation reuses the last validation's scores: the trained model's, not step 0's
    assert m["val_accuracy"] == m["history"]["val_accuracy"][-1] > 0
    assert m["n_train_prompts"] == pipeline["preferences"]["n_train_prompts"]


def test_preferences_stage_writes_rankings_with_probabilities(pipeline, run_dir):
    m = load(run_dir, "preferences")
    assert m["n_train_pairs"] > m["n_train_prompts"] > 0 and m["n_val_pairs"] > 0
    assert sum(m["family_mix"].values()) == pytest.approx(1.0)
    for split in ("train", "val"):
        rankings = preferences.load_rankings(run_dir, "preferences", split)
        assert rankings and all(r.probabilities is not None for r in rankings)
        assert all(0.0 <= p <= 1.0 for r in rankings for p in r.probabilities)


def test_reward_model_on_exact_probabilities_trains(pipeline, run_dir):
    """The no-label-noise diagnostic (targets="probabilities") runs as a stage of its own."""
    m = reward.train(reward.RewardConfig.fast(max_prompts=32, targets="probabilities"),
                     run_dir, log=quiet, stage="reward_exact")
    assert m["config"]["targets"] == "probabilities"
    assert m["history"]["val_loss"][0] == pytest.approx(0.6931, abs=1e-3)
    assert m["history"]["train_loss"][-1] < 0.6931  # it learned something from the targets
    assert (run_dir / "reward_exact" / "model.pt").exists()


def test_reward_model_scores_are_normalised_on_sft_samples(pipeline, run_dir):
    m = load(run_dir, "reward")
    scores = m["scores"]["rm"]
    mean = sum(scores) / len(scores)
    assert mean == pytest.approx(0.0, abs=1e-4)


def test_ppo_metrics(pipeline, run_dir):
    m = load(run_dir, "ppo")
    for key in ["gold_reward_mean", "proxy_reward_mean", "kl_to_ref", "win_rate_vs_sft"]:
        assert key in m
    assert all(0 < m[f"{key}_se"] < 0.5 for key in ("gold_reward_mean", "win_rate_vs_sft"))
    assert m["kl_to_ref_se"] >= 0 and "task_success_rate_se" in m
    h = m["history"]
    for key in ["objective/kl", "objective/scores", "policy/clipfrac", "policy/approxkl",
                "val/ratio", "loss/policy", "loss/value", "objective/entropy"]:
        assert key in h[0]
    assert abs(h[0]["objective/kl"]) < 1e-4  # the policy starts as the reference
    assert all(abs(x["val/first_ratio"] - 1) < 1e-4 for x in h)
    assert (run_dir / "ppo" / "training.png").exists()
    sample = m["samples_over_training"][0]  # notebook 05's table of answers over training
    assert set(sample) == {"iteration", "prompt", "response", "ended", "gold", "proxy"}


def test_dpo_metrics(pipeline, run_dir):
    m = load(run_dir, "dpo")
    for key in ["gold_reward_mean", "kl_to_ref", "win_rate_vs_sft", "implicit_reward_accuracy"]:
        assert key in m
    assert all(0 < m[f"{key}_se"] < 0.5 for key in ("gold_reward_mean", "win_rate_vs_sft"))
    assert m["kl_to_ref_se"] >= 0 and "task_success_rate_se" in m
    assert m["logprob_temperature"] == m["config"]["temperature"]  # scored as it samples
    assert m["response_length_mean"] > 0 and m["sft_response_length_mean"] > 0
    h = m["history"]
    assert h["loss"][0] == pytest.approx(0.6931, abs=1e-3)  # policy = reference at step 0
    assert h["rewards/margins"][0] == pytest.approx(0.0, abs=1e-4)
    for key in ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "logps/chosen",
                "logps/rejected"]:
        assert key in h


def test_best_of_n_and_compare(pipeline, run_dir):
    m = load(run_dir, "bon")
    by_n = m["by_n"]
    assert by_n["1"]["kl_bound"] == 0.0
    proxies = [by_n[n]["proxy_reward_mean"] for n in sorted(by_n, key=int)]
    assert proxies == sorted(proxies)  # nested samples: the max over more can only be higher
    assert by_n["1"]["win_rate_vs_sft_se"] == 0.0  # N = 1 is SFT's own draw: all ties
    assert 0 < m["gold_reward_mean_se"] < 0.5 and 0 < m["win_rate_vs_sft_se"] < 0.5
    c = load(run_dir, "compare")
    assert set(c["rows"]) == {"pretrained", "sft", "bon", "ppo", "dpo"}
    assert (run_dir / "compare" / "frontier.png").exists()
    # the stage's one line names the KL the summary table shows (compare.bon_kl)
    kl, kind = compare.bon_kl(by_n[str(m["samples_per_prompt"])])
    assert f"KL ~ {kl:.2f} nats ({kind};" in pipeline["bon_log"][-1]
