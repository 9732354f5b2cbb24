"""The trusted parent's side of the sandbox: start it, load a student file, call into it.

    session = Session(path, source, names=["merge"], limits=Limits())
    session.start_exercise(time_s=10)          # the wall-clock budget of this exercise
    student = Student(session)
    student.merge([1, 1, 2], (1, 1), 9)        # -> [9, 2], computed in the child
    model = student.build(wire.Build("minialign.course.fixtures:tiny_gpt", seed=0))  # kept there

`Session` keeps one sandboxed child (see `sandbox.py`, isolated as `isolation.py` plans) per
student file, and replaces it after a crash, a timeout or a garbled reply, so that one
exercise's disaster costs only that exercise. When the file's top-level code kills or hangs
the child, the culprit statement is skipped on the next start. Every string that comes from
the child (messages, tracebacks, output, names) goes through `clean` before anything else sees
it: a lone surrogate or a terminal escape sequence in one student's message cannot break or
forge a report. Every way student code can go wrong becomes a `StudentProblem` with a message
written for the student:

    NotAttempted     the function raised NotImplementedError (the untouched stub)
    StudentRaised    any other exception (sys.exit() included)
    StudentTimeout   the wall-clock limit ran out (the child is killed)
    StudentCrashed   the child died (os._exit, out of memory, a segfault) or sent garbage
    BadReturn        a value that is not a tensor / array / number / str / list / tuple / dict
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import sandbox, wire
from .forkserver import ForkServerError
from .isolation import Isolation
from .markers import CHAPTERS


@dataclass
class Limits:
    """Limits of the sandbox (the time per exercise is passed to Session.start_exercise)."""

    load_s: float = 20.0  # running the file's top-level code
    startup_s: float = 120.0  # starting Python and importing torch (slow on a busy machine)
    memory_mb: int = 2048  # address space the student may add on top of torch's
    output_chars: int = 2000  # captured stdout/stderr kept per exercise
    max_processes: int = 64  # processes and threads of one submission (cgroup or uid limit)
    tmp_mb: int = 256  # size of the private /tmp, /var/tmp and /dev/shm (with namespaces)
    drop_privileges: bool = True  # as root: student code runs as a uid of its own
    namespaces: bool = True  # private mount and PID namespaces where the machine allows
    cgroups: bool = True  # a pids + memory cgroup per worker where the machine allows (root)
    allow_root: bool = False  # grade a class even if student code would have to run as root
    max_skipped: int = 20  # top-level statements that crash the child skipped before giving up
    fork_server: bool = True  # wardens forked from one process that imported torch (Linux)


class StudentProblem(Exception):
    """Student code went wrong; `message` says how, for the report."""

    hint = ""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotAttempted(StudentProblem):
    pass


class StudentRaised(StudentProblem):
    def __init__(self, type_name: str, message: str, traceback: str = ""):
        text = f"your code raised {type_name}: {message}"
        if traceback:
            text += "\n" + traceback
        super().__init__(text)
        self.type_name = type_name
        if type_name == "SystemExit":
            self.hint = "do not call sys.exit() or exit() in your file: return a value instead"
        elif type_name in ("MemoryError", "RuntimeError") and "alloc" in message.lower():
            self.hint = "your code asked for more memory than the limit allows"


class StudentTimeout(StudentProblem):
    hint = "look for a loop that never ends (a while loop whose index does not advance?)"


class StudentCrashed(StudentProblem):
    pass


class BadReturn(StudentProblem):
    def __init__(self, type_name: str, where: str = ""):
        where = where or "the result"
        super().__init__(f"{where} is an object of type {type_name}; the grader accepts tensors, "
                         f"numpy arrays, numbers, strings, None, and lists, tuples and dicts of "
                         f"them")
        self.type_name = type_name
        self.hint = "return a plain value (a torch.Tensor, a list, a dict ...), not a custom object"


class GraderError(RuntimeError):
    """The sandbox itself could not run (not the student's fault)."""


def exit_description(code) -> str:
    if code is None:
        return "the grading process stopped for an unknown reason"
    if code == 0:
        return "your code ended the process (exit code 0: os._exit() or similar)"
    if code > 128:
        number = code - 128
        name = {signal.SIGKILL: "SIGKILL", signal.SIGSEGV: "SIGSEGV", signal.SIGXCPU: "SIGXCPU",
                signal.SIGABRT: "SIGABRT", signal.SIGTERM: "SIGTERM"}.get(number, f"signal {number}")
        why = {signal.SIGKILL: " (out of memory or out of CPU time?)",
               signal.SIGSEGV: " (a crash inside native code, or a recursion too deep?)",
               signal.SIGXCPU: " (it used more CPU time than allowed)"}.get(number, "")
        return f"the process running your code was killed by {name}{why}"
    return f"your code ended the process (exit code {code})"


# ==============================================================================================
# one child process


def sandbox_env(home) -> dict:
    """The whole environment of a warden and its worker (home: HOME and TMPDIR)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
            "TMPDIR": str(home), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "MINIALIGN_SANDBOX": "1"}


class Worker:
    """A warden + worker pair (see sandbox.py) and the two pipes to talk to it."""

    _ids = itertools.count(1)

    def __init__(self, limits: Limits, cpu_s: int, isolation: Isolation, library: Path,
                 trains: bool = False):
        self.limits = limits
        self.trains = trains  # its checks train a model (see markers.Chapter.trains)
        self.cpu_s = cpu_s
        self.isolation, self.library = isolation, library
        self.tmp = Path(tempfile.mkdtemp(prefix=f"minialign-worker-{os.getpid()}-"))
        os.chmod(self.tmp, 0o711)  # a worker's uid may pass to its cwd, not list the folder
        self.output_path = self.tmp / "output.txt"
        self.proc = None
        self.plan = None
        self.returncode = None
        self.last_line = None  # the top-level statement the child was running (during load)
        self.worker_pid = None  # the worker's pid (and process group), from its "ready"
        self.uid = None  # the uid student code runs as, from its "ready"
        self._req = self._resp = None

    def start(self):
        self.plan = self.isolation.plan(self.tmp, self.library)
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        config = {"root": str(self.library), "fd_in": req_r, "fd_out": resp_w,
                  "parent_pid": os.getpid(), "memory_mb": self.limits.memory_mb,
                  "cpu_s": self.cpu_s, "max_processes": self.limits.max_processes,
                  "max_message_chars": self.limits.output_chars, **self.plan.config()}
        env = sandbox_env(self.tmp)
        script = str(self.library / "minialign" / "course" / "sandbox.py")
        out = os.open(self.output_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            server = self.isolation.fork_server()
            if server is not None:  # a fork of the process that imported torch once
                try:
                    self.proc = server.spawn(config, env, self.tmp, (req_r, resp_w, out),
                                             warm=self.trains)
                except (OSError, ForkServerError):  # it died (killed from outside?)
                    self.isolation.stop_fork_server()  # from now on: a new Python each
            if self.proc is None:
                self.proc = subprocess.Popen(
                    sandbox.command("warden", config, script), pass_fds=(req_r, resp_w),
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=self.tmp, env=env,
                    start_new_session=True)
        finally:
            os.close(out)
            os.close(req_r)
            os.close(resp_w)
        self._req, self._resp = req_w, resp_r
        os.set_blocking(self._req, False)
        try:
            ready, _ = wire.read_frame(self._resp, time.monotonic() + self.limits.startup_s)
        except (EOFError, TimeoutError, wire.ProtocolError) as e:
            self.close()
            raise GraderError(f"the sandbox did not start ({type(e).__name__}); its output:\n"
                              f"{clean(self.read_output(0)[-1500:])}") from None
        if ready.get("op") != "ready":
            self.close()
            raise GraderError("the sandbox started but did not say it was ready")
        self.worker_pid = ready.get("pid") if type(ready.get("pid")) is int else None
        self.uid = ready.get("uid") if type(ready.get("uid")) is int else None
        return self

    def request(self, message: dict, arrays=(), deadline=None, on_progress=None):
        """Send a request and return (reply, arrays); progress frames go to on_progress."""
        message["id"] = f"{next(self._ids)}-{secrets.token_hex(4)}"
        wire.write_frame(self._req, message, arrays, deadline)
        while True:
            reply, reply_arrays = wire.read_frame(self._resp, deadline)
            if reply.get("id") != message["id"]:
                raise wire.ProtocolError("a reply to a request that was not made")
            if reply.get("op") == "progress":
                if on_progress:
                    on_progress(reply)
                continue
            return reply, reply_arrays

    def read_output(self, offset: int) -> str:
        try:
            with open(self.output_path, "rb") as f:
                f.seek(offset)
                return f.read(1 << 20).decode("utf-8", "replace")
        except OSError:
            return ""

    def output_size(self) -> int:
        try:
            return self.output_path.stat().st_size
        except OSError:
            return 0

    def close(self):
        """Stop the warden (it kills everything under it), then make sure nothing of the
        submission is left (its cgroup, its uid), close the pipes, return the status."""
        if self.proc is not None and self.returncode is None:
            if self.proc.poll() is None:
                try:
                    self.proc.send_signal(signal.SIGTERM)
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
                except ProcessLookupError:
                    pass
            self.returncode = self.proc.returncode
            if self.returncode == -signal.SIGKILL and self.worker_pid and self.plan \
                    and not self.plan.namespaces:
                # the warden was killed from outside (by student code running as the same
                # user) before it could clean up: at least kill the worker's process group
                try:
                    os.killpg(self.worker_pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        if self.plan is not None:
            self.isolation.release(self.plan)
            self.plan = None
        for fd in (self._req, self._resp):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._req = self._resp = None
        return self.returncode

    def wait_exit(self, timeout: float = 10.0):
        """After EOF: the worker is gone; wait for the warden to finish cleaning up."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.close()

    def remove_files(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


# ==============================================================================================
# one student file


class Session:
    """A student's file loaded in a sandbox, restarted when a call kills or hangs it."""

    def __init__(self, path: Path, source: str, names: list[str], limits: Limits,
                 cpu_s: int = 300, isolation: Isolation | None = None,
                 chapter: int | None = None):
        """isolation: the grading run's (one of its own when None); chapter: the chapter
        graded, whose exercises are stubs in the library the student's code sees."""
        self.path, self.source, self.names = Path(path), source, list(names)
        self.limits = limits
        self.cpu_s = cpu_s
        self._own_isolation = isolation is None
        self.isolation = isolation or Isolation(limits)
        self.library = self.isolation.library(chapter)
        self.trains = chapter in CHAPTERS and CHAPTERS[chapter].trains
        self.module_name = f"student_{Path(path).stem}_{secrets.token_hex(3)}"
        self.worker: Worker | None = None
        self.info: dict = {}  # name -> {"kind", "params", "signature"} from the last load
        self.problems: list[dict] = []  # top-level code that failed while loading
        self.skipped: dict[int, str] = {}  # line -> why that statement is no longer run
        self.load_failure = ""  # set when the file cannot be loaded at all
        self.load_output = ""
        self.deadline = None
        self.calls = 0  # calls made for the current exercise
        self._output_mark = (None, 0)
        self._workers: list[Worker] = []

    # ------------------------------------------------------------------------------------------

    def ensure_loaded(self) -> bool:
        """Start and load if needed; False when the file cannot be loaded (see load_failure)."""
        if self.worker is not None:
            return True
        if self.load_failure:
            return False
        for _ in range(self.limits.max_skipped + 1):
            worker = Worker(self.limits, self.cpu_s, self.isolation, self.library,
                            trains=self.trains)
            self._workers.append(worker)  # its files are removed by close(), started or not
            worker.start()

            def progress(reply, worker=worker):
                line = reply.get("line")
                worker.last_line = line if type(line) is int else None

            message = {"op": "load", "source": self.source, "filename": str(self.path),
                       "module": self.module_name, "names": self.names,
                       "skip": sorted(self.skipped)}
            start = worker.output_size()
            try:
                reply, _ = worker.request(message, deadline=time.monotonic() + self.limits.load_s,
                                          on_progress=progress)
                self.load_output = worker.read_output(start)
            except (TimeoutError, EOFError, wire.ProtocolError) as e:
                code = worker.wait_exit(1) if isinstance(e, EOFError) else worker.close()
                self.load_output = worker.read_output(start)
                line = worker.last_line
                why = (f"it ran past the {self.limits.load_s:g} s time limit for loading a file"
                       if isinstance(e, TimeoutError) else exit_description(code)
                       if isinstance(e, EOFError) else "sent a garbled reply")
                if line is None or line in self.skipped:
                    self.load_failure = f"loading your file failed: {why}"
                    return False
                self.skipped[line] = why
                continue
            self.worker = worker
            names = reply.get("names") if isinstance(reply.get("names"), dict) else {}
            self.info = {k: _clean_info(v) for k, v in names.items() if isinstance(v, dict)}
            problems = reply.get("problems") if isinstance(reply.get("problems"), list) else []
            self.problems = [_clean_problem(p) for p in problems if isinstance(p, dict)]
            self.problems += [{"line": line, "names": [],
                               "message": f"this top-level statement stopped the grader ({why}); "
                                          f"it was skipped and the rest of the file loaded "
                                          f"without it"}
                              for line, why in sorted(self.skipped.items())]
            return True
        self.load_failure = (f"loading your file failed: more than {self.limits.max_skipped} "
                             f"of its top-level statements stopped the grader")
        return False

    def start_exercise(self, time_s: float):
        self.deadline = time.monotonic() + time_s
        self.calls = 0
        self._output_mark = (self.worker, self.worker.output_size() if self.worker else 0)

    def output(self) -> str:
        """What the student's code printed during the current exercise (truncated)."""
        worker, offset = self._output_mark
        if worker is None:
            worker, offset = self.worker, self.worker.output_size() if self.worker else 0
        text = worker.read_output(offset) if worker is not None else ""
        if self.worker is not None and self.worker is not worker:
            text += self.worker.read_output(0)
        return truncate(text, self.limits.output_chars)

    def restart(self):
        """Throw the child away; the next request starts a fresh one."""
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    def close(self):
        self.restart()
        for worker in self._workers:
            worker.close()
            worker.remove_files()
        self._workers.clear()
        if self._own_isolation:
            self.isolation.close()

    # ------------------------------------------------------------------------------------------

    def request(self, message: dict, arrays=()):
        """One call into the child, with every failure turned into a StudentProblem."""
        if not self.ensure_loaded():
            raise StudentCrashed(self.load_failure)
        self.calls += 1
        worker = self.worker
        try:
            reply, reply_arrays = worker.request(message, arrays, deadline=self.deadline)
        except TimeoutError:
            self.restart()
            raise StudentTimeout("your code did not finish within the time limit "
                                 "(an infinite loop?)") from None
        except EOFError:
            code = worker.wait_exit(5)
            self.restart()
            raise StudentCrashed(exit_description(code)) from None
        except wire.ProtocolError as e:
            self.restart()
            raise StudentCrashed(f"the process running your code sent a garbled reply ({e})") \
                from None
        if reply.get("ok") is True:
            return reply, reply_arrays
        if "bad_return" in reply:
            raise BadReturn(clean(reply["bad_return"], 200), clean(reply.get("where", ""), 100))
        error = reply.get("error") if isinstance(reply.get("error"), dict) else {}
        type_name = clean(error.get("type", "Exception"), 100)
        if type_name == "NotImplementedError":
            raise NotAttempted(f"raised NotImplementedError: {clean(error.get('message'), 300)}")
        raise StudentRaised(type_name, clean(error.get("message", ""), self.limits.output_chars),
                            clean(error.get("traceback", ""), self.limits.output_chars))

    def decode(self, value, arrays):
        try:
            return wire.decode(value, arrays)
        except wire.ProtocolError as e:
            self.restart()
            raise StudentCrashed(f"the process running your code sent a garbled reply ({e})") \
                from None
        except Exception as e:  # noqa: BLE001 - any decoding failure is the child's doing
            self.restart()
            raise StudentCrashed(f"the process running your code sent an unreadable value "
                                 f"({type(e).__name__})") from None


def _clean_problem(problem: dict) -> dict:
    """A load problem as reported by the child, with the types the parent relies on."""
    names = problem.get("names")
    return {"line": problem.get("line") if type(problem.get("line")) is int else None,
            "names": [clean(n, 200) for n in names if isinstance(n, str)]
            if isinstance(names, list) else [],
            "message": clean(problem.get("message", ""), 2000)}


def _clean_info(info: dict) -> dict:
    """A name's description from the child: strings cleaned, params as [[str, str], ...]."""
    out = {k: clean(v, 300) for k, v in info.items() if isinstance(v, str)}
    params = info.get("params")
    if isinstance(params, list) and all(isinstance(p, list) and len(p) == 2 for p in params):
        out["params"] = [[clean(a, 200), clean(b, 50)] for a, b in params]
    return out


# terminal control sequences: CSI (colours, cursor moves), OSC (window titles, hyperlinks),
# and the other two-character ESC sequences
ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?"
                     r"|\x9b[0-?]*[ -/]*[@-~]")
BIDI = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))


