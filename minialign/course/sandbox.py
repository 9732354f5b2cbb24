"""The child side of grading: where student code runs, and nothing is trusted.

Two processes per student file (three with namespaces), started by `runner.Worker` in the
trusted parent (forked from the zygote, see "Fork server" below, or as new Pythons), which
plans the isolation (see `isolation.py`) and passes it in the config:

  warden   stdlib only (a fork of the zygote also holds torch, unused). Joins the
           submission's cgroups (a limit on memory and on the number of processes for the
           submission as a whole), then, where the machine allows, enters new
           mount and PID namespaces: it forks a second warden that is process 1 of the new PID
           namespace, so that when it ends the kernel kills every process the student code
           started (a double-forked daemon in a new session included), and builds a private
           view of the file system (`private_view`): empty folders over the course repository,
           the submissions, the report's folder and the grader's home, fresh /tmp, /var/tmp
           and /dev/shm that vanish with the namespace. Without namespaces it is a "child
           subreaper" (Linux) that kills what is left under it, and, when student code runs
           as a uid of its own, every process of that uid. It dies with the parent.
  worker   `python -I` (no PYTHON* variables, no user site, no script folder on sys.path: a
           `conftest.py`, `sitecustomize.py` or `torch.py` in the student's folder is never
           imported), cwd a private temporary folder (also HOME and TMPDIR), a minimal
           environment, the course library on sys.path being the copy the parent prepared (the
           exercises of the chapter graded are stubs in it). It imports torch, then limits
           itself: address space (current size + a budget), CPU seconds, file size, no core
           dumps, a process count (`drop_privileges`), and, when the parent gave it a uid,
           the switch to it. Then it serves requests from the parent over a dedicated pipe (not
           stdout), one at a time:
             load     run the student's file (sent as text) statement by statement into a
                      fresh module: a statement that raises is reported and skipped; a
                      syntax error (or a NUL byte) drops only the top-level definition that
                      holds it
             call     call a function, a method of a kept object, or a class (`keep`: keep
                      the result in the child and answer with a handle); optionally return the
                      arguments after the call and the gradients of tensor arguments
             getattr  read an attribute of a kept object
             build    run trusted library code, a `wire.Build` (a function of the minialign
                      package; its arguments may name kept objects), and keep the result
                      (a handle) or send it back: how a check builds a model and its
                      optimizer here, hands them to a student's training step, then reads
                      back the parameters (`fixtures.py`). The parent chooses every Build;
                      what comes back is data it compares, like any reply
Replies are `wire` frames; anything the student returns that is not a plain value or tensor
comes back as "an object of type X". The student's stdout and stderr go to a file that the
parent reads and truncates. The parent holds the expected values and decides pass/fail; it
enforces the wall-clock limits and kills the warden (which kills the rest) when they run out.

This module is loaded by path in the warden (so that the warden imports no package code), and
runs as `python -I -c BOOTSTRAP <this file> warden|worker|probe|zygote <json config>`.

Fork server (Linux). Importing torch takes a fresh Python about a second of CPU, which would be
paid by every worker. So a grading run starts one more process, the zygote (`zygote_main`): a
`python -I` like the others, with the same minimal environment, that imports numpy and torch
(and, before the first worker of a chapter whose checks train, takes one optimizer step on a
tiny model: torch imports much of itself lazily, at first use) and runs nothing else (no package
code, no student code, no answer): it only forks. Each warden is a fork of it (`_become_warden`:
a new session, stdin from /dev/null, stdout and stderr to the worker's output file, the worker's
environment and folder, every other file descriptor closed), and the warden forks the worker
instead of starting a new Python. What each process does after that is what it did before: the
same namespaces, cgroups, limits, uid switch. The zygote hands the parent, for each warden, a
pipe on which it writes the warden's exit status once it ends, and reaps it only when the parent
says so, so that the parent can signal the warden (and its process group) by pid without racing
a new process that took the number. Student code cannot reach the zygote: it runs as another uid
or in another PID namespace (without either, as the same user, it could reach the grader
itself). `Limits.fork_server = False`, or a platform other than Linux, starts every warden and
worker as a new Python instead.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading

BOOTSTRAP = ("import sys, importlib.util as u; s = u.spec_from_file_location('minialign_sandbox',"
             " sys.argv[1]); m = u.module_from_spec(s); s.loader.exec_module(m); "
             "m.main(sys.argv[2:])")

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
EXIT_PARENT_GONE = 70  # the warden found its parent already dead
EXIT_SETUP_FAILED = 71  # the isolation the parent planned could not be set up (see the output)

# Linux constants (sched.h, mount.h)
CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER = 0x00020000, 0x20000000, 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = \
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm")  # world-writable: fresh and private per worker


def main(argv):
    role, config = argv[0], json.loads(argv[1])
    if role == "warden":
        warden_main(config)
    elif role == "worker":
        worker_main(config)
    elif role == "probe":
        probe_main(config)
    elif role == "zygote":
        zygote_main(config)
    else:
        raise SystemExit(f"unknown role {role!r}")


def command(role: str, config: dict, script: str | None = None) -> list[str]:
    return [sys.executable, "-I", "-u", "-c", BOOTSTRAP, script or os.path.abspath(__file__),
            role, json.dumps(config)]


# ==============================================================================================
# warden


def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> bool:
    try:
        _, libc = _libc()
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False  # not Linux: process-group kills only


def _check(result: int, what: str) -> None:
    if result != 0:
        ctypes, _ = _libc()
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source, target, fstype, flags, data=None) -> None:
    ctypes, libc = _libc()
    encode = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags),
                      encode(data)), f"mount on {target}")


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


def kill_uid(uid: int) -> None:
    """Kill every process running as `uid` (a uid used by this worker only): a child switches
    to that uid and sends SIGKILL to every process it may signal, until none is left."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            for _ in range(10000):
                os.kill(-1, signal.SIGKILL)  # every process of this uid, except the caller
        except (ProcessLookupError, PermissionError):
            os._exit(0)  # nothing left to signal
        except OSError:
            pass
        os._exit(1)
    os.waitpid(pid, 0)


