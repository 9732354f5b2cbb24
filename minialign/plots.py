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
    """Lay out; save to `path` (and close, so that a stage run in a notebook does not also
    draw its figures inline) or return the open figure for display."""
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
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


def reward_vs_gold(rm_scores, gold, prompts, families, path=None,
                   title="the reward model against the gold reward (held-out SFT samples)"):
    """Each sample's reward-model score (x) against its gold reward (y), coloured by task family,
    in two panels: as scored, and both centred on their prompt's mean (reward.center_per_prompt),
    which removes each prompt's level, the one thing the Bradley-Terry loss never fixes. Each
    panel is titled with its Spearman and Pearson correlations. The gold reward takes few
    distinct values, so its points are spread up and down a little (jitter, ±0.04) to show how
    many sit on each."""
    import random

    from .reward import center_per_prompt, pearson, spearman

    views = [("as scored", list(rm_scores), list(gold)),
             ("centred on each prompt's mean", center_per_prompt(rm_scores, prompts),
              center_per_prompt(gold, prompts))]
    rng = random.Random(0)
    jitter = [rng.uniform(-0.04, 0.04) for _ in views[0][2]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, (name, xs, ys) in zip(axes, views):
        for i, family in enumerate(dict.fromkeys(families)):  # families in order of appearance
            idx = [j for j, f in enumerate(families) if f == family]
            ax.scatter([xs[j] for j in idx], [ys[j] + jitter[j] for j in idx], s=7, alpha=0.45,
                       color=f"C{i}", label=family)
        ax.set_title(f"{name}\nSpearman ρ = {spearman(xs, ys):+.2f}, "
                     f"Pearson r = {pearson(xs, ys):+.2f}", fontsize=10)
        centred = " − its prompt's mean" if ax is axes[1] else ""
        ax.set_xlabel("reward-model score (normalised)" + centred, fontsize=9)
        ax.set_ylabel("gold reward" + centred, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, markerscale=2)
    fig.suptitle(title, fontsize=11)
    return _finish(fig, path)


def _reward_over_iterations(ax, history: list, curve: dict, rollouts: str, held_out: str):
    """An RL stage's first panel: the rollouts' reward (smoothed) against iterations, and the
    reward model's and gold scores on the held-out prompts at each evaluation."""
    it = [h["iteration"] for h in history]
    ax.plot(it, _smooth([h["objective/scores"] for h in history]), label=rollouts)
    ax.plot(curve["iteration"], curve["proxy"], "o-", label=held_out)
    ax.plot(curve["iteration"], curve["gold"], "s-", label="gold (held-out)")
    ax.set_xlabel("iteration")
    ax.set_title("reward")
    ax.legend(fontsize=8)


def ppo_training(history: list, curve: dict, path=None):
    """PPO at a glance: proxy and gold reward against iterations and against KL; the KL, the
    clip fraction and the entropy of the policy."""
    it = [h["iteration"] for h in history]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.4))
    _reward_over_iterations(axes[0, 0], history, curve, "proxy (rollouts)", "proxy (held-out)")
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


def grpo_training(history: list, curve: dict, path=None):
    """GRPO at a glance: reward of the rollouts and gold on held-out prompts; gold against KL;
    the KL; the clip fractions; the fraction of groups with all-equal rewards; the response
    length (Dr. GRPO's question: does it grow?)."""
    it = [h["iteration"] for h in history]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.4))
    _reward_over_iterations(axes[0, 0], history, curve, "reward (rollouts)",
                            "reward model (held-out)")
    ax = axes[0, 1]
    ax.plot(curve["kl"], curve["gold"], "s-", label="gold")
    ax.plot(curve["kl"], curve["success"], "^-", label="task success")
    ax.set_xlabel("KL to SFT (nats per response)")
    ax.set_title("gold against KL")
    ax.legend(fontsize=8)
    panels = [("objective/kl", "objective/kl (nats per response)"),
              ("policy/clipfrac", "policy/clipfrac"),
              ("frac_reward_zero_std", "groups with all-equal rewards"),
              ("response_length", "response length (tokens)")]
    for ax, (key, title) in zip([axes[0, 2], axes[1, 0], axes[1, 1], axes[1, 2]], panels):
        ax.plot(it, [h.get(key, float("nan")) for h in history], label="all rollouts")
        ax.set_xlabel("iteration")
        ax.set_title(title)
    ax = axes[1, 2]
    for key, label in (("response_length/adv_pos", "advantage > 0"),
                       ("response_length/adv_neg", "advantage < 0")):
        if any(key in h for h in history):
            ax.plot(it, [h.get(key, float("nan")) for h in history], lw=0.8, label=label)
    ax.legend(fontsize=7)
    for a in axes.flat:
        a.grid(alpha=0.3)
    return _finish(fig, path)


