"""Training with the learner's own functions (`--impl`, `minialign.course.use`): the wiring is
real, unwritten functions fall back with a line each, a broken function stops the stage with a
message naming it, the solutions reproduce the library's run bit for bit, and a planted bug
changes the stage's result in the expected direction."""

import json
import shutil

import pytest
import torch

from minialign import dpo, model, ppo, preferences, pretrain, reward, sft
from minialign.course import impl
from minialign.course.markers import REPO_DIR, find_exercises

SOLUTIONS = REPO_DIR / "solutions"
DPO_FILE = "ch06_dpo.py"
DPO_H = "h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)"


@pytest.fixture(autouse=True)
def back_to_the_library():
    yield
    impl.restore()


def student_folder(tmp_path, filename, find="", replace=""):
    """A folder holding one chapter file: the solution, with `find` replaced."""
    text = (SOLUTIONS / filename).read_text()
    assert text.count(find) == 1, "the planted bug's snippet must occur exactly once"
    folder = tmp_path / "student"
    folder.mkdir(exist_ok=True)
    (folder / filename).write_text(text.replace(find, replace))
    return folder


def test_untouched_exercises_fall_back_with_one_line_each():
    lines = []
    active = impl.use("exercises", log=lines.append)
    ids = [e.id for e in find_exercises()]
    assert active.record()["student"] == []
    assert set(active.record()["library"]) == set(ids)
    for exercise_id in ids:
        assert sum(line.startswith(f"{exercise_id}: not written yet") for line in lines) == 1
    assert dpo.dpo_loss.__module__ == "minialign.dpo" and not hasattr(dpo.dpo_loss, "__wrapped__")


def test_written_functions_replace_the_library_everywhere_and_restore_puts_it_back():
    original = model.gather_logprobs
    impl.use("solutions", log=lambda *_: None)
    # rebound in the defining module and in every module that imported the name
    for module in (model, ppo):
        assert module.gather_logprobs is not original
        assert module.gather_logprobs.__wrapped__ is original
    # evaluate and dpo score responses through model.logprobs_of_responses, which calls the
    # model module's sequence_logprobs (and so the learner's)
    assert model.sequence_logprobs.__wrapped__.__module__ == "minialign.model"
    assert ppo.AdaptiveKLController.update.__wrapped__.__qualname__ == \
        "AdaptiveKLController.update"
    impl.restore()
    assert model.gather_logprobs is original and ppo.gather_logprobs is original


def test_a_planted_bug_is_the_function_the_library_calls(tmp_path):
    folder = student_folder(tmp_path, DPO_FILE, DPO_H, DPO_H.replace("h = ", "h = -(") + ")")
    impl.use(folder, log=lambda *_: None)
    chosen, rejected, zero = torch.tensor([1.0]), torch.tensor([-1.0]), torch.zeros(1)
    losses, rc, rr = dpo.dpo_loss(chosen, rejected, zero, zero, beta=1.0)
    assert losses.item() == pytest.approx(torch.nn.functional.softplus(torch.tensor(2.0)).item())
    assert rc.item() == pytest.approx(1.0)  # implicit rewards still the student's own, unchanged


def test_a_raising_function_stops_with_its_name_and_line(tmp_path):
    folder = student_folder(tmp_path, DPO_FILE, DPO_H, DPO_H + "\n    raise ValueError('oops')")
    impl.use(folder, log=lambda *_: None)
    with pytest.raises(impl.StudentCodeError, match=r"ch06\.dpo_loss .*ValueError: oops") as e:
        dpo.dpo_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2))
    assert "ch06_dpo.py line" in str(e.value) and "raise ValueError('oops')" in str(e.value)