def join_cgroups(procs_files) -> None:
    """Move this process (and so everything it starts) into the submission's cgroups."""
    for path in procs_files:
        with open(path, "w") as f:
            f.write(str(os.getpid()))


def warden_main(config: dict) -> None:
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # the parent dies -> we clean up and go
    if os.getppid() != config["parent_pid"]:
        os._exit(EXIT_PARENT_GONE)
    try:
        join_cgroups(config.get("cgroups", []))
        if config.get("namespaces"):
            _enter_namespaces(bool(config.get("user_namespace")))
    except OSError as e:
        print(f"minialign sandbox: {e}", file=sys.stderr)
        os._exit(EXIT_SETUP_FAILED)
    if not config.get("namespaces"):
        supervise(config)  # never returns: it exits with the worker's status
    # the next child is process 1 of the new PID namespace: it builds the private view and
    # supervises the worker; when it ends, the kernel kills whatever is left in the namespace
    inner = os.fork()
    if inner == 0:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the outer warden is killed -> so are we
        try:
            private_view(config["view"], config.get("uid"), config["workdir"])
        except OSError as e:
            print(f"minialign sandbox: {e}", file=sys.stderr)
            os._exit(EXIT_SETUP_FAILED)
        supervise(config)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(inner, signal.SIGKILL))
    _, status = os.waitpid(inner, 0)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status)
             else 128 + os.WTERMSIG(status))


def _enter_namespaces(user: bool) -> None:
    """New mount and PID namespaces (and a user namespace when not root, mapping our own ids,
    so that student code keeps this uid and gets no capability once it runs a program)."""
    _, libc = _libc()
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWPID | (CLONE_NEWUSER if user else 0)
    _check(libc.unshare(flags), "unshare")
    if user:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")


