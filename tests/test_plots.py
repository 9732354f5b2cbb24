"""The figures that take no run data: drawn with the Agg backend, saved, and holding what they
are meant to show."""

import matplotlib

matplotlib.use("Agg")

from minialign import plots  # noqa: E402


def test_alignment_pipelines_shows_both_routes(tmp_path):
    path = tmp_path / "pipelines.png"
    fig = plots.alignment_pipelines()
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    for word in ("RLHF", "DPO", "reward model", "preference", "SFT model", "no reward model"):
        assert word in texts, word
    # five arrows: demos, sample/label, to the reward model, reward, the DPO shortcut
    assert sum(1 for t in fig.axes[0].texts if getattr(t, "arrow_patch", None) is not None) == 5
    plots.alignment_pipelines(path)
    assert path.stat().st_size > 10_000


def test_judges_scatter_draws_responses_and_margins(tmp_path):
    import torch

    views = {"implicit": (torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 2.5, 1.0])),
             "reward model": (torch.tensor([0.5, 0.1, 0.9]), torch.tensor([0.2, 0.4, 0.3])),
             "gold": (torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 0.5, 0.0]))}
    fig = plots.judges_scatter(views)
    assert fig.axes[0].get_gridspec().get_geometry() == (2, 3)  # three duos, two rows
    titles = [ax.get_title() for ax in fig.axes]
    assert sum("pair margins" in t for t in titles) == 3 and all("ρ" in t for t in titles)
    assert len(fig.axes[0].collections[0].get_offsets()) == 6  # every response
    assert len(fig.axes[3].collections[0].get_offsets()) == 3  # every pair
    plots.judges_scatter(views, tmp_path / "judges.png")
    assert (tmp_path / "judges.png").stat().st_size > 10_000


def test_reward_vs_gold_shows_both_views_with_their_correlations(tmp_path):
    # two prompts whose levels differ: across prompts the scores disagree with gold, within each
    # prompt they agree perfectly, and the centred panel must say so
    rm = [5.0, 6.0, -6.0, -5.0]
    gold = [0.0, 1.0, 2.0, 3.0]
    prompts = ["p", "p", "q", "q"]
    fig = plots.reward_vs_gold(rm, gold, prompts, ["humor", "humor", "facts", "facts"])
    raw, centred = fig.axes[0].get_title(), fig.axes[1].get_title()
    assert "Spearman ρ = -0.60" in raw and "Pearson r = -0.85" in raw
    assert "Spearman ρ = +1.00" in centred and "Pearson r = +1.00" in centred
    assert len(fig.axes[0].collections) == 2  # one colour per family
    assert sorted(len(c.get_offsets()) for c in fig.axes[1].collections) == [2, 2]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["humor", "facts"]
    plots.reward_vs_gold(rm, gold, prompts, ["humor"] * 4, tmp_path / "rm_gold.png")
    assert (tmp_path / "rm_gold.png").stat().st_size > 10_000