def test_a_wrong_shape_or_nan_is_named(tmp_path):
    folder = student_folder(tmp_path, DPO_FILE, "    losses = -F.logsigmoid(beta * h)",
                            "    losses = -F.logsigmoid(beta * h).mean()")
    impl.use(folder, log=lambda *_: None)
    with pytest.raises(impl.StudentCodeError, match=r"ch06\.dpo_loss .*shape \(\)"):
        dpo.dpo_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2))

    folder = student_folder(tmp_path, DPO_FILE, "    losses = -F.logsigmoid(beta * h)",
                            "    losses = -F.logsigmoid(beta * h) * h / h")  # 0/0 at h = 0
    impl.use(folder, log=lambda *_: None)
    dpo.dpo_loss(torch.ones(2), torch.zeros(2), torch.zeros(2), torch.zeros(2))  # fine here
    with pytest.raises(impl.StudentCodeError, match=r"ch06\.dpo_loss .*produced nan"):
        dpo.dpo_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2))


def test_an_unwritten_function_called_at_run_time_falls_back(tmp_path):
    folder = student_folder(tmp_path, DPO_FILE, DPO_H,
                            "if beta > 5:\n        raise NotImplementedError\n    " + DPO_H)
    lines = []
    impl.use(folder, log=lines.append)
    z = torch.zeros(2)
    dpo.dpo_loss(z, z, z, z, beta=10.0)
    assert any(line.startswith("ch06.dpo_loss: not written yet") for line in lines)
    assert "ch06.dpo_loss" in impl.current().record()["library"]


def test_a_wrong_attention_makes_the_model_run_it(tmp_path):
    wrong = "    att = F.softmax(att, dim=-1)"
    folder = student_folder(tmp_path, "ch02_gpt.py", wrong, wrong.replace("-1", "-2"))
    lines = []
    impl.use(folder, log=lines.append)
    assert model.FORCE_HAND_WRITTEN_ATTENTION
    assert any("yours differs from the fused attention kernel" in line for line in lines)
    impl.restore()
    assert not model.FORCE_HAND_WRITTEN_ATTENTION


# ==============================================================================================
# the stages, trained with a learner's code


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """pretrain -> sft -> preferences -> reward, tiny: the start of every run below."""
    run_dir = tmp_path_factory.mktemp("impl_base")
    pretrain.train(pretrain.PretrainConfig.fast(max_steps=40, n_docs=1500), run_dir, log=quiet)
    sft.train(sft.SFTConfig.fast(n_demos=300), run_dir, log=quiet)
    preferences.train(preferences.PreferencesConfig.fast(n_prompts=64), run_dir, log=quiet)
    reward.train(reward.RewardConfig.fast(), run_dir, log=quiet)
    return run_dir


def copy_run(base, tmp_path, name):
    out = tmp_path / name
    shutil.copytree(base, out)
    return out


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if "seconds" not in k and k != "impl"}


def test_the_solutions_reproduce_the_library_bit_for_bit(base_run, tmp_path):
    library, solutions = copy_run(base_run, tmp_path, "lib"), copy_run(base_run, tmp_path, "sol")
    cfg_ppo, cfg_dpo = ppo.PPOConfig.fast(iterations=2, eval_interval=2), dpo.DPOConfig.fast()
    want = {"ppo": ppo.train(cfg_ppo, library, log=quiet), "dpo": dpo.train(cfg_dpo, library,
                                                                           log=quiet)}
    impl.use("solutions", log=quiet)
    assert "ch06.dpo_step" in impl.current().record()["student"]  # the loop runs the learner's
    got = {"ppo": ppo.train(cfg_ppo, solutions, log=quiet), "dpo": dpo.train(cfg_dpo, solutions,
                                                                            log=quiet)}
    for stage in want:
        assert json.dumps(comparable(got[stage])) == json.dumps(comparable(want[stage])), stage


