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
