"""The child side of grading: where student code runs, and nothing is trusted.

Two processes per student file, started by `runner.Worker` in the trusted parent:

  warden   stdlib only. Becomes a "child subreaper" (Linux), starts the worker, waits for it,
           then kills and reaps every process the student code left behind (a double-forked
           daemon included), and exits with the worker's status. It dies with the parent.
  worker   `python -I` (no PYTHON* variables, no user site, no script folder on sys.path: a
           `conftest.py`, `sitecustomize.py` or `torch.py` in the student's folder is never
           imported), cwd an empty temporary folder, a minimal environment. It imports torch,
           then limits itself: address space (current size + a budget), CPU seconds, file
           size, no core dumps, and, when started as root, drops to the `nobody` user (if
           `nobody` can read Python, torch and the course). Then it
           serves requests from the parent over a dedicated pipe (not stdout), one at a time:
             load     run the student's file (sent as text) statement by statement into a
                      fresh module: a statement that raises is reported and skipped; a
                      syntax error drops only the top-level definition that holds it
             call     call a function, a method of a kept object, or a class (`keep`: keep
                      the result in the child and answer with a handle); optionally return the
                      arguments after the call and the gradients of tensor arguments
             getattr  read an attribute of a kept object
Replies are `wire` frames; anything the student returns that is not a plain value or tensor
comes back as "an object of type X". The student's stdout and stderr go to a file that the
parent reads and truncates. The parent holds the expected values and decides pass/fail; it
enforces the wall-clock limits and kills the warden (which kills the rest) when they run out.

This module is loaded by path in the warden (so that the warden imports no package code), and
runs as `python -I -c BOOTSTRAP <this file> warden|worker <json config>`.
"""

import json
import os
import re
import signal
import subprocess
import sys

BOOTSTRAP = ("import sys, importlib.util as u; s = u.spec_from_file_location('minialign_sandbox',"
             " sys.argv[1]); m = u.module_from_spec(s); s.loader.exec_module(m); "
             "m.main(sys.argv[2:])")

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
EXIT_PARENT_GONE = 70  # the warden found its parent already dead


def main(argv):
    role, config = argv[0], json.loads(argv[1])
    if role == "warden":
        warden_main(config)
    elif role == "worker":
        worker_main(config)
    else:
        raise SystemExit(f"unknown role {role!r}")


def command(role: str, config: dict) -> list[str]:
    return [sys.executable, "-I", "-u", "-c", BOOTSTRAP, os.path.abspath(__file__), role,
            json.dumps(config)]


# ==============================================================================================
# warden


