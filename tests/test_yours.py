"""Train it with your code (minialign/course/yours.py): the diagnoses turn a run's metrics into
plain words, and a short run with the learner's functions sits beside the library's: the
solutions give the library's numbers, a planted bug is named, a failing function is reported
in words, and nothing is written into the course's run folder."""

import math

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from minialign import preferences, pretrain, sft  # noqa: E402
from minialign.course import impl  # noqa: E402
from minialign.course.markers import REPO_DIR  # noqa: E402
from minialign.course.yours import diagnose, train_with_your_code  # noqa: E402

DPO_H = ("h = (policy_chosen_logps - ref_chosen_logps) - "
         "(policy_rejected_logps - ref_rejected_logps)")  # the line of dpo_loss a bug is planted in


@pytest.fixture(autouse=True)
def back_to_the_library():
    yield
    impl.restore()


def problems(findings):
    return [f.text for f in findings if f.problem]


# ==============================================================================================
# diagnoses on hand-made metrics


def falling(start=2.0, end=1.0, n=50):
    return [start + (end - start) * i / (n - 1) for i in range(n)]


def dpo_metrics(accuracy=0.65, gold=0.5, sft_gold=0.3, loss=None, margin=0.4):
    return {"implicit_reward_accuracy": accuracy, "gold_reward_mean": gold,
            "sft_gold_reward_mean": sft_gold,
            "history": {"loss": loss or falling(0.693, 0.6),
                        "rewards/margins": falling(0.0, margin)}}


def test_a_dpo_that_prefers_the_rejected_answers_is_told_to_check_the_sign():
    found = problems(diagnose("dpo", dpo_metrics(accuracy=0.3)))
    assert len(found) == 1
    assert "less likely than the rejected ones on most held-out pairs" in found[0]
    assert "check the sign" in found[0] and "30%" in found[0]
    assert problems(diagnose("dpo", dpo_metrics(accuracy=0.65))) == []
    # the training pairs' margin went the wrong way: said once, with the library's margin
    found = problems(diagnose("dpo", dpo_metrics(accuracy=0.45, margin=-0.8), dpo_metrics()))
    assert len(found) == 1 and "on its training pairs" in found[0]
    assert "check the sign" in found[0] and "library's +0.3" in found[0]


def test_a_dpo_below_sft_and_a_loss_stuck_at_ln2_are_named():
    found = problems(diagnose("dpo", dpo_metrics(gold=0.1, loss=[math.log(2)] * 40)))
    assert any("worse than the SFT model's" in f for f in found)
    assert any("did not fall below ln 2" in f for f in found)


def test_a_check_the_library_fails_too_is_not_blamed_on_the_learner():
    # a run too short for the held-out accuracy to pass 50%, for the library's code as well
    library = dpo_metrics(accuracy=0.45)
    assert problems(diagnose("dpo", dpo_metrics(accuracy=0.3), library)) == []
    assert problems(diagnose("dpo", dpo_metrics(accuracy=0.3), dpo_metrics())) != []


def reward_metrics(accuracy=0.62, val_loss=0.64, gold=0.7):
    return {"val_accuracy": accuracy, "gold_pair_accuracy": gold,
            "history": {"train_loss": falling(0.69, 0.6), "val_loss": [math.log(2), val_loss]}}


def test_a_reward_model_ranking_the_rejected_higher_is_named():
    found = problems(diagnose("reward", reward_metrics(accuracy=0.3, val_loss=0.8, gold=0.3)))
    assert any("ranks the rejected answer higher on most held-out pairs" in f for f in found)
    assert any("disagrees with the gold reward" in f for f in found)
    assert problems(diagnose("reward", reward_metrics())) == []


def test_a_reward_model_that_scores_everything_the_same_is_not_called_reversed():
    found = problems(diagnose("reward", reward_metrics(accuracy=0.0, val_loss=math.log(2))))
    assert any("same score" in f for f in found)
    assert not any("ranks the rejected" in f for f in found)


def ppo_metrics(gold=(0.3, 0.5), proxy=(0.0, 0.4), kl=(0.0, 0.8)):
    return {"curve": {"iteration": [0, 8], "gold": list(gold), "proxy": list(proxy),
                      "kl": list(kl)}, "kl_to_ref": kl[-1], "gold_reward_mean": gold[-1]}


def test_a_ppo_whose_gold_fell_while_the_proxy_rose_is_named():
    found = problems(diagnose("ppo", ppo_metrics(gold=(0.3, 0.0), proxy=(0.0, 1.5),
                                                 kl=(0.0, 6.0)), ppo_metrics()))
    assert len(found) == 1
    assert "gold reward fell" in found[0] and "reward-model score rose" in found[0]
    assert "KL 6.00 nats, the library's 0.80" in found[0]
    found = problems(diagnose("ppo", ppo_metrics(proxy=(0.0, -0.5))))
    assert any("lowered the reward model's score" in f for f in found)
    assert problems(diagnose("ppo", ppo_metrics())) == []