def grpo_response_length(runs: dict, path=None, k=4):
    """Response length over training, one line per GRPO run: {name: {"history": per-iteration
    stats, "curve": held-out evaluations}}. Panels: all rollouts and the answers trained with
    a negative advantage (both smoothed over k iterations; every run of one seed samples the
    same prompts, so the runs are compared prompt for prompt), and the held-out prompts at each
    evaluation (the same prompts all along; absent from runs that predate it)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = [("response_length", "rollouts: mean length (tokens)"),
              ("response_length/adv_neg", "rollouts: answers with advantage < 0")]
    for i, (name, run) in enumerate(runs.items()):
        h = run["history"]
        for ax, (key, _) in zip(axes[:2], panels):
            points = [(r["iteration"], r[key]) for r in h if key in r]
            if points:
                ax.plot([p[0] for p in points], _smooth([p[1] for p in points], k),
                        color=f"C{i}", label=name)
        c = run["curve"]
        if c.get("length"):
            axes[2].plot(c["iteration"], c["length"], "o-", color=f"C{i}", label=name)
    for ax, (_, title) in zip(axes, panels + [(None, "held-out prompts (tokens)")]):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[0].set_ylabel(f"tokens (mean of {k} iterations)")
    return _finish(fig, path)


def grpo_reward_sources(curves: dict, path=None):
    """One GRPO run per reward source ({source: its held-out `curve`}): the reward model's
    score (proxy), the gold reward and the task success on held-out prompts during training.
    A source that is hacked shows its proxy rising while gold falls."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharex=True)
    for i, (source, c) in enumerate(curves.items()):
        for ax, key in zip(axes, ("proxy", "gold", "success")):
            ax.plot(c["iteration"], c[key], "o-", color=f"C{i}", label=f"reward: {source}")
    titles = ("reward model's score (proxy)", "gold reward", "task success")
    for ax, title in zip(axes, titles):
        ax.set_title(f"{title}, held-out", fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
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


def best_of_n(by_n: dict, path=None):
    """Best-of-N: proxy and gold reward against N (log scale) and against the KL bound."""
    ns = sorted(int(n) for n in by_n)
    proxy = [by_n[str(n)]["proxy_reward_mean"] for n in ns]
    gold = [by_n[str(n)]["gold_reward_mean"] for n in ns]
    kl = [by_n[str(n)]["kl_bound"] for n in ns]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(ns, proxy, "o-", label="proxy (reward model)")
    a.plot(ns, gold, "s-", label="gold")
    a.set_xscale("log", base=2)
    a.set_xlabel("N")
    a.set_title("best-of-N")
    b.plot(kl, proxy, "o-", label="proxy")
    b.plot(kl, gold, "s-", label="gold")
    b.set_xlabel("KL bound  log N - (N-1)/N  (nats)")
    for ax in (a, b):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return _finish(fig, path)


def attention_heatmap(att, tokens: list[str], path=None, title="attention", ncols=3):
    """Attention probabilities as heatmaps: row = query token, column = key token it reads.

    att: (T, T) for one head or (H, T, T) for several (a tensor or an array), one panel per
    head, `ncols` panels per row; tokens: the T token strings (e.g.
    `tokenizer.token_strings(ids)`). Each row sums to 1; the future (above the diagonal),
    which a causal model cannot see, is left white.
    """
    import numpy as np

    att = np.asarray(att.detach().cpu() if hasattr(att, "detach") else att, dtype=float)
    if att.ndim == 2:
        att = att[None]
    if att.ndim != 3 or att.shape[1] != att.shape[2] or att.shape[1] != len(tokens):
        raise ValueError(f"att must be (T, T) or (H, T, T) with T = len(tokens) = {len(tokens)}, "
                         f"got shape {att.shape}")
    H, T = att.shape[0], len(tokens)
    cols = min(ncols, H)
    rows = -(-H // cols)
    side = min(4.5, 1.2 + 0.2 * T)
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, side * rows), squeeze=False)
    labels = [repr(t)[1:-1].replace(" ", "·") for t in tokens]  # show spaces and newlines
    future = np.triu(np.ones((T, T)), 1) > 0
    for h, ax in enumerate(axes.flat):
        if h >= H:
            ax.axis("off")
            continue
        ax.imshow(np.ma.masked_where(future, att[h]), cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(T), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(T), labels if h % cols == 0 else [""] * T, fontsize=7)
        ax.set_title(f"{title} · head {h}" if H > 1 else title, fontsize=9)
    fig.supxlabel("key (the token attended to)", fontsize=9)
    fig.supylabel("query (the token attending)", fontsize=9)
    return _finish(fig, path)