def private_view(view: dict, uid, workdir: str) -> None:
    """The file system as student code sees it (we are in a new mount namespace).

    view["hide"]: folders covered by an empty one (the course repository with its solutions,
    the submissions, the report's folder, the grader's home); view["keep"]: folders shown again
    inside a hidden one, read-only (Python, its packages, the library copy prepared for this
    chapter). /tmp, /var/tmp and /dev/shm become fresh, size-limited and private."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here leaks out
    keep = [p for p in view["keep"] if os.path.isdir(p)]
    handles = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in keep}  # before covering
    hide = [p for p in view["hide"] if os.path.isdir(p) and p != "/"]
    inside_keep = lambda p: any(p != k and p.startswith(k.rstrip("/") + "/") for k in keep)  # noqa: E731
    size = int(view.get("tmp_mb", 256))
    for path in sorted([p for p in hide if not inside_keep(p)], key=len):
        if os.path.isdir(path):  # not when an outer hidden folder already covers it
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    for path in PRIVATE_TMP:
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={size}m")
    for path in sorted(keep, key=len):
        os.makedirs(path, exist_ok=True)  # inside a covering folder; no-op when not hidden
        _mount(f"/proc/self/fd/{handles[path]}", path, None, MS_BIND | MS_REC)
        _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _kept_flags(path))
        os.close(handles[path])
    for path in sorted([p for p in hide if inside_keep(p)], key=len):
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    try:  # only this namespace's processes in /proc (and no way to the host's through it)
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        pass  # signals still cannot cross the namespace; the parent reports what it planned
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    if uid is not None:
        os.chown(workdir, uid, uid)


def _kept_flags(path: str) -> int:
    """The flags of the mount at `path` that a read-only remount must repeat. In a user
    namespace (the grader is not root) the flags of the mounts it inherited (nosuid, nodev,
    noexec: /tmp is often mounted so) are locked, and a remount that leaves one out fails with
    EPERM."""
    found = os.statvfs(path).f_flag
    pairs = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
             (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
             (os.ST_RELATIME, MS_RELATIME))
    return sum(ms for st, ms in pairs if found & st)


def supervise(config: dict) -> None:
    """Start the worker, wait for it, then kill what it left behind, and exit with its status."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    worker = None

    def stop(code):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if worker is not None:
            try:
                os.killpg(worker.pid, signal.SIGKILL)  # the worker and its process group
            except (ProcessLookupError, PermissionError):
                pass
        if config.get("uid") is not None and not config.get("namespaces"):
            kill_uid(config["uid"])  # a process in a new session that escaped the group
        kill_descendants()  # whatever escaped the group (setsid) re-parented to us
        os._exit(code)

    signal.signal(signal.SIGTERM, lambda *_: stop(128 + signal.SIGTERM))
    fds = (config["fd_in"], config["fd_out"])
    workdir = config["workdir"]
    env = dict(os.environ, HOME=workdir, TMPDIR=workdir)
    if config.get("forked"):  # a fork of the zygote: torch is imported already
        worker = _fork_worker(config, env)
    else:
        worker = subprocess.Popen(command("worker", config), pass_fds=fds, close_fds=True,
                                  stdin=subprocess.DEVNULL, start_new_session=True,
                                  cwd=workdir, env=env)
    for fd in fds:  # the worker holds the only copies: the parent sees EOF when it dies
        os.close(fd)
    status = worker.wait()
    stop(status if status >= 0 else 128 - status)  # killed by signal s -> 128 + s


class _Forked:
    """A forked child, with the two things `supervise` asks of a Popen: pid and wait()."""

    def __init__(self, pid: int):
        self.pid = pid

    def wait(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)  # killed by signal s -> -s, as Popen


def _fork_worker(config: dict, env: dict) -> _Forked:
    """The worker as a fork of this warden: what `command("worker")` would have started,
    without starting Python again."""
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # supervise's handler is the warden's
            os.setsid()
            os.chdir(env["HOME"])
            os.environ.clear()
            os.environ.update(env)
            _close_fds_except({0, 1, 2, config["fd_in"], config["fd_out"]})
            worker_main(config)
        finally:
            os._exit(1)  # never back into the warden's code
    return _Forked(pid)


def _close_fds_except(keep: set[int]) -> None:
    try:
        open_fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    except OSError:
        open_fds = range(os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024)
    for fd in open_fds:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def probe_main(config: dict) -> None:
    """Exit 0 when the namespaces and the private view work on this machine (see isolation.py)."""
    try:
        _enter_namespaces(bool(config.get("user_namespace")))
        inner = os.fork()
        if inner == 0:
            try:
                private_view(config["view"], None, config["workdir"])
                os._exit(0)
            except OSError as e:
                print(f"minialign sandbox: {e}", file=sys.stderr)
                os._exit(EXIT_SETUP_FAILED)
        _, status = os.waitpid(inner, 0)
        os._exit(os.waitstatus_to_exitcode(status))
    except OSError as e:
        print(f"minialign sandbox: {e}", file=sys.stderr)
        os._exit(EXIT_SETUP_FAILED)


# ==============================================================================================
# zygote (fork server)


