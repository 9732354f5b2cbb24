"""The checks' helpers that are not a check themselves: comparing plain values, and the
library's results remembered across the students of a class (checks_steps._remembered)."""

import math

import torch

from minialign.course import checks_steps, fixtures
from minialign.course.checks import plain_difference, plain_same
from minialign.course.checks_steps import Kept, local_steps, variant_step
from minialign.course.wire import Build

PAIRS = [
    (1, 1), (1, 2), (True, 1), (True, True), (1.0, 1.0 + 1e-9), (1.0, 1.1), (math.nan, math.nan),
    ("a", "a"), ("a", "b"), (None, None), (None, 0), ([1, 2], [1, 2]), ([1, 2], [1, 2, 3]),
    ((1, 2.0), [1, 2.0]), ({"a": 1}, {"a": 1}), ({"a": 1}, {"b": 1}), ({"a": 1}, {"a": 1, "b": 2}),
    ({"w": torch.ones(3)}, {"w": torch.ones(3)}), ({"w": torch.ones(3)}, {"w": torch.zeros(3)}),
    ({"w": torch.ones(3)}, {"w": torch.ones(4)}), ([{"x": [1.0, torch.tensor(2.0)]}],
                                                    [{"x": [1.0, torch.tensor(2.5)]}]),
]


def test_plain_same_is_plain_difference_without_the_words():
    for actual, expected in PAIRS:
        assert plain_same(actual, expected) == (plain_difference(actual, expected) == ""), \
            (actual, expected)
    assert sum(plain_same(a, e) for a, e in PAIRS) == 9  # the cases are not all one way


def _next_token_loss(model, x, y):
    return model(x, y)[1]


def _setup():
    return {"model": Build(f"{checks_steps.FIXTURES}:tiny_gpt", seed=0),
            "optimizer": Build(f"{checks_steps.FIXTURES}:adamw", Kept("model"), lr=0.05)}


def _calls(lr):
    return [(Kept("model"), Kept("optimizer"), *fixtures.token_batch(1), lr, 0.5)]


def test_library_steps_are_computed_once_for_equal_inputs_and_again_for_others():
    step = variant_step(_next_token_loss)
    assert variant_step(_next_token_loss) is step  # one function per mistake, so one key
    first = local_steps(step, _setup(), _calls(0.01))
    assert local_steps(step, _setup(), _calls(0.01)) is first  # equal inputs, rebuilt
    other = local_steps(step, _setup(), _calls(0.02))
    assert other is not first
    assert not torch.equal(other.state["transformer.h.0.attn.c_attn.weight"],
                           first.state["transformer.h.0.attn.c_attn.weight"])
    fresh = checks_steps._local_steps(step, _setup(), _calls(0.01))  # what was remembered is
    assert fresh.losses == first.losses  # what a new run gives
    assert all(torch.equal(fresh.state[k], first.state[k]) for k in first.state)


def test_a_tensor_input_is_keyed_by_its_values():
    key = checks_steps._value_key
    assert key([torch.tensor([1.0, 2.0])]) == key([torch.tensor([1.0, 2.0])])
    assert key([torch.tensor([1.0, 2.0])]) != key([torch.tensor([1.0, 2.5])])
    assert key([torch.tensor([1.0, 2.0])]) != key([torch.tensor([1.0, 2.0], dtype=torch.float64)])
    assert key([torch.tensor([1, 2])]) != key([torch.tensor([[1, 2]])])
    assert key([1]) != key([1.0]) and key([True]) != key([1])
    assert key([object()]) is None  # anything else: computed every time


def test_nothing_is_remembered_while_a_learner_s_functions_stand_in_the_library():
    from minialign.course import impl

    step = variant_step(_next_token_loss)
    impl.use("solutions", log=lambda *_: None)
    try:
        first = local_steps(step, _setup(), _calls(0.03))
        assert local_steps(step, _setup(), _calls(0.03)) is not first
    finally:
        impl.restore()


def test_the_library_s_steps_run_on_one_thread_as_the_sandboxed_student_s_do():
    # the child that runs the student's steps has one thread; on two, the sums inside a matmul
    # add in another order, and three AdamW steps grew that into a parameter 1.5e-5 off the
    # child's (over the checks' 1e-5): the solutions failed ch06.dpo_step on a 2-core machine
    seen = []

    def step(model, optimizer, x, y, lr, clip):
        seen.append(torch.get_num_threads())
        return variant_step(_next_token_loss)(model, optimizer, x, y, lr, clip)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        checks_steps._local_steps(step, _setup(), _calls(0.04))
        assert seen == [1]
        assert torch.get_num_threads() == 2  # restored afterwards
    finally:
        torch.set_num_threads(before)


def test_one_thread_is_counted_across_overlapping_users():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with fixtures.one_thread():
            with fixtures.one_thread():
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1  # the outer user still holds it
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