def token_boxes(tokens: list[str], path=None, title=None, colors=None, width_in=9.0):
    """A piece of text drawn as its tokens: one colored box per token, wrapped into lines.

    tokens: token strings (e.g. `tokenizer.token_strings(ids)`); spaces are drawn as '·' and
    newlines as '⏎' so that the boundaries are visible. colors: optional list of matplotlib
    colors (one per token); by default neighbours alternate through a pale palette and
    special tokens (<|...|>) are grey. width_in: figure width in inches (lines wrap there).
    """
    shown = [t.replace(" ", "·").replace("\n", "⏎") or "∅" for t in tokens]
    if colors is None:
        palette = ["#cfe3f7", "#fde2c4", "#d5efcf", "#f6d0d8", "#e4d9f2", "#fbf3c2"]
        colors = [("#d9d9d9" if t.startswith("<|") and t.endswith("|>") else
                   palette[i % len(palette)]) for i, t in enumerate(tokens)]
    if len(colors) != len(tokens):
        raise ValueError(f"colors has {len(colors)} entries for {len(tokens)} tokens")
    style = dict(family="monospace", fontsize=10, va="center", ha="left")
    box = dict(boxstyle="round,pad=0.25", ec="#888888", lw=0.5)
    # pass 1: measure each token's width (inches) on a scratch figure
    scratch = plt.figure()
    renderer = scratch.canvas.get_renderer()
    widths = [scratch.text(0, 0, s, **style).get_window_extent(renderer).width / scratch.dpi
              for s in shown]
    plt.close(scratch)
    # pass 2: wrap into lines, then draw with positions in inches
    gap, margin, line_h = 0.12, 0.1, 0.36
    rows, x, row = [], margin, 0
    for w in widths:
        if x + w > width_in - margin and x > margin:
            x, row = margin, row + 1
        rows.append((x, row))
        x += w + gap
    top = 0.34 if title else 0.12
    height = top + (row + 1) * line_h + 0.1
    fig = plt.figure(figsize=(width_in, height))
    fig.add_axes((0, 0, 1, 1)).axis("off")  # an empty axes: notebooks render figures that have one
    for s, c, (x, r) in zip(shown, colors, rows):
        fig.text(x, height - top - (r + 0.5) * line_h, s, transform=fig.dpi_scale_trans,
                 bbox=dict(box, fc=c), **style)
    if title:
        fig.text(margin, height - 0.14, title, transform=fig.dpi_scale_trans, fontsize=10,
                 va="center")
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


# the gold reward's components (world.gold_breakdown): each 0 or a penalty, helpful up to 1
GOLD_COMPONENTS = ("helpful", "harmless", "honest", "concise", "polite", "ending")


