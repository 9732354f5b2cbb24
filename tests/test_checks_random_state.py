"""The grader checks chapters in parallel threads of one process, and the step checks' local
runs draw dropout masks from torch's global generator: a fixture built meanwhile by another
thread must not disturb them (fixtures.GLOBAL_RANDOM_STATE)."""

import threading

import pytest
import torch

from minialign.course import fixtures
from minialign.course.checks_steps import Kept, _local_call as local_call  # not remembered
from minialign.course.wire import Build

FIXTURES = "minialign.course.fixtures"


def _dropout_scores(model, x):
    # (B, T) token ids -> (B, T, V) logits of a model in training mode: dropout draws masks
    return torch.stack([model(x)[0] for _ in range(20)])


def test_local_runs_draw_the_same_masks_while_other_threads_build_fixtures():
    setup = {"model": Build(f"{FIXTURES}:tiny_gpt", 3, dropout=0.5, train=True)}
    x = torch.randint(0, 32, (2, 16), generator=torch.Generator().manual_seed(0))
    alone = local_call(_dropout_scores, setup, (Kept("model"), x), seed=7)
    stop = threading.Event()

    def build_fixtures():  # what another chapter's check does on the trusted side
        while not stop.is_set():
            fixtures.tiny_gpt(10)

    others = [threading.Thread(target=build_fixtures) for _ in range(2)]
    for thread in others:
        thread.start()
    try:
        runs = [local_call(_dropout_scores, setup, (Kept("model"), x), seed=7) for _ in range(10)]
    finally:
        stop.set()
        for thread in others:
            thread.join()
    assert all(torch.equal(run, alone) for run in runs)


BUILDERS = {  # each fixture a check builds on the trusted side (reseed sets the state: left out)
    "tiny_gpt": lambda: fixtures.tiny_gpt(0, dropout=0.2),
    "tiny_policy": lambda: fixtures.tiny_policy(0),
    "tiny_policy, value head drawn": lambda: fixtures.tiny_policy(0, value_std=0.5),
    "tiny_reward_model": lambda: fixtures.tiny_reward_model(0),
    "adamw": lambda: fixtures.adamw(fixtures.tiny_gpt(0)),
    "reward_adamw": lambda: fixtures.reward_adamw(fixtures.tiny_reward_model(0)),
    "token_batch": lambda: fixtures.token_batch(0),
    "chat_batch": lambda: fixtures.chat_batch(0),
    "pair_batch": lambda: fixtures.pair_batch(0),
    "ranking_batch": lambda: fixtures.ranking_batch(0),
    "tiny_rollout": lambda: fixtures.tiny_rollout(0),
    "generator": lambda: fixtures.generator(0),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_a_fixture_leaves_the_global_generator_as_it_was(name):
    # a fixture's draws from the global generator, outside the lock and fork_rng, would land
    # in another thread's seeded run (tiny_policy's value head once did: nn.Linear draws its
    # initial weights before the library zeroes them)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    BUILDERS[name]()
    assert torch.equal(torch.get_rng_state(), before)


def test_every_fixture_is_in_that_list():
    import inspect

    helpers = {"reseed", "state_of", "optimizer_steps", "one_thread"}  # not builders
    builders = {name for name, fn in inspect.getmembers(fixtures, inspect.isfunction)
                if fn.__module__ == fixtures.__name__ and not name.startswith("_")}
    assert builders - helpers == {name.split(",")[0] for name in BUILDERS}