def zygote_main(config: dict) -> None:
    """Import numpy and torch once, then fork a warden per request, until the parent goes.

    Requests come on a SOCK_SEQPACKET socket (config["fd"]), one JSON message each:
      {"op": "fork", "config", "env", "cwd", "warm"} with three file descriptors (the worker's
          request pipe, its reply pipe, its output file): answered {"pid"} with the read end
          of a pipe on which the warden's exit code is written when it ends
      {"op": "reap", "pid"}: the parent is done with that warden; the zygote may reap it
    At EOF (the parent closed the socket, or died) the wardens left get SIGTERM and the zygote
    exits."""
    import select
    import socket

    import numpy  # noqa: F401  (what every worker imports first)
    import torch

    torch.set_num_threads(1)  # as the workers; the zygote stays single-threaded, safe to fork
    warm = False
    sock = socket.socket(fileno=config["fd"])
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)  # a child ending wakes the select below
    signal.signal(signal.SIGCHLD, lambda *_: None)
    wardens = {}  # pid -> write end of its status pipe (None once the status was sent)
    sock.send(json.dumps({"op": "ready", "pid": os.getpid()}).encode())
    while True:
        readable, _, _ = select.select([sock, wake_r], [], [])
        if wake_r in readable:
            os.read(wake_r, 4096)
        for pid, status_w in list(wardens.items()):
            if status_w is None:
                continue
            ended = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            if ended is not None:  # still a zombie: its pid is not free until "reap"
                code = ended.si_status if ended.si_code == os.CLD_EXITED else -ended.si_status
                os.write(status_w, f"{code}\n".encode())
                os.close(status_w)
                wardens[pid] = None
        if sock not in readable:
            continue
        message, fds, _, _ = socket.recv_fds(sock, 1 << 20, 3)
        if not message:
            break
        request = json.loads(message)
        if request.get("op") == "reap":
            if request.get("pid") in wardens:
                os.waitpid(request["pid"], 0)
                del wardens[request["pid"]]
            continue
        if request.get("warm") and not warm:
            _warm_up_training()
            warm = True
        status_r, status_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            _become_warden(request, fds)  # (closes the zygote's descriptors: sock, pipes)
        for fd in fds:
            os.close(fd)
        wardens[pid] = status_w
        socket.send_fds(sock, [json.dumps({"pid": pid}).encode()], [status_r])
        os.close(status_r)
    for pid in wardens:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for pid in wardens:
        os.waitpid(pid, 0)
    os._exit(0)


def _warm_up_training() -> None:
    """What torch imports only when first used costs each worker again about as much as
    `import torch` did: the first optimizer pulls in torch._dynamo (about 800 modules). One
    AdamW step on a tiny model here, before the first fork for a chapter whose checks train
    (markers.Chapter.trains), and every later fork starts with them loaded. Trusted code only."""
    import torch

    layer = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    loss = torch.nn.functional.cross_entropy(layer(torch.zeros(3, 4)), torch.zeros(3).long())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(layer.parameters(), 1.0)
    optimizer.step()