def clean(text, limit: int | None = None) -> str:
    """Text from the sandbox made safe to print and to write: a lone surrogate becomes
    `\\udxxx`, terminal escape sequences, control characters (but newline and tab) and
    bidirectional overrides are removed; then at most `limit` characters."""
    text = text if isinstance(text, str) else str(text)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates
    text = ESCAPES.sub("", text).translate(BIDI)
    text = "".join(c for c in text if c in "\n\t" or not (c < " " or "\x7f" <= c <= "\x9f"))
    return text if limit is None else text[:limit]


def truncate(text: str, limit: int) -> str:
    """`clean` text, at most `limit` characters of it (the start and the end kept)."""
    text = clean(text)
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n... [{len(text) - 2 * half} characters cut] ...\n{text[-half:]}"


# ==============================================================================================
# proxies used by the checks


@dataclass
class CallResult:
    value: object
    args: list | None = None  # the positional arguments after the call (return_args=True)
    kwargs: dict | None = None
    grads: dict | None = None  # {"connected": bool, "args": [...], "kwargs": {...}}


class RemoteFunction:
    """A function (or a method of a kept object) of the student's module."""

    def __init__(self, session: Session, target):
        self._session, self._target = session, target

    def __call__(self, *args, **kwargs):
        return self.run(args, kwargs).value

    def run(self, args=(), kwargs=None, *, return_args=False, backward=False, output=None,
            keep=False) -> CallResult:
        """Call with options: return_args (see in-place changes), backward (gradients of the
        sum of the result, or of result[output], w.r.t. tensor arguments), keep (a handle)."""
        arrays: list = []
        args, kwargs = list(_handles(tuple(args))), _handles(dict(kwargs or {}))
        message = {"op": "call", "target": self._target,
                   "args": wire.encode(list(args), arrays),
                   "kwargs": wire.encode(kwargs, arrays),
                   "return_args": return_args, "keep": keep,
                   "backward": {"output": output} if backward else None}
        reply, reply_arrays = self._session.request(message, arrays)
        decode = self._session.decode
        value = decode(reply.get("value"), reply_arrays)
        if keep:
            if not isinstance(value, wire.Handle):
                raise StudentCrashed("the process running your code sent a garbled reply")
            value = RemoteObject(self._session, value)
        result = CallResult(value)
        if return_args:
            result.args = decode(reply.get("args"), reply_arrays)
            result.kwargs = decode(reply.get("kwargs"), reply_arrays)
        if backward:
            result.grads = decode(reply.get("grads"), reply_arrays)
            if not isinstance(result.grads, dict):
                raise StudentCrashed("the process running your code sent a garbled reply")
        return result