def _prctl(option: int, value: int) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False  # not Linux: process-group kills only


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc; empty where there is no /proc)."""
    out = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()  # after "(comm)": state, ppid, ...
        if len(fields) > 1 and fields[1] == str(pid):
            out.append(int(entry))
    return out


def kill_descendants() -> None:
    """Kill and reap every process left under this one (orphans re-parent to a subreaper)."""
    me = os.getpid()
    for _ in range(1000):
        kids = _children(me)
        if not kids:
            break
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in kids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def warden_main(config: dict) -> None:
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # the parent dies -> we clean up and go
    if os.getppid() != config["parent_pid"]:
        os._exit(EXIT_PARENT_GONE)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    worker = None

    def stop(code):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if worker is not None:
            try:
                os.killpg(worker.pid, signal.SIGKILL)  # the worker and its process group
            except (ProcessLookupError, PermissionError):
                pass
        kill_descendants()  # whatever escaped the group (setsid) re-parented to us
        os._exit(code)

    signal.signal(signal.SIGTERM, lambda *_: stop(128 + signal.SIGTERM))
    fds = (config["fd_in"], config["fd_out"])
    worker = subprocess.Popen(command("worker", config), pass_fds=fds, close_fds=True,
                              stdin=subprocess.DEVNULL, start_new_session=True)
    for fd in fds:  # the worker holds the only copies: the parent sees EOF when it dies
        os.close(fd)
    status = worker.wait()
    stop(status if status >= 0 else 128 - status)  # killed by signal s -> 128 + s


# ==============================================================================================
# worker


def worker_main(config: dict) -> None:
    sys.path.insert(0, config["root"])
    import numpy  # noqa: F401  (imported before the memory limit, like torch)
    import torch

    torch.set_num_threads(1)
    from minialign.course import wire

    wire.unpack(*wire.split_frame(wire.pack({}, [numpy.zeros(1)])))  # import zipfile & codecs
    # now: later imports may be impossible once the limits are set and privileges dropped
    limits = set_limits(config)
    user = None
    if config.get("drop_privileges"):
        needed = [os.path.dirname(os.__file__), os.path.dirname(torch.__file__), config["root"]]
        user = drop_privileges(needed)
    server = Server(config["fd_in"], config["fd_out"], wire, config.get("max_message_chars"))
    server.send({"op": "ready", "pid": os.getpid(), "limits": limits, "user": user})
    server.serve()


def set_limits(config: dict) -> dict:
    import resource

    applied = {}

    def limit(name, value):
        what = getattr(resource, name, None)
        if what is None or value is None:
            return
        try:
            resource.setrlimit(what, (value, value))
            applied[name] = value
        except (ValueError, OSError):
            pass

    vm = _vm_size_bytes()
    if vm is not None and config.get("memory_mb"):
        limit("RLIMIT_AS", vm + int(config["memory_mb"]) * 2**20)
    if config.get("cpu_s"):
        cpu = int(config["cpu_s"])
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))  # SIGXCPU, then SIGKILL
            applied["RLIMIT_CPU"] = cpu
        except (ValueError, OSError):
            pass
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails instead of killing
    limit("RLIMIT_FSIZE", int(config.get("fsize_mb", 64)) * 2**20)
    limit("RLIMIT_CORE", 0)
    return applied


def _vm_size_bytes():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def readable_by_others(path: str) -> bool:
    """True when every folder on the way to `path` lets other users in, and `path` is readable."""
    import stat

    path = os.path.realpath(path)
    parts = path.split(os.sep)
    for i in range(2, len(parts) + 1):
        folder = os.sep.join(parts[:i]) or os.sep
        try:
            mode = os.stat(folder).st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH or (folder == path and not mode & stat.S_IROTH):
            return False
    return True


def drop_privileges(needed=()):
    """Run as `nobody` when started as root: student code then cannot raise its limits, write
    the grader's files, or signal the parent. Skipped (returns None) when not root, or when
    `nobody` could not read the folders in `needed` (Python's standard library, torch, the
    course), since student code must still be able to import from them."""
    if not hasattr(os, "getuid") or os.getuid() != 0:
        return None
    if not all(readable_by_others(p) for p in needed):
        return None
    try:
        import pwd

        entry = pwd.getpwnam("nobody")
        uid, gid = entry.pw_uid, entry.pw_gid
    except (ImportError, KeyError):
        uid = gid = 65534
    try:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    except OSError:
        return None
    return "nobody"


class Server:
    """Serves the parent's requests until the request pipe closes."""

    def __init__(self, fd_in, fd_out, wire, max_message_chars=None):
        self.fd_in, self.fd_out, self.wire = fd_in, fd_out, wire
        self.module = None
        self.filename = None
        self.objects = {}  # handle -> object kept in the child
        self.max_chars = max_message_chars or 2000
        self.request_id = None

    def send(self, message, arrays=()):
        message["id"] = self.request_id
        self.wire.write_frame(self.fd_out, message, arrays)

    def serve(self):
        while True:
            try:
                message, arrays = self.wire.read_frame(self.fd_in)
            except EOFError:
                os._exit(0)
            self.request_id = message.get("id")
            handler = {"load": self.load, "call": self.call,
                       "getattr": self.getattr}.get(message.get("op"))
            try:
                reply, out = handler(message, arrays) if handler else \
                    ({"ok": False, "error": _error("ProtocolError", "unknown op")}, [])
                self.send(reply, out)
            except self.wire.Unsupported as e:
                self.send({"ok": False, "error": _error("ValueError", f"cannot send {e}")})

    # ------------------------------------------------------------------------------------------
    # load

    def load(self, message, _arrays):
        import ast
        import types

        source, self.filename = message["source"], message["filename"]
        tree, problems = parse_salvaging(source, self.filename)
        module = types.ModuleType(message["module"])
        module.__file__ = self.filename
        module.__doc__ = ast.get_docstring(tree) if tree is not None else None
        sys.modules[message["module"]] = module  # dataclasses and friends look modules up
        self.module = module
        skip = set(message.get("skip", []))
        flags = _future_flags(tree) if tree is not None else 0
        for stmt in tree.body if tree is not None else []:
            if stmt.lineno in skip:
                continue
            self.send({"op": "progress", "line": stmt.lineno})
            try:
                code = compile(ast.Module(body=[stmt], type_ignores=[]), self.filename, "exec",
                               flags=flags, dont_inherit=True)
                exec(code, module.__dict__)
            except BaseException as e:  # noqa: BLE001 - student code may raise anything
                problems.append({"line": stmt.lineno, "names": _names_bound(stmt),
                                 "message": self._describe(e)})
        names = {name: self.describe_name(name) for name in message.get("names", [])}
        return {"op": "loaded", "ok": True, "problems": problems, "names": names}, []

    def describe_name(self, qualname):
        import inspect

        obj = self.module
        for part in qualname.split("."):
            try:
                obj = inspect.getattr_static(obj, part)
            except AttributeError:
                return {"kind": "missing"}
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        if not inspect.isfunction(obj):
            kind = "class" if isinstance(obj, type) else "other"
            return {"kind": kind, "type": type(obj).__name__}
        try:
            sig = inspect.signature(obj)
            params = [[p.name, p.kind.name] for p in sig.parameters.values()]
            return {"kind": "function", "params": params, "signature": str(sig)[:300]}
        except (TypeError, ValueError):
            return {"kind": "function", "params": None, "signature": "?"}

    # ------------------------------------------------------------------------------------------
    # call

    def call(self, message, arrays):
        wire = self.wire
        try:
            args = wire.decode(message.get("args", []), arrays, resolve=self._resolve)
            kwargs = wire.decode(message.get("kwargs", {"$dict": [], "type": "dict"}), arrays,
                                 resolve=self._resolve)
            fn = self._target(message["target"])
        except LookupError as e:
            return {"ok": False, "error": _error("AttributeError", str(e))}, []
        try:
            result = fn(*args, **kwargs)
            grads = self._backward(message["backward"], result, args, kwargs) \
                if message.get("backward") else None
        except BaseException as e:  # noqa: BLE001
            return {"ok": False, "error": self._error_of(e)}, []
        out = []
        try:
            if message.get("keep"):
                number = len(self.objects) + 1
                self.objects[number] = result
                value = {"$handle": number, "type": type(result).__name__}
            else:
                value = wire.encode(result, out)
            reply = {"ok": True, "value": value}
            if message.get("return_args"):
                reply["args"] = wire.encode(list(args), out, where="an argument after the call")
                reply["kwargs"] = wire.encode(kwargs, out, where="an argument after the call")
            if grads is not None:
                reply["grads"] = wire.encode(grads, out, where="a gradient")
        except wire.Unsupported as e:
            return {"ok": False, "bad_return": e.type_name, "where": e.where}, []
        except BaseException as e:  # noqa: BLE001 - e.g. a student's patch of Tensor.numpy
            return {"ok": False, "error": self._error_of(e, "while sending the result")}, []
        return reply, out

    def getattr(self, message, _arrays):
        obj = self.objects.get(message.get("handle"))
        try:
            value = getattr(obj, message["name"])
            out = []
            return {"ok": True, "value": self.wire.encode(value, out)}, out
        except self.wire.Unsupported as e:
            return {"ok": False, "bad_return": e.type_name, "where": e.where}, []
        except BaseException as e:  # noqa: BLE001
            return {"ok": False, "error": self._error_of(e)}, []

    def _target(self, target):
        if isinstance(target, dict):  # a method of a kept object
            obj = self.objects.get(target.get("handle"))
            if obj is None:
                raise LookupError("unknown object handle")
            return getattr(obj, target["method"])
        obj = self.module
        for part in str(target).split("."):
            if not hasattr(obj, part):
                raise LookupError(f"{target} is not defined in your file")
            obj = getattr(obj, part)
        return obj

    def _resolve(self, obj, decode):
        if "$handle" in obj:
            if obj["$handle"] not in self.objects:
                raise LookupError("unknown object handle")
            return self.objects[obj["$handle"]]
        import importlib

        module_name, _, attr = obj["$build"].partition(":")
        if not module_name.startswith("minialign."):
            raise LookupError("Build targets must be in minialign")
        target = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
        return target(*decode(obj.get("args", [])), **decode({"$dict": [
            [k, v] for k, v in obj.get("kwargs", {}).items()], "type": "dict"}))

    @staticmethod
    def _backward(spec, result, args, kwargs):
        """Backpropagate the sum of the result (or of result[spec["output"]]) to tensor inputs."""
        import torch

        output = result if spec.get("output") is None else result[spec["output"]]
        if type(output) is not torch.Tensor or not output.requires_grad:
            return {"connected": False, "args": [None] * len(args),
                    "kwargs": {k: None for k in kwargs}}
        output.sum().backward()

        def grad(x):
            return x.grad if type(x) is torch.Tensor and x.requires_grad else None

        return {"connected": True, "args": [grad(a) for a in args],
                "kwargs": {k: grad(v) for k, v in kwargs.items()}}

    def _error_of(self, e, context=""):
        import traceback

        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == self.filename]
        lines = [f"line {f.lineno}, in {f.name}: {(f.line or '').strip()}" for f in frames[-4:]]
        error = _error(type(e).__name__, self._describe(e, with_type=False), "\n".join(lines))
        if context:
            error["context"] = context
        return error

    def _describe(self, e, with_type=True):
        try:
            text = str(e)
        except BaseException:  # noqa: BLE001
            text = "<the exception could not be printed>"
        if isinstance(e, SystemExit):
            text = f"SystemExit({e.code!r}): sys.exit() was called"
        text = text[: self.max_chars]
        return f"{type(e).__name__}: {text}" if with_type else text