def reward_components(breakdowns: list[dict], labels: list[str], path=None,
                      title="gold reward, component by component"):
    """Horizontal stacked bars of the gold reward's components (world.gold_breakdown), one bar
    per response; positive parts stack to the right of 0, penalties to the left, and a black
    diamond marks the total."""
    import numpy as np

    if len(breakdowns) != len(labels):
        raise ValueError(f"{len(breakdowns)} breakdowns but {len(labels)} labels")
    n = len(breakdowns)
    fig, ax = plt.subplots(figsize=(10, 0.36 * n + 1.6))
    y = np.arange(n)[::-1]
    pos = np.zeros(n)
    neg = np.zeros(n)
    for c, name in enumerate(GOLD_COMPONENTS):
        vals = np.array([b[name] for b in breakdowns], dtype=float)
        left = np.where(vals >= 0, pos, neg + vals)
        ax.barh(y, np.abs(vals), left=left, color=f"C{c}", label=name, height=0.6)
        pos += np.clip(vals, 0, None)
        neg += np.clip(vals, None, 0)
    ax.scatter([b["total"] for b in breakdowns], y, marker="D", color="black", zorder=3,
               label="total")
    ax.axvline(0, color="gray", lw=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("gold reward")
    ax.set_xlim(min(-1.0, neg.min()) - 0.15, 1.15)
    ax.legend(fontsize=8, ncol=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False,
              title=title, title_fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _finish(fig, path)


def frontier(points: dict, path=None, title="gold reward against KL to the SFT model",
             faint=(), colors: dict | None = None):
    """The reward-KL frontier: one line of (KL, gold, label) points per method.

    A None among a method's points breaks its line (several runs in one series). faint: names
    of series drawn thin and pale, without labels (a bound, training curves); colors: optional
    {name: matplotlib color} (default: C0, C1, ... in order)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, (name, pts) in enumerate(points.items()):
        if not pts:
            continue
        nan = float("nan")
        xs = [p[0] if p is not None else nan for p in pts]
        ys = [p[1] if p is not None else nan for p in pts]
        color = (colors or {}).get(name) or f"C{i}"
        if name in faint:
            ax.plot(xs, ys, "-", marker=".", ms=3, lw=0.8, alpha=0.35, label=name, color=color,
                    zorder=1)
            continue
        ax.plot(xs, ys, "-" if len(pts) > 1 else "", marker="*" if name == "SFT" else "o",
                ms=12 if name == "SFT" else 5, label=name, color=color, zorder=2)
        for p in pts:
            if p is not None and p[2] and len(pts) <= 8:
                ax.annotate(p[2], (p[0], p[1]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
    ax.set_xlabel("KL(policy || SFT)  (nats per response)")
    ax.set_ylabel("gold reward (held-out prompts)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path)


# the series of compare.frontier_points drawn thin and pale: a bound, training curves
FRONTIER_FAINT = ("best-of-N (KL bound)", "PPO (during training)")


def method_color(name: str):
    """One colour per method wherever the methods are drawn side by side (a series name such as
    "PPO (during training)" takes its method's); None for any other name."""
    return ("black" if name == "SFT" else "C0" if name.startswith("best-of-N")
            else "C1" if name.startswith("PPO") else "C2" if name.startswith("DPO")
            else "C3" if name.startswith("GRPO") else None)


def reward_kl_frontier(points: dict, path=None):
    """The frontier of compare.frontier_points: one colour per method, the best-of-N bound and
    PPO's training curves faint."""
    return frontier(points, path, faint=FRONTIER_FAINT,
                    colors={name: method_color(name) for name in points})


def grouped_bars(values: dict, path=None, title=None, ylabel=None, ylim=None, hline=None,
                 hline_label=None):
    """Grouped bars from a dict of series: values[series][group] -> number. One group of bars
    per key of the first series (in its order), one bar (and color) per series; hline draws a
    dotted reference line (e.g. 0.5 for chance)."""
    import numpy as np

    if not values:
        raise ValueError("no series to draw")
    groups = list(next(iter(values.values())))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) + 2), 3.6))
    width = 0.8 / len(values)
    x = np.arange(len(groups))
    for i, (name, series) in enumerate(values.items()):
        ax.bar(x + i * width - 0.4 + width / 2, [series[g] for g in groups], width, label=name)
    if hline is not None:
        ax.axhline(hline, ls=":", color="gray", label=hline_label)
    ax.set_xticks(x, groups, rotation=20 if max(len(g) for g in groups) > 12 else 0,
                  ha="right" if max(len(g) for g in groups) > 12 else "center", fontsize=8)
    if ylabel:
        ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, path)


def seed_noise(rows: dict, path=None):
    """One dot per run of the same PPO with another seed: gold reward and win rate against SFT,
    with their mean and +- one standard deviation across the runs."""
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.0))
    for ax, key, label in [(axes[0], "gold", "gold reward"),
                           (axes[1], "win_rate", "win rate vs SFT")]:
        xs = np.array([r[key] for r in rows.values()])
        ax.scatter(xs, np.zeros_like(xs), s=40, color=method_color("PPO"), zorder=3)
        for x, r in zip(xs, rows.values()):
            ax.annotate(f"seed {r['seed']}", (x, 0), textcoords="offset points", xytext=(0, 8),
                        ha="center", fontsize=7, rotation=60)
        std = xs.std(ddof=1) if len(xs) > 1 else 0.0
        ax.axvspan(xs.mean() - std, xs.mean() + std, color="gray", alpha=0.2,
                   label="mean ± 1 std")
        ax.axvline(xs.mean(), color="gray", lw=1)
        ax.set_yticks([])
        ax.set_ylim(-0.5, 1)
        ax.set_xlabel(label)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"the same PPO run with {len(rows)} seeds: the noise between runs", fontsize=10)
    return _finish(fig, path)


