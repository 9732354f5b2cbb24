"""The sandbox boundary: what may cross it (wire.py), and the child's services (sandbox.py)."""

import io
import math
import os
from collections import Counter, OrderedDict

import numpy as np
import pytest
import torch

from minialign.course import fixtures, wire
from minialign.course.runner import (BadReturn, Limits, NotAttempted, Session, Student,
                                     StudentRaised)
from minialign.course.sandbox import parse_salvaging


def roundtrip(value):
    arrays = []
    frame = wire.pack({"v": wire.encode(value, arrays)}, arrays)
    message, blob_arrays = wire.unpack(*wire.split_frame(frame))
    return wire.decode(message["v"], blob_arrays)


def test_plain_values_roundtrip():
    value = {"a": [1, 2.5, None, True, "x"], (1, 2): (3, (4, 5)), 7: {"nested": []}}
    assert roundtrip(value) == value
    assert type(roundtrip((1, 2))) is tuple
    assert roundtrip(Counter({(1, 2): 3})) == {(1, 2): 3}
    assert roundtrip(OrderedDict(a=1)) == {"a": 1}
    assert math.isnan(roundtrip(float("nan"))) and roundtrip(float("-inf")) == float("-inf")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16,
                                   torch.int64, torch.int32, torch.bool])
def test_tensors_keep_dtype_shape_and_requires_grad(dtype):
    x = (torch.arange(6).view(2, 3) % 2).to(dtype)
    y = roundtrip(x)
    assert type(y) is torch.Tensor and y.dtype == dtype and y.shape == (2, 3)
    assert torch.equal(y, x) and not y.requires_grad
    g = roundtrip(torch.ones(2, requires_grad=True) * 2)
    assert g.requires_grad and g.dtype == torch.float32
    assert type(roundtrip(np.float64(1.5))) is np.float64
    assert roundtrip(np.arange(3)).tolist() == [0, 1, 2]


class Liar:
    def __eq__(self, other):
        return True

    __hash__ = object.__hash__


class LyingInt(int):
    def __eq__(self, other):
        return True


class LyingTensor(torch.Tensor):
    pass


@pytest.mark.parametrize("value", [Liar(), LyingInt(3), [1, Liar()], {"k": LyingInt(1)},
                                   torch.zeros(2).as_subclass(LyingTensor), lambda: 1,
                                   np.array([Liar()], dtype=object), torch.nn.Linear(1, 1),
                                   {Liar(): 1}])
def test_other_types_cannot_cross(value):
    with pytest.raises(wire.Unsupported):
        wire.encode(value, [])


def test_pickled_arrays_and_garbage_are_refused():
    buffer = io.BytesIO()
    np.savez(buffer, a0=np.array([Liar()], dtype=object))  # would need pickle to load
    with pytest.raises(wire.ProtocolError):
        wire.unpack(b'{"v": {"$ndarray": 0}}', buffer.getvalue())
    for body in [b"not json", b"[1, 2]", b'{"v": ' + b"[" * 100000 + b"]" * 100000 + b"}"]:
        try:
            message, arrays = wire.unpack(body, b"")
            wire.decode(message["v"], arrays)
        except wire.ProtocolError:
            continue
        raise AssertionError(f"accepted {body[:20]!r}")
    with pytest.raises(wire.ProtocolError):
        wire.decode({"$dict": [[[1, 2], 3]]}, {})  # a list as a dict key
    with pytest.raises(wire.ProtocolError):
        wire.decode({"$tensor": 0, "dtype": "torch.evil"}, {0: np.zeros(1)})
    with pytest.raises(wire.ProtocolError):  # a $build is never accepted by the parent
        wire.decode({"$build": "os:system"}, {})


def test_frames_over_a_pipe_and_size_limits():
    r, w = os.pipe()
    try:
        wire.write_frame(w, {"op": "x"}, [np.zeros(3)])
        message, arrays = wire.read_frame(r)
        assert message == {"op": "x"} and arrays[0].shape == (3,)
        os.write(w, wire.HEADER.pack(wire.MAX_JSON + 1, 0))
        with pytest.raises(wire.ProtocolError):
            wire.read_frame(r)
    finally:
        os.close(r)
        os.close(w)


def test_syntax_errors_cost_only_their_definition():
    source = ("import math\n\n\ndef good():\n    return 1\n\n\n"
              "def broken(:\n    return 2\n\n\n"
              "@decorated\ndef also_broken():\n    return )\n\n\n"
              "def fine():\n    return 3\n")
    tree, problems = parse_salvaging(source, "student.py")
    names = [n.name for n in tree.body if hasattr(n, "name")]
    assert names == ["good", "fine"]
    assert [p["names"] for p in problems] == [["broken"], ["also_broken"]]
    assert all("SyntaxError" in p["message"] for p in problems)