class RemoteObject:
    """An object kept in the child (made with Student.new); methods are RemoteFunctions."""

    def __init__(self, session: Session, handle: wire.Handle):
        self._session, self._handle = session, handle
        self.type_name = handle.type_name

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return RemoteFunction(self._session, {"handle": self._handle.number, "method": name})

    def fetch(self, name: str):
        """The value of an attribute, e.g. ctl.fetch("value")."""
        reply, arrays = self._session.request({"op": "getattr", "handle": self._handle.number,
                                               "name": name})
        return self._session.decode(reply.get("value"), arrays)

    @property
    def handle(self) -> wire.Handle:
        """Pass this as an argument to hand the object back to the child."""
        return self._handle


class Student:
    """The student's module: `student.merge(...)` calls their merge in the sandbox."""

    def __init__(self, session: Session):
        self._session = session

    def __getattr__(self, name) -> RemoteFunction:
        if name.startswith("_"):
            raise AttributeError(name)
        return RemoteFunction(self._session, name)

    def new(self, class_name: str, *args, **kwargs) -> RemoteObject:
        """Construct the student's class in the child and keep the object there."""
        return RemoteFunction(self._session, class_name).run(args, kwargs, keep=True).value

    def build(self, build: wire.Build, keep: bool = True):
        """Run trusted library code in the child: `build` names a function of the minialign
        package and its arguments (RemoteObjects among them are passed as the kept objects).
        keep=True keeps the result there and returns it as a RemoteObject; keep=False returns
        the result itself, e.g. the parameters of a model after a student's step
        (`fixtures.state_of`)."""
        if type(build) is not wire.Build:
            raise TypeError("Student.build takes a wire.Build")
        arrays: list = []
        message = {"op": "build", "value": wire.encode(_handles(build), arrays), "keep": keep}
        reply, reply_arrays = self._session.request(message, arrays)
        value = self._session.decode(reply.get("value"), reply_arrays)
        if keep:
            if not isinstance(value, wire.Handle):
                raise StudentCrashed("the process running your code sent a garbled reply")
            value = RemoteObject(self._session, value)
        return value


def _handles(value):
    """`value` with every RemoteObject in it (in lists, tuples, dicts and Builds) replaced by
    its handle, the form in which it crosses to the child."""
    if isinstance(value, RemoteObject):
        return value.handle
    if type(value) in (list, tuple):
        return type(value)(_handles(v) for v in value)
    if type(value) is dict:
        return {k: _handles(v) for k, v in value.items()}
    if type(value) is wire.Build:
        return wire.Build(value.target, *_handles(value.args), **_handles(value.kwargs))
    return value