def pretrain_length(rows: list[dict], path=None, default_steps=None):
    """SFT against pretraining length (pretrain_length.length_row, one per length): the SFT
    model's held-out task success (± one standard error) and the pretrained model's validation
    loss, against millions of pretraining tokens; the default length marked."""
    tokens = [r["tokens"] / 1e6 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.0))
    axes[0].errorbar(tokens, [r["sft_success"] for r in rows],
                     yerr=[r["sft_success_se"] for r in rows], marker="o", capsize=3)
    axes[0].set_ylabel("SFT task success (held-out)")
    axes[1].plot(tokens, [r["val_loss"] for r in rows], marker="o")
    axes[1].set_ylabel("pretraining validation loss")
    for ax in axes:
        ax.set_xlabel("pretraining tokens (millions)")
        for r, x in zip(rows, tokens):
            if r["steps"] == default_steps:
                ax.axvline(x, color="gray", ls=":", lw=1, label=f"default ({r['steps']} steps)")
                ax.legend(fontsize=8)
    fig.suptitle("how much pretraining SFT needs", fontsize=10)
    return _finish(fig, path)


def labeler_agreement(labelers: dict, path=None):
    """RLAIF's labelers side by side (experiments.rlaif's "labelers"): per family, how often
    each labeler's training labels, and its own preference, agree with the gold reward."""
    return grouped_bars(
        {f"{name} (labels)": lab["labels"] for name, lab in labelers.items()}
        | {f"{name} (its preference)": lab["labeler"] for name, lab in labelers.items()},
        path, title="training labels that agree with the gold reward, per family",
        ylabel="agreement with gold", ylim=(0, 1.5), hline=0.5, hline_label="chance")