def _become_warden(request: dict, fds: list[int]) -> None:
    """In a fresh fork of the zygote: set up what `Popen(command("warden"))` would have
    given (a new session, stdin /dev/null, stdout and stderr to the output file, the
    environment and folder asked for, no other file descriptor) and run the warden."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        fd_in, fd_out, output = fds
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        config = dict(request["config"], fd_in=fd_in, fd_out=fd_out, forked=True,
                      parent_pid=os.getppid())
        _close_fds_except({0, 1, 2, fd_in, fd_out})
        sys.argv = ["-c", "warden"]
        warden_main(config)
    except BaseException as e:  # noqa: BLE001 - never back into the zygote's loop
        print(f"minialign sandbox: the forked warden failed: {e!r}", file=sys.stderr)
    finally:
        os._exit(EXIT_SETUP_FAILED)


# ==============================================================================================
# worker


def worker_main(config: dict) -> None:
    sys.path.insert(0, config["root"])  # the library copy: this chapter's exercises are stubs
    import numpy  # noqa: F401  (imported before the memory limit, like torch)
    import torch

    torch.set_num_threads(1)
    from minialign.course import wire

    wire.unpack(*wire.split_frame(wire.pack({}, [numpy.zeros(1)])))  # import zipfile & codecs
    # now: later imports may be impossible once the limits are set and privileges dropped
    limits = set_limits(config)
    uid = drop_privileges(config.get("uid"), config.get("max_processes"),
                          bool(config.get("user_namespace")))
    server = Server(config["fd_in"], config["fd_out"], wire, config.get("max_message_chars"))
    server.send({"op": "ready", "pid": os.getpid(), "limits": limits, "uid": uid})
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


def _tasks_of(uid: int):
    """Processes and threads whose real uid is `uid` (what RLIMIT_NPROC counts); None without
    /proc (macOS)."""
    count = 0
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return None
    for entry in entries:
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                count += int(fields.get("Threads", "1"))
        except (OSError, ValueError, KeyError):
            continue
    return count


def drop_privileges(uid, max_processes=None, user_namespace=False) -> int:
    """Switch to the uid the parent chose for this worker (one no other running worker has):
    student code then cannot signal the grader or a classmate, read their files, or raise its
    limits. A failure stops the worker: student code never runs as root by accident. Returns
    the uid student code runs as.

    Not root (the grader's own uid): RLIMIT_NPROC still bounds a fork bomb. It counts the
    processes and threads of the uid: in a user namespace of this worker's own, only the
    submission's (so `max_processes`, as with a uid of its own); otherwise every one of the
    grader's user, so the limit is what that user runs now plus `max_processes`."""
    if not hasattr(os, "getuid"):
        return -1
    import resource

    if os.getuid() != 0:
        running = 0 if user_namespace else _tasks_of(os.getuid())
        if max_processes and running is not None:
            count = max_processes + running
            _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
            if hard != resource.RLIM_INFINITY:
                count = min(count, hard)
            resource.setrlimit(resource.RLIMIT_NPROC, (count, count))
        return os.getuid()
    if uid is None:
        return 0  # refused for a class unless allowed (see isolation.py)
    if max_processes:  # processes (threads included) of this uid, the whole submission's
        resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    return os.getuid()


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
            handler = {"load": self.load, "call": self.call, "getattr": self.getattr,
                       "build": self.build}.get(message.get("op"))
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
                value = self._keep(result)
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

    def _keep(self, obj):
        number = len(self.objects) + 1
        self.objects[number] = obj
        return {"$handle": number, "type": type(obj).__name__}

    def build(self, message, arrays):
        value = message.get("value")
        if type(value) is not dict or "$build" not in value:
            return {"ok": False, "error": _error("ProtocolError", "build takes a Build")}, []
        try:
            result = self.wire.decode(value, arrays, resolve=self._resolve)
        except LookupError as e:
            return {"ok": False, "error": _error("AttributeError", str(e))}, []
        except BaseException as e:  # noqa: BLE001 - student code may have broken anything
            return {"ok": False, "error": self._error_of(e)}, []
        out = []
        try:
            value = self._keep(result) if message.get("keep") else self.wire.encode(result, out)
        except self.wire.Unsupported as e:
            return {"ok": False, "bad_return": e.type_name, "where": e.where}, []
        except BaseException as e:  # noqa: BLE001
            return {"ok": False, "error": self._error_of(e, "while sending the result")}, []
        return {"ok": True, "value": value}, out

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


# The grader parses chapter files in several threads at once; on CPython 3.11 concurrent
# ast.parse calls can fail with "SystemError: AST constructor recursion depth mismatch" (an
# interpreter bug, fixed in later releases), so parses here take turns.
_PARSE_LOCK = threading.Lock()


def parse_salvaging(source: str, filename: str, max_repairs: int = 20):
    """(ast.Module or None, problems). A syntax error, or a NUL byte (which Python refuses
    anywhere in a file), blanks out the top-level block that holds it (the lines stay, empty,
    so line numbers do not move) and parsing is tried again; the problems name the definitions
    that were lost."""
    import ast

    lines = source.split("\n")
    problems = []

    def drop_block(where, message):
        start, end = _block_around(lines, min(max(where, 0), len(lines) - 1))
        block = "\n".join(lines[start:end])
        problems.append({"line": where + 1, "names": DEFINES.findall(block), "message": message})
        for i in range(start, end):
            lines[i] = ""
        return bool(block.strip())

    for i in range(len(lines)):
        if "\x00" in lines[i]:
            drop_block(i, "a NUL byte (\\0) is not allowed in a Python file")
    for _ in range(max_repairs):
        try:
            with _PARSE_LOCK:  # CPython 3.11's parser is not safe in threads (see _PARSE_LOCK)
                return ast.parse("\n".join(lines), filename=filename), problems
        except (ValueError, RecursionError, MemoryError) as e:  # absurd nesting
            problems.append({"line": None, "names": [],
                             "message": f"the file could not be parsed ({type(e).__name__})"})
            return None, problems
        except SyntaxError as e:
            if not drop_block((e.lineno or 1) - 1, f"SyntaxError: {e.msg}"):
                break
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