def test_an_sft_loss_that_did_not_fall_is_named():
    flat = {"history": {"train_loss": [3.0] * 30}, "gold_reward_mean": -1.5,
            "pretrained_gold_reward_mean": -1.9, "end_rate": 0.9}
    found = problems(diagnose("sft", flat))
    assert len(found) == 1 and found[0].startswith("your SFT loss did not fall")
    never_ends = dict(flat, history={"train_loss": falling(4, 1)}, end_rate=0.0)
    assert any("rarely ends its turn" in f for f in problems(diagnose("sft", never_ends)))


def test_beside_the_library_the_same_numbers_close_numbers_and_worse_numbers_are_told_apart():
    mine = {"history": {"train_loss": falling(7, 3)}, "val_loss": 3.0}
    same = diagnose("pretrain", mine, dict(mine))
    assert problems(same) == [] and "exactly" in same[-1].text
    close = diagnose("pretrain", dict(mine, val_loss=3.05), mine)
    assert problems(close) == [] and "close" in close[-1].text
    worse = problems(diagnose("pretrain", dict(mine, val_loss=3.6), mine))
    assert len(worse) == 1 and "3.600, the library's 3.000" in worse[0]


# ==============================================================================================
# the short runs, on a tiny course run


@pytest.fixture(scope="module")
def course_run(tmp_path_factory):
    """pretrain -> sft -> preferences, tiny: what DPO starts from."""
    run_dir = tmp_path_factory.mktemp("course_run")
    quiet = lambda *_: None  # noqa: E731
    pretrain.train(pretrain.PretrainConfig.fast(max_steps=40, n_docs=1500), run_dir, log=quiet)
    sft.train(sft.SFTConfig.fast(n_demos=300), run_dir, log=quiet)
    preferences.train(preferences.PreferencesConfig.fast(n_prompts=64), run_dir, log=quiet)
    return run_dir


def snapshot(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


def planted(tmp_path, find, replace):
    text = (REPO_DIR / "solutions" / "ch06_dpo.py").read_text()
    assert text.count(find) == 1
    folder = tmp_path / "student"
    folder.mkdir(exist_ok=True)
    (folder / "ch06_dpo.py").write_text(text.replace(find, replace))
    return folder


def test_the_solutions_draw_the_library_s_curves_and_the_course_run_is_untouched(course_run,
                                                                                   tmp_path):
    before, lines = snapshot(course_run), []
    impl.use("solutions", log=lambda *_: None)  # set by the notebook: put back afterwards
    result = train_with_your_code("dpo", "solutions", run_dir=course_run, out=tmp_path,
                                  fast=True, log=lines.append)
    assert impl.current() is not None and impl.current().name == "solutions"
    assert snapshot(course_run) == before
    assert result.error is None and result.ok
    assert "ch06.dpo_loss" in result.record["student"]
    assert result.yours_dir == tmp_path / "dpo" and (tmp_path / "dpo/dpo/metrics.json").exists()
    assert result.yours["history"] == result.library["history"]
    assert "exactly" in result.findings[-1].text
    assert any("ch06.dpo_loss" in line for line in lines)
    fig = result.plot()
    assert [len(ax.lines) for ax in fig.axes[:2]] == [2, 2]  # yours and the library's
    assert len(fig.axes[2].patches) == 3  # SFT, the library's DPO, yours


def test_chosen_and_rejected_swapped_is_told_to_check_the_sign(course_run, tmp_path):
    folder = planted(tmp_path, DPO_H, DPO_H.replace("h = ", "h = -(") + ")")
    lines = []
    result = train_with_your_code("dpo", folder, run_dir=course_run, out=tmp_path / "runs",
                                  fast=True, log=lines.append, epochs=2, max_pairs=0)
    margins = [run["history"]["rewards/margins"][-1] for run in (result.yours, result.library)]
    assert margins[0] < 0 < margins[1]
    assert not result.ok
    assert any("less likely than the rejected ones" in f and "check the sign" in f
               for f in problems(result.findings))
    assert any("check the sign" in line for line in lines)  # printed, in words


def test_a_failing_function_is_reported_in_words_not_raised(course_run, tmp_path):
    folder = planted(tmp_path, DPO_H, DPO_H + "\n    raise ValueError('oops')")
    lines = []
    result = train_with_your_code("dpo", folder, run_dir=course_run, out=tmp_path / "runs",
                                  fast=True, log=lines.append)
    assert result.yours is None and not result.ok
    # named by the watched function it surfaced from (dpo_step calls its own file's dpo_loss),
    # with the file and the line
    assert result.error.startswith("ch06.") and "ValueError: oops" in result.error
    assert "ch06_dpo.py line" in result.error and "raise ValueError('oops')" in result.error
    assert any(line.startswith("  ✗ your code stopped the run: ch06.") for line in lines)
    assert result.library["implicit_reward_accuracy"] > 0  # the library's run is still drawn
    fig = result.plot()
    assert [len(ax.lines) for ax in fig.axes[:2]] == [1, 1]
    assert "not run" in fig._suptitle.get_text()


def test_nothing_written_yet_trains_only_the_library_s_run(course_run, tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    lines = []
    result = train_with_your_code("dpo", empty, run_dir=course_run, out=tmp_path / "runs",
                                  fast=True, log=lines.append)
    assert result.yours is None and result.error is None and result.record["student"] == []
    assert not (tmp_path / "runs" / "dpo").exists()
    assert any("none of your functions are written yet" in line for line in lines)