def ppo_ablation(runs: dict, sft_gold=None, path=None,
                 title="PPO with one implementation detail switched at a time"):
    """PPO variants side by side. runs: {variant name: the metrics of its stage (ppo.train)}.

    Top row, one bar per variant: the final gold reward, proxy reward (normalised reward-model
    score) and KL to the SFT model on the held-out prompts. Bottom row, against iterations: the
    gold reward of the periodic evaluations, and the KL and value loss of the rollouts
    (smoothed). sft_gold, the SFT model's gold reward: the gold bars then show the change from
    it, and the gold curves a dotted line at it.
    """
    import numpy as np

    if not runs:
        raise ValueError("no runs to draw")
    names = list(runs)
    colors = [f"C{i}" for i in range(len(names))]
    x = np.arange(len(names))
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.2))
    shift = sft_gold if sft_gold is not None else 0.0  # gold bars: the change from SFT
    finals = [("gold_reward_mean", "final gold reward (held-out)" if sft_gold is None else
               "final gold reward minus SFT's (held-out)"),
              ("proxy_reward_mean", "final proxy reward (held-out)"),
              ("kl_to_ref", "final KL to SFT (nats per response)")]
    for ax, (key, label) in zip(axes[0], finals):
        ax.bar(x, [runs[n][key] - (shift if key == "gold_reward_mean" else 0.0) for n in names],
               color=colors)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xticks(x, names, rotation=25, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
    if sft_gold is not None:
        axes[1, 0].axhline(sft_gold, ls=":", color="black", label="SFT")
        axes[1, 0].legend(fontsize=7)
    for name, color in zip(names, colors):
        history, curve = runs[name]["history"], runs[name]["curve"]
        it = [h["iteration"] for h in history]
        axes[1, 0].plot(curve["iteration"], curve["gold"], "o-", color=color, ms=4, label=name)
        axes[1, 1].plot(it, _smooth([h["objective/kl"] for h in history], 5), color=color,
                        label=name)
        axes[1, 2].plot(it, _smooth([h["loss/value"] for h in history], 5), color=color,
                        label=name)
    axes[1, 0].set_title("gold reward (held-out)", fontsize=10)
    axes[1, 1].set_title("objective/kl (rollouts, smoothed)", fontsize=10)
    axes[1, 2].set_title("loss/value (smoothed)", fontsize=10)
    axes[1, 2].set_yscale("log")
    axes[1, 1].legend(fontsize=7)
    for ax in axes[1]:
        ax.set_xlabel("iteration")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return _finish(fig, path)


def dpo_beta_sweep(runs: dict, sft_gold=None, path=None, title="DPO with several beta"):
    """DPO trained with several beta. runs: {beta: the metrics of its stage (dpo.train)}.

    Panels: gold reward and KL to the SFT model (held-out prompts) against beta (log scale);
    the logged margin rewards/margins = beta * h against step; and h itself, the log-ratio
    margin (log pi/pi_ref of the chosen minus that of the rejected, nats), against step.
    """
    if not runs:
        raise ValueError("no runs to draw")
    betas = sorted(runs)
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    a, b, c, d = axes
    a.plot(betas, [runs[x]["gold_reward_mean"] for x in betas], "o-", label="DPO")
    if sft_gold is not None:
        a.axhline(sft_gold, ls=":", color="black", label="SFT")
    a.set_title("gold reward (held-out)", fontsize=10)
    a.legend(fontsize=8)
    b.plot(betas, [runs[x]["kl_to_ref"] for x in betas], "o-", color="C1")
    b.set_title("KL to SFT (nats per response)", fontsize=10)
    for ax in (a, b):
        ax.set_xscale("log")
        ax.set_xlabel("beta")
    for i, beta in enumerate(betas):
        h = runs[beta]["history"]
        c.plot(h["step"], _smooth(h["rewards/margins"]), color=f"C{i}", label=f"beta = {beta}")
        d.plot(h["step"], _smooth([m / beta for m in h["rewards/margins"]]), color=f"C{i}",
               label=f"beta = {beta}")
    c.set_title("rewards/margins = beta * h (smoothed)", fontsize=10)
    d.set_title("h = log-ratio margin, nats (smoothed)", fontsize=10)
    for ax in (c, d):
        ax.set_xlabel("step")
        ax.axhline(0, color="gray", lw=0.8)
        ax.legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return _finish(fig, path)


def judges_scatter(views: dict, path=None, title="three judges of the same held-out pairs"):
    """Every two judges of the same preference pairs against each other (dpo.reward_views:
    {name: (chosen (N,), rejected (N,))}), each panel titled with the rank correlation.

    Top row: the raw scores of every response (2N points), where DPO's implicit reward carries
    a constant per prompt; bottom row: each pair's margin, chosen minus rejected (N points),
    where that constant cancels: the comparison that means something."""
    from .reward import spearman

    names = list(views)
    duos = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    if not duos:
        raise ValueError("need at least two judges")
    fig, axes = plt.subplots(2, len(duos), figsize=(4.2 * len(duos), 7.2), squeeze=False)
    for j, (a, b) in enumerate(duos):
        for row, (kind, xs, ys) in enumerate([
                ("responses", [*views[a][0].tolist(), *views[a][1].tolist()],
                 [*views[b][0].tolist(), *views[b][1].tolist()]),
                ("pair margins", (views[a][0] - views[a][1]).tolist(),
                 (views[b][0] - views[b][1]).tolist())]):
            ax = axes[row, j]
            ax.scatter(xs, ys, s=7, alpha=0.35, color=f"C{row}")
            ax.set_xlabel(a + (" (chosen − rejected)" if row else ""), fontsize=9)
            ax.set_ylabel(b + (" (chosen − rejected)" if row else ""), fontsize=9)
            ax.set_title(f"{kind}: Spearman ρ = {spearman(xs, ys):+.2f}", fontsize=10)
            if row:
                ax.axhline(0, color="gray", lw=0.8)
                ax.axvline(0, color="gray", lw=0.8)
            ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return _finish(fig, path)


def overoptimization(panels: dict, path=None,
                     title="over-optimisation: the proxy keeps rising, the gold reward need not"):
    """Gold and proxy reward as optimisation pressure grows (Gao et al. 2022), one panel per
    method, against d = sqrt(KL to the starting policy).

    panels: {title: {"kl": [...], "gold": [...], "proxy": [...], and optionally "labels": [...]
    (one per point, e.g. "N=16"), "fit": {"d": [...], "gold": [...], "label": str} (a fitted
    curve, e.g. experiments.fit_gao's), "kl_kind": what the KL is}}. Gold on the left axis with
    the fitted curve dashed; the proxy (normalised reward-model score) on the right axis.
    """
    import numpy as np

    if not panels:
        raise ValueError("no panels to draw")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (name, p) in zip(axes[0], panels.items()):
        d = np.sqrt(np.clip(np.asarray(p["kl"], dtype=float), 0, None))
        ax.plot(d, p["gold"], "s-", color="C1", ms=4, label="gold")
        if p.get("fit"):
            ax.plot(p["fit"]["d"], p["fit"]["gold"], "--", color="C1", alpha=0.7,
                    label=p["fit"].get("label", "fit"))
        labels = p.get("labels") or []
        if len(labels) <= 10:
            for x, y, label in zip(d, p["gold"], labels):
                ax.annotate(label, (x, y), fontsize=6, xytext=(2, -8), textcoords="offset points")
        ax.set_xlabel("sqrt(KL)" + (f"  (KL: {p['kl_kind']})" if p.get("kl_kind") else ""),
                      fontsize=8)
        ax.set_ylabel("gold reward", color="C1")
        ax2 = ax.twinx()
        ax2.plot(d, p["proxy"], "o-", color="C0", ms=4, label="proxy (reward model)")
        ax2.set_ylabel("proxy: reward-model score (normalised)", color="C0", fontsize=8)
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="best")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return _finish(fig, path)


