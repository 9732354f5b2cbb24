"""The matplotlib figures shared by the notebooks and the command line.

Every function takes plain numbers (lists, dicts of metrics) and a path, draws one figure and
saves it as PNG; notebooks call the same functions and show the figure inline. The Agg backend
is used when no display is present, so this works on servers and in tests.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
    import os

    if not os.environ.get("DISPLAY") and "inline" not in matplotlib.get_backend():
        matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _finish(fig, path):
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


def _smooth(values, k=10):
    if len(values) < k:
        return list(values)
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= k:
            acc -= values[i - k]
        out.append(acc / min(i + 1, k))
    return out


def loss_curve(history: dict, path=None, title="training loss"):
    """Train loss (raw and smoothed) against step, validation loss as points."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(history["step"], history["train_loss"], alpha=0.3, color="C0", label="train (raw)")
    ax.plot(history["step"], _smooth(history["train_loss"]), color="C0", label="train (smoothed)")
    if history.get("val_loss"):
        ax.plot(history["val_step"], history["val_loss"], "o-", color="C1", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return _finish(fig, path)


def family_bars(per_policy: dict, key: str, path=None, title=None):
    """Grouped bars: one group per task family, one bar per policy (per_policy[name][family][key])."""
    import numpy as np

    families = [f for f in next(iter(per_policy.values()))]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    width = 0.8 / len(per_policy)
    x = np.arange(len(families))
    for i, (name, per_family) in enumerate(per_policy.items()):
        ax.bar(x + i * width - 0.4 + width / 2, [per_family[f][key] for f in families], width,
               label=name)
    ax.set_xticks(x, families)
    ax.set_ylabel({"success": "task success rate", "gold": "gold reward"}.get(key, key))
    if key == "success":
        ax.set_ylim(0, 1.05)
    ax.set_title(title or key)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, path)


def reward_training(history: dict, path=None):
    """Reward-model loss and pairwise accuracy: training (smoothed) and held-out."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(history["step"], _smooth(history["train_loss"]), label="train (smoothed)")
    a.plot(history["val_step"], history["val_loss"], "o-", label="held-out pairs")
    a.axhline(0.6931, ls=":", color="gray", label="ln 2 (chance)")
    a.set_xlabel("step")
    a.set_ylabel("Bradley-Terry loss")
    a.legend(fontsize=8)
    b.plot(history["step"], _smooth(history["train_accuracy"]), label="train (smoothed)")
    b.plot(history["val_step"], history["val_accuracy"], "o-", label="held-out pairs")
    b.set_xlabel("step")
    b.set_ylabel("accuracy (strict >)")
    b.legend(fontsize=8)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    return _finish(fig, path)


def calibration(bins: list, path=None, title="reward-model calibration"):
    """Predicted P(chosen > rejected) = sigmoid(r_c - r_r) against the labeler's true P."""
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfect calibration")
    xs = [b["predicted"] for b in bins]
    ys = [b["observed"] for b in bins]
    sizes = [10 + 200 * b["n"] / max(1, max(x["n"] for x in bins)) for b in bins]
    ax.scatter(xs, ys, s=sizes, zorder=3, label="reward model (size = pairs)")
    ax.plot(xs, ys, zorder=2)
    ax.set_xlabel("predicted P(chosen preferred)")
    ax.set_ylabel("labeler's true P(chosen preferred)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _finish(fig, path)


def ppo_training(history: list, curve: dict, path=None):
    """PPO at a glance: proxy and gold reward against iterations and against KL; the KL, the
    clip fraction and the entropy of the policy."""
    it = [h["iteration"] for h in history]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.4))
    ax = axes[0, 0]
    ax.plot(it, _smooth([h["objective/scores"] for h in history]), label="proxy (rollouts)")
    ax.plot(curve["iteration"], curve["proxy"], "o-", label="proxy (held-out)")
    ax.plot(curve["iteration"], curve["gold"], "s-", label="gold (held-out)")
    ax.set_xlabel("iteration")
    ax.set_title("reward")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.plot(curve["kl"], curve["proxy"], "o-", label="proxy")
    ax.plot(curve["kl"], curve["gold"], "s-", label="gold")
    ax.set_xlabel("KL to SFT (nats per response)")
    ax.set_title("reward against KL")
    ax.legend(fontsize=8)
    ax = axes[0, 2]
    ax.plot(it, [h["objective/kl"] for h in history], label="KL (rollouts)")
    ax2 = ax.twinx()
    ax2.plot(it, [h["objective/kl_coef"] for h in history], color="C3", label="beta")
    ax2.set_ylabel("beta (KL coefficient)", color="C3")
    ax.set_xlabel("iteration")
    ax.set_title("objective/kl")
    ax = axes[1, 0]
    ax.plot(it, [h["policy/clipfrac"] for h in history])
    ax.set_xlabel("iteration")
    ax.set_title("policy/clipfrac")
    ax = axes[1, 1]
    ax.plot(it, [h["objective/entropy"] for h in history])
    ax.set_xlabel("iteration")
    ax.set_title("objective/entropy (nats per response)")
    ax = axes[1, 2]
    ax.plot(it, _smooth([h["loss/value"] for h in history]), label="loss/value")
    ax.plot(it, [h["response_length"] for h in history], label="response length (tokens)")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.legend(fontsize=8)
    for a in axes.flat:
        a.grid(alpha=0.3)
    return _finish(fig, path)


def dpo_training(history: dict, path=None):
    """DPO's logs: loss, implicit rewards of chosen and rejected (and the margin), log-probs."""
    s = history["step"]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(12, 3.4))
    a.plot(s, _smooth(history["loss"]))
    a.axhline(0.6931, ls=":", color="gray", label="ln 2 (policy = reference)")
    a.set_title("loss")
    a.legend(fontsize=8)
    b.plot(s, _smooth(history["rewards/chosen"]), label="rewards/chosen")
    b.plot(s, _smooth(history["rewards/rejected"]), label="rewards/rejected")
    b.plot(s, _smooth(history["rewards/margins"]), label="rewards/margins")
    b.axhline(0, color="gray", lw=0.8)
    b.set_title("implicit rewards  beta * log(pi / pi_ref)")
    b.legend(fontsize=8)
    c.plot(s, _smooth(history["logps/chosen"]), label="logps/chosen")
    c.plot(s, _smooth(history["logps/rejected"]), label="logps/rejected")
    c.set_title("sequence log-probs")
    c.legend(fontsize=8)
    for ax in (a, b, c):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return _finish(fig, path)
