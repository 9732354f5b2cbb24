"""The fork server (sandbox.zygote_main, forkserver.py): a worker forked from the process that
imported torch once must be indistinguishable, to student code and to the grader, from one
started as a new Python."""

import os
import signal

import pytest

from minialign.course.forkserver import ForkedWarden
from minialign.course.markers import CHAPTERS, LIBRARY_DIR
from minialign.course.runner import Limits, Session, Student, StudentCrashed

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or not os.path.isdir("/proc"),
                                reason="the fork server is Linux-only")

STUDENT = '''
import os, sys, threading

def environment():
    return dict(os.environ)

def process():
    fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    return {"fds": len(fds), "session_leader": os.getsid(0) == os.getpid(),
            "group_leader": os.getpgrp() == os.getpid(), "threads": threading.active_count(),
            "cwd_is_home": os.path.realpath(os.getcwd()) == os.path.realpath(os.environ["HOME"]),
            "isolated": sys.flags.isolated, "own_uid": os.getuid() >= 64000,
            "student_module": __name__.startswith("student_")}

def leave(code):
    os._exit(code)

def die(sig):
    os.kill(os.getpid(), sig)
'''


def _session(tmp_path, fork_server: bool) -> Session:
    path = tmp_path / f"student_{int(fork_server)}.py"
    path.write_text(STUDENT)
    session = Session(path, STUDENT, ["environment", "process"], Limits(fork_server=fork_server))
    assert session.ensure_loaded()
    session.start_exercise(60)
    return session


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("forkserver")
    forked, fresh = _session(tmp, True), _session(tmp, False)
    yield forked, fresh
    forked.close()
    fresh.close()


def test_the_worker_is_forked_only_when_asked(sessions):
    forked, fresh = sessions
    assert isinstance(forked.worker.proc, ForkedWarden)
    assert not isinstance(fresh.worker.proc, ForkedWarden)


def test_student_code_sees_the_same_process_either_way(sessions):
    forked, fresh = sessions
    a, b = Student(forked).process(), Student(fresh).process()
    assert a == b
    assert a["session_leader"] and a["group_leader"] and a["isolated"] and a["cwd_is_home"]
    assert a["fds"] == 6  # 0, 1, 2, the two pipes, and the one listdir opened: nothing leaked


def test_student_code_sees_the_same_environment_either_way(sessions):
    forked, fresh = sessions
    a, b = Student(forked).environment(), Student(fresh).environment()
    assert a.keys() == b.keys()
    assert {k: v for k, v in a.items() if k not in ("HOME", "TMPDIR")} == \
        {k: v for k, v in b.items() if k not in ("HOME", "TMPDIR")}
    assert "PYTEST_CURRENT_TEST" not in a  # nothing of the grader's own environment


def test_exit_codes_and_signals_are_told_as_before(sessions):
    for session in sessions:  # (each crash costs the session its worker: a new one loads)
        with pytest.raises(StudentCrashed, match="exit code 3"):
            Student(session).leave(3)
        with pytest.raises(StudentCrashed, match="killed by SIGKILL"):
            Student(session).die(int(signal.SIGKILL))
        assert Student(session).process()["student_module"]


def test_the_chapters_that_train_are_marked():
    """The zygote loads what an optimizer's first use imports only for chapters marked as
    training: exactly those whose checks hand the student's code an optimizer."""
    for number, chapter in CHAPTERS.items():
        source = (LIBRARY_DIR / "course" / f"checks_ch{number:02d}.py").read_text()
        assert ("optimizer" in source) == chapter.trains, chapter.filename


def test_the_zygote_ends_with_the_grading_run(tmp_path):
    session = _session(tmp_path, True)
    server = session.isolation.fork_server()
    assert server.proc.poll() is None
    session.close()
    assert server.proc.returncode == 0


def test_a_dead_zygote_costs_nothing_but_speed(tmp_path):
    session = _session(tmp_path, True)
    try:
        server = session.isolation.fork_server()
        server.proc.kill()  # as student code running as the grader's user could
        server.proc.wait()
        session.restart()
        assert Student(session).process()["student_module"]  # a new Python, loaded again
        assert not isinstance(session.worker.proc, ForkedWarden)
        assert session.isolation.fork_server() is None
    finally:
        session.close()


@pytest.mark.parametrize("flag", [[], ["--no-fork-server"]])
def test_the_command_line_turns_the_fork_server_off(tmp_path, monkeypatch, flag):
    from minialign.course import grader, isolation

    asked = []
    real = isolation.Isolation.fork_server

    def fork_server(self):
        server = real(self)
        asked.append(server is not None)
        return server

    monkeypatch.setattr(isolation.Isolation, "fork_server", fork_server)
    out = tmp_path / "report.json"
    code = grader.main(["--impl", "solutions", "--chapter", "7", "--format", "json",
                        "--out", str(out), *flag])
    assert code == 0 and out.exists()
    assert asked and all(used == (not flag) for used in asked)