def prm_best_of_n(methods: dict, path=None,
                  title="best-of-N on held-out chained sums: process vs outcome supervision"):
    """Gold final-answer accuracy of the pick against N (log scale), one line per selection
    rule, with ±1 standard error bands. methods: {name: {"n": [...], "accuracy": [...],
    "se": [...]}} (prm.best_of_n_table's "methods"); "oracle" (a right answer among the N)
    is drawn dashed, as the ceiling any selection rule could reach."""
    import numpy as np

    if not methods:
        raise ValueError("no selection rules to draw")
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, (name, m) in enumerate(methods.items()):
        n, acc, se = (np.asarray(m[k], dtype=float) for k in ("n", "accuracy", "se"))
        style = dict(ls="--", color="gray") if name == "oracle" else dict(color=f"C{i}")
        ax.plot(n, acc, marker="o", ms=3, label=name, **{"ls": "-", **style})
        ax.fill_between(n, acc - se, acc + se, alpha=0.15, color=style["color"])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("N (solutions sampled per problem)")
    ax.set_ylabel("gold accuracy of the picked answer")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _finish(fig, path)


def alignment_pipelines(path=None):
    """The two ways from a supervised model to a preference-aligned one, drawn side by side.

    Top row, RLHF: the preference data trains a reward model, which stands in for the human
    while PPO (or GRPO) samples from the policy and optimises against it. Bottom row, DPO: the
    same preference data updates the policy directly, with no reward model and no sampling
    during training. Both keep the policy near the SFT model (the reference): PPO through a KL
    penalty on its rewards, DPO through the log-ratio inside its loss.
    """
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 3.6)
    ax.axis("off")
    box = dict(boxstyle="round,pad=0.35", lw=1.0)

    def node(x, y, text, color):
        ax.text(x, y, text, ha="center", va="center", fontsize=9.5, bbox=dict(box, fc=color))

    def arrow(x0, y0, x1, y1, label=None, dy=0.16):
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops=dict(arrowstyle="->", lw=1.2, color="#444444"))
        if label:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + dy, label, ha="center", fontsize=8,
                    color="#444444")

    grey, blue, orange, green = "#e6e6e6", "#cfe3f7", "#fde2c4", "#d5efcf"
    node(0.75, 1.8, "pretrained\nGPT", grey)
    node(2.35, 1.8, "SFT model\n(reference)", grey)
    node(4.15, 1.8, "preference\ndata\n(rankings)", grey)
    arrow(1.3, 1.8, 1.75, 1.8, "demos")
    arrow(2.95, 1.8, 3.5, 1.8, "sample,\nlabel", dy=0.25)
    # RLHF: a reward model, then RL with sampling inside the loop
    node(5.9, 2.95, "reward model\n(Bradley-Terry)", orange)
    node(8.3, 2.95, "PPO / GRPO\npolicy", blue)
    arrow(4.6, 2.2, 5.2, 2.75)
    arrow(6.65, 2.95, 7.55, 2.95, "reward")
    ax.text(8.3, 2.3, "samples during training;\nKL penalty to the reference",
            ha="center", fontsize=8, color="#444444")
    ax.text(0.1, 3.4, "RLHF", fontsize=11, weight="bold", color="#b35900")
    # DPO: the preference data updates the policy directly
    node(8.3, 0.7, "DPO\npolicy", green)
    arrow(4.6, 1.4, 7.65, 0.8, "classification loss on the pairs", dy=-0.35)
    ax.text(8.3, 0.1, "no reward model, no sampling;\nlog-ratio to the reference",
            ha="center", fontsize=8, color="#444444")
    ax.text(0.1, 0.25, "DPO", fontsize=11, weight="bold", color="#2e7d32")
    return _finish(fig, path)