def _error(type_name, message, traceback=""):
    return {"type": type_name, "message": message, "traceback": traceback}


def _names_bound(stmt) -> list[str]:
    name = getattr(stmt, "name", None)
    return [name] if isinstance(name, str) else []


def _future_flags(tree) -> int:
    import __future__
    import ast

    flags = 0
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            for alias in node.names:
                feature = getattr(__future__, alias.name, None)
                if feature is not None:
                    flags |= feature.compiler_flag
    return flags


# ==============================================================================================
# reading a file with syntax errors


TOP_LEVEL = re.compile(r"^(?:async\s+def|def|class|@|[A-Za-z_])")
DEFINES = re.compile(r"^(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)", re.M)


def parse_salvaging(source: str, filename: str, max_repairs: int = 20):
    """(ast.Module or None, problems). A syntax error blanks out the top-level block that holds
    it (the lines stay, empty, so line numbers do not move) and parsing is tried again; the
    problems name the definitions that were lost."""
    import ast

    lines = source.split("\n")
    problems = []
    for _ in range(max_repairs):
        try:
            return ast.parse("\n".join(lines), filename=filename), problems
        except (ValueError, RecursionError, MemoryError) as e:  # null bytes, absurd nesting
            problems.append({"line": None, "names": [],
                             "message": f"the file could not be parsed ({type(e).__name__})"})
            return None, problems
        except SyntaxError as e:
            where = (e.lineno or 1) - 1
            start, end = _block_around(lines, min(max(where, 0), len(lines) - 1))
            block = "\n".join(lines[start:end])
            names = DEFINES.findall(block)
            problems.append({"line": e.lineno, "names": names,
                             "message": f"SyntaxError: {e.msg}"})
            if not block.strip():
                break
            for i in range(start, end):
                lines[i] = ""
    problems.append({"line": None, "names": [], "message": "the file could not be parsed"})
    return None, problems


def _block_around(lines, i):
    """[start, end) of the top-level statement block containing line index i."""
    start = i
    while start > 0 and not TOP_LEVEL.match(lines[start]):
        start -= 1
    while start > 0 and lines[start - 1].startswith("@"):
        start -= 1
    end = i + 1
    while end < len(lines) and not (TOP_LEVEL.match(lines[end]) and not
                                    lines[end].startswith(("else", "elif", "except", "finally"))):
        end += 1
    return start, end


if __name__ == "__main__":  # pragma: no cover - run through BOOTSTRAP
    main(sys.argv[1:])
