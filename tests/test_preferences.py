"""The preference data: typed rankings and pairs, the JSONL file a user may replace, and the
batches the reward model reads."""

import json

import pytest

from minialign.preferences import (Pair, Ranking, batch_rankings, pairs_of, read_rankings,
                                   write_rankings)


def ranking3():
    return Ranking("what is 7 plus 5?", ("the answer is 12.", "12.", "13."), (True, True, False),
                   (0.9, 0.7, 0.4))


def test_a_ranking_of_k_gives_its_pairs_best_first_with_their_probabilities():
    pairs = ranking3().pairs()
    assert [(p.chosen, p.rejected) for p in pairs] == [
        ("the answer is 12.", "12."), ("the answer is 12.", "13."), ("12.", "13.")]
    assert [p.p_chosen for p in pairs] == [0.9, 0.7, 0.4]
    assert [p.rejected_ended for p in pairs] == [True, False, False]
    assert pairs[0] == Pair("what is 7 plus 5?", "the answer is 12.", "12.", True, True, 0.9)


def test_rankings_round_trip_through_the_jsonl_file(tmp_path):
    unknown = Ranking("say hi", ("hi", "no"), (True, True))  # your own label: no probability
    write_rankings([ranking3(), unknown], tmp_path / "prefs.jsonl")
    lines = (tmp_path / "prefs.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["responses"][0] == "the answer is 12."
    assert "probabilities" not in json.loads(lines[1])
    back = read_rankings(tmp_path / "prefs.jsonl")
    assert back == [ranking3(), unknown]
    assert pairs_of(back)[-1].p_chosen is None


def test_a_pair_line_is_a_ranking_of_two(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    (r,) = read_rankings(path)
    assert r == Ranking("a", ("b", "c"), (True, True), None)


def test_bad_rankings_say_what_and_where(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text('{"prompt": "a", "responses": ["b", "c", "d"], "probabilities": [0.5]}\n')
    with pytest.raises(ValueError, match="example 1: 3 responses make 3 pairs"):
        read_rankings(path)
    with pytest.raises(ValueError, match="at least two"):
        Ranking("a", ("b",), (True,))


def test_batch_rankings_pads_missing_answers_and_marks_them():
    from minialign import world as world_lib
    from minialign.tokenizer import Tokenizer

    tok = Tokenizer.train(world_lib.sample_corpus(50, seed=0), vocab_size=280)
    short = Ranking("say hi", ("hi", "no"), (True, False))
    ids, mask, slots = batch_rankings(tok, [ranking3(), short], k=3)
    assert ids.shape[0] == 6 and slots.tolist() == [[True, True, True], [True, True, False]]
    assert mask[5].sum() == 1  # the placeholder of the missing third answer
    assert ids[4][mask[4]].tolist()[-1] != tok.end_id  # "no" did not end


def test_the_preference_prompts_mix_families_as_sft_and_ppo_do():
    """Every stage draws its prompts with World.sample_tasks: with the default configs, the
    preference data's family mix is within 2 points of SFT's demonstrations' and PPO's
    prompts' (drawing tasks by each task's weight would give about 54% translation)."""
    import random

    from minialign import world as world_lib
    from minialign.ppo import PPOConfig
    from minialign.preferences import PreferencesConfig, family_mix, training_tasks
    from minialign.sft import SFTConfig

    W = world_lib.default_world()
    prefs_cfg, sft_cfg, ppo_cfg = PreferencesConfig(), SFTConfig(), PPOConfig()
    prefs = training_tasks(prefs_cfg, W)
    sft = [p for p, _ in W.demonstrations(sft_cfg.n_demos, seed=sft_cfg.seed)]
    rng = random.Random(ppo_cfg.seed)  # as ppo_loop draws a batch of prompts per iteration
    ppo = [t for _ in range(ppo_cfg.iterations) for t in W.sample_tasks(ppo_cfg.batch_size, rng)]
    mixes = {"preferences": family_mix([t.prompt for t in prefs], W),
             "sft": family_mix(sft, W), "ppo": family_mix([t.prompt for t in ppo], W)}
    for other in ("sft", "ppo"):
        for family in world_lib.FAMILIES:
            gap = abs(mixes["preferences"][family] - mixes[other][family])
            assert gap <= 0.02, (family, other, mixes)
    assert mixes["preferences"]["translation"] < 0.25