# the figure of "train it with your code" (course/yours.py): stage -> its curve panels
# (title, x key, y key, smoothed), then its result panel (bars) where it has one
YOURS_CURVES = {
    "pretrain": [("training loss", "history.step", "history.train_loss", True),
                 ("validation loss", "history.val_step", "history.val_loss", False)],
    "sft": [("training loss (response tokens)", "history.step", "history.train_loss", True),
            ("validation loss", "history.val_step", "history.val_loss", False)],
    "reward": [("training loss (Bradley-Terry)", "history.step", "history.train_loss", True),
               ("training accuracy (top answer above the second)", "history.step",
                "history.train_accuracy", True)],
    "ppo": [("reward-model score (held-out)", "curve.iteration", "curve.proxy", False),
            ("gold reward (held-out)", "curve.iteration", "curve.gold", False),
            ("KL to SFT (nats per response)", "curve.iteration", "curve.kl", False)],
    "dpo": [("loss", "history.step", "history.loss", True),
            ("implicit reward margin (chosen - rejected)", "history.step",
             "history.rewards/margins", True)],
}
YOURS_RESULT = {  # stage -> (title, [(name, key)], the start's (name, key) or None)
    "sft": ("gold reward (held-out prompts)", [("", "gold_reward_mean")],
            ("pretrained", "pretrained_gold_reward_mean")),
    "reward": ("held-out pairs ordered right (by labels, by gold)",
               [("labels", "val_accuracy"), ("gold", "gold_pair_accuracy")], None),
    "dpo": ("gold reward (held-out prompts)", [("", "gold_reward_mean")],
            ("SFT", "sft_gold_reward_mean")),
}


def _get(metrics: dict, dotted: str):
    group, key = dotted.split(".", 1)
    return metrics[group][key]


def _yours_vs_library_bars(ax, result, yours: dict | None, library: dict):
    """The result panel: the start (if any), then the library's and your value of each key."""
    title, keys, start = result
    bars = [(start[0], library[start[1]], "0.8")] if start else []
    for name, key in keys:
        bars.append((f"library\n{name}".strip(), library[key], "0.45"))
        if yours is not None:
            bars.append((f"yours\n{name}".strip(), yours[key], "C1"))
    ax.bar(range(len(bars)), [b[1] for b in bars], color=[b[2] for b in bars])
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    for i, (_, value, _) in enumerate(bars):
        ax.text(i, value, f"{value:+.2f}" if start else f"{value:.0%}", ha="center",
                va="bottom" if value >= 0 else "top", fontsize=9)
    if not start:  # accuracies
        ax.axhline(0.5, ls=":", color="gray", label="chance")
        ax.legend(fontsize=8, loc="lower right")
        ax.set_ylim(0, 1.05)
    else:
        ax.margins(y=0.15)  # room for the numbers
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")


def yours_vs_library(stage: str, yours: dict | None, library: dict, path=None, note=""):
    """Your short run of a stage (orange) beside the library's run of the same configuration
    and seed (grey): its curves, and the gold reward (or what stands for it) it ends with.
    yours: None when your run did not happen (note says why)."""
    curves, result = YOURS_CURVES[stage], YOURS_RESULT.get(stage)
    fig, axes = plt.subplots(1, len(curves) + bool(result),
                             figsize=(4.2 * (len(curves) + bool(result)), 3.5), squeeze=False)
    runs = [("library (same short run)", library, dict(color="0.45", lw=2.2, alpha=0.8))]
    if yours is not None:
        runs.append(("yours", yours, dict(color="C1", lw=1.3)))
    for ax, (title, x, y, smooth) in zip(axes[0], curves):
        for label, metrics, style in runs:
            values = _get(metrics, y)
            ax.plot(_get(metrics, x), _smooth(values) if smooth else values,
                    "-" if smooth else "o-", ms=3, label=label, **style)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("iteration" if x.startswith("curve") else "step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if result:
        _yours_vs_library_bars(axes[0, -1], result, yours, library)
    fig.suptitle(f"{stage}: your code against the library's, same short configuration and seed"
                 + (f"\nyours {note}" if note else ""), fontsize=10)
    return _finish(fig, path)