STUDENT = '''
import torch
from minialign.course.wire import Build

class Controller:
    def __init__(self, value):
        self.value = value
    def update(self, factor):
        self.value = self.value * factor
        return self.value

def detached(policy, ref):
    return (policy * ref.detach()).sum()

def append_one(items):
    items.append(1)
    return len(items)

def vocab(tokenizer):
    return tokenizer.vocab_size

def stub():
    raise NotImplementedError("exercise chXX.stub: write this body")

def liar():
    class Liar:
        def __eq__(self, other):
            return True
    return Liar()

def boom():
    raise KeyError("nope")

def scale_weights(model, factor):
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(factor)
'''


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    path = tmp_path_factory.mktemp("student") / "module.py"
    path.write_text(STUDENT)
    session = Session(path, STUDENT, ["Controller.update", "detached", "missing"],
                      Limits())
    assert session.ensure_loaded()
    session.start_exercise(60)
    yield Student(session), session
    session.close()


def test_names_and_signatures_are_reported(student):
    _, session = student
    assert session.info["Controller.update"]["params"] == [["self", "POSITIONAL_OR_KEYWORD"],
                                                           ["factor", "POSITIONAL_OR_KEYWORD"]]
    assert session.info["missing"] == {"kind": "missing"}


def test_objects_live_in_the_child(student):
    st, _ = student
    controller = st.new("Controller", 2.0)
    assert controller.update(3.0) == 6.0
    assert controller.fetch("value") == 6.0
    assert controller.type_name == "Controller"


def test_gradients_and_arguments_after_the_call(student):
    st, _ = student
    policy = torch.ones(3, requires_grad=True)
    ref = torch.full((3,), 2.0, requires_grad=True)
    result = st.detached.run((policy, ref), backward=True)
    assert result.grads["connected"]
    assert torch.equal(result.grads["args"][0], torch.full((3,), 2.0))
    assert result.grads["args"][1] is None  # detached: no gradient reaches ref
    result = st.append_one.run(([5],), return_args=True)
    assert result.value == 2 and result.args == [[5, 1]]


def test_build_makes_library_objects_in_the_child(student):
    st, _ = student
    merges = [[104, 105]]
    assert st.vocab(wire.Build("minialign.tokenizer:Tokenizer", merges)) == 256 + 1 + 5
    with pytest.raises(ValueError):
        wire.Build("os:system", "true")


def test_build_keeps_trusted_objects_that_student_code_changes_and_reads_them_back(student):
    st, _ = student
    model = st.build(wire.Build("minialign.course.fixtures:tiny_gpt", seed=3))
    assert model.type_name == "GPT"
    optimizer = st.build(wire.Build("minialign.course.fixtures:adamw", model, lr=0.1))
    state_of = wire.Build("minialign.course.fixtures:state_of", model)
    before = st.build(state_of, keep=False)
    want = fixtures.state_of(fixtures.tiny_gpt(seed=3))  # the same recipe, built here
    assert before.keys() == want.keys() and all(torch.equal(before[k], want[k]) for k in want)
    st.scale_weights(model, 2.0)  # the student's function gets the kept model itself
    after = st.build(state_of, keep=False)
    assert all(torch.equal(after[k], 2 * want[k]) for k in want if k.endswith(".weight"))
    steps = wire.Build("minialign.course.fixtures:optimizer_steps", optimizer)
    assert st.build(steps, keep=False) == 0


def test_build_runs_only_library_code(student):
    _, session = student
    with pytest.raises(StudentRaised, match="must be in minialign"):
        session.request({"op": "build", "value": {"$build": "os:getcwd", "args": []}})
    with pytest.raises(StudentRaised, match="ProtocolError"):
        session.request({"op": "build", "value": {"$handle": 1}})
    with pytest.raises(TypeError):
        Student(session).build("minialign.course.fixtures:tiny_gpt")


def test_student_errors_become_problems(student):
    st, _ = student
    with pytest.raises(NotAttempted):
        st.stub()
    with pytest.raises(BadReturn, match="Liar"):
        st.liar()
    with pytest.raises(StudentRaised, match="KeyError"):
        st.boom()


@pytest.mark.parametrize("source", ["x = 1\0\n", "x = " + "(" * 100_000 + ")" * 100_000 + "\n",
                                    "x = " + "[" * 5000 + "]" * 5000 + "\n"])
def test_hostile_sources_do_not_crash_the_parser(source):
    tree, problems = parse_salvaging(source, "student.py")
    assert tree is None or tree.body == [] or problems == []