def test_the_solutions_reproduce_pretraining_and_sft_bit_for_bit(tmp_path):
    """The training steps (pretrain_step, sft_step) are the student's under --impl: the
    solutions give the library's numbers, and a planted bug in a step changes them."""
    cfg_pre = pretrain.PretrainConfig.fast(n_docs=800, max_steps=12, eval_interval=6)
    cfg_sft = sft.SFTConfig.fast(n_demos=120, max_new_tokens=8)

    def run(name, stages=("pretrain", "sft")):
        out = tmp_path / name
        metrics = {"pretrain": pretrain.train(cfg_pre, out, log=quiet)}
        metrics["pretrain"].pop("tokens_per_second")  # a timing
        if "sft" in stages:
            metrics["sft"] = sft.train(cfg_sft, out, log=quiet)
        return {stage: comparable(m) for stage, m in metrics.items()}

    want = run("lib")
    impl.use("solutions", log=quiet)
    assert {"ch02.pretrain_step", "ch03.sft_step"} <= set(impl.current().record()["student"])
    assert json.dumps(run("sol")) == json.dumps(want)

    zeroed = ("    optimizer.zero_grad(set_to_none=True)  # backward adds to .grad: drop the last "
              "step's\n")  # a planted bug: the gradients of every step pile up
    impl.use(student_folder(tmp_path, "ch02_gpt.py", zeroed, ""), log=quiet)
    assert "ch02.pretrain_step" in impl.current().record()["student"]
    buggy = run("bug", stages=("pretrain",))
    first_loss = [run["pretrain"]["history"]["train_loss"][0] for run in (buggy, want)]
    assert first_loss[0] == first_loss[1]  # the same start; the second step differs
    assert buggy["pretrain"]["val_loss"] != want["pretrain"]["val_loss"]


def test_chosen_and_rejected_swapped_in_dpo_loss_teaches_the_wrong_preference(base_run, tmp_path):
    library, swapped = copy_run(base_run, tmp_path, "lib"), copy_run(base_run, tmp_path, "bug")
    cfg = dpo.DPOConfig.fast(epochs=2)
    want = dpo.train(cfg, library, log=quiet)
    folder = student_folder(tmp_path, DPO_FILE, DPO_H, DPO_H.replace("h = ", "h = -(") + ")")
    impl.use(folder, log=quiet)
    got = dpo.train(cfg, swapped, log=quiet)
    assert "ch06.dpo_loss" in impl.current().record()["student"]

    def second_epoch_accuracy(metrics):  # how often r(chosen) > r(rejected) on pairs it has
        # trained on (the held-out accuracy of a model this small is about 0.5 either way)
        acc = metrics["history"]["rewards/accuracies"]
        return sum(acc[len(acc) // 2:]) / (len(acc) - len(acc) // 2)

    assert second_epoch_accuracy(got) < 0.5 < second_epoch_accuracy(want)
    assert got["history"]["rewards/margins"][-1] < 0 < want["history"]["rewards/margins"][-1]


REWARD_LOSS = "    loss = ranking_loss(scores, slots)  # every labelled pair i < j of each prompt"


def test_the_solutions_reproduce_the_reward_model_bit_for_bit(base_run, tmp_path):
    """reward_step is the learner's under --impl: the solutions give the library's reward model,
    and a planted bug in the step (the rankings read worst first) teaches it the reverse: from
    the zero head, the same model with its scores negated."""
    cfg = reward.RewardConfig.fast(epochs=2)
    want = comparable(reward.train(cfg, copy_run(base_run, tmp_path, "lib"), log=quiet))
    impl.use("solutions", log=quiet)
    assert "ch04.reward_step" in impl.current().record()["student"]
    got = comparable(reward.train(cfg, copy_run(base_run, tmp_path, "sol"), log=quiet))
    assert json.dumps(got) == json.dumps(want)

    folder = student_folder(tmp_path, "ch04_reward.py", REWARD_LOSS,
                            "    loss = ranking_loss(-scores, slots)")
    impl.use(folder, log=quiet)
    assert "ch04.reward_step" in impl.current().record()["student"]
    bug = reward.train(cfg, copy_run(base_run, tmp_path, "bug"), log=quiet)
    assert bug["history"]["train_loss"][0] == want["history"]["train_loss"][0]  # ln 2 for both
    assert want["gold_correlation"] > 0  # the library's learns the gold reward's order...
    assert bug["gold_correlation"] == pytest.approx(-want["gold_correlation"])  # ...the bug's
    # its reverse: the pairs the library's ranks right, the bug's ranks wrong (ties wrong for
    # both), whatever the accuracy of a model this small
    assert bug["val_accuracy"] + want["val_accuracy"] == pytest.approx(1.0, abs=0.02)
