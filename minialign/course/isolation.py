"""How student code is kept apart from the grader and from classmates, with what the machine has.

The grader runs on an instructor's Linux server as root, in a Gradescope container, or on a
student's laptop (macOS too). Each mechanism below is used where it works, and the report
says which ones were (`Isolation.describe`); none is required for grading to work.

  a uid per worker   when the grader runs as root, each running worker gets a uid of its own
                     (64000 and up, one no account or process uses): student code cannot
                     signal the grader or a classmate's worker, read files only the grader may
                     read, or write the grader's files. RLIMIT_NPROC then bounds its processes.
  namespaces         new mount and PID namespaces (plus a user namespace when not root, in
                     which RLIMIT_NPROC counts the submission's processes only):
                     every process a submission starts dies with its worker, none outside can
                     be signalled, and the file system it sees hides the course repository
                     (solutions, the real library), the submissions, the report's folder and
                     the grader's home; /tmp, /var/tmp and /dev/shm are fresh and private. A
                     Python installed where other users may not go (under /root) is shown
                     again, read-only, so that the uid switch works there too.
  cgroups (v1)       a pids and a memory cgroup per worker: a process count and a memory limit
                     for the submission as a whole (not per process), and a way to kill every
                     process in it.

Where none of these is available (macOS, a container without privileges) student code runs as
the grader's user in a process group that is killed after each chapter (on Linux, RLIMIT_NPROC
allows it what that user runs plus `max_processes`): it could read that user's files, and what
it writes to /tmp stays. `tests/test_grader_unprivileged.py` grades the hostile class with a
grader that is not root, in both ways. Grading a class as root without a uid switch is refused
unless the instructor allows it (`Limits.allow_root`, `--allow-root`).
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import signal
import site
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import sandbox
from .markers import LIBRARY_DIR, REPO_DIR, find_exercises
from .stublib import write_library

FIRST_UID, LAST_UID = 64000, 64999  # uids handed to workers (free ones only)
PYTHON_MEMORY_MB = 1024  # what Python and torch take in a worker, added to the memory budget
CGROUP_NAME = "minialign-grade"
# never hidden, even when a report or a submission sits right in one: the system needs them
SYSTEM_FOLDERS = {"/", "/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/dev",
                  "/proc", "/sys", "/run", "/var", "/opt", "/tmp", "/home"}


def is_root() -> bool:
    return hasattr(os, "getuid") and os.getuid() == 0


def readable_by_others(path) -> bool:
    """True when every folder on the way to `path` lets other users in, and `path` is readable."""
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


def python_paths() -> list[str]:
    """The folders a worker must be able to read: Python, its standard library, packages."""
    import numpy
    import torch

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.__file__),
             os.path.dirname(os.path.dirname(torch.__file__)),
             os.path.dirname(os.path.dirname(numpy.__file__)), *site.getsitepackages()}
    real = {os.path.realpath(p) for p in paths}
    real.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    found = sorted(p for p in paths | real if os.path.isdir(p))
    return [p for p in found if not any(p.startswith(q.rstrip("/") + "/") for q in found)]


# ==============================================================================================
# what this machine allows


@functools.lru_cache(maxsize=None)
def namespaces_work(user: bool) -> bool:
    """Can a child enter new mount + PID (+ user) namespaces and mount its private view?"""
    if not sys.platform.startswith("linux"):
        return False
    tmp = tempfile.mkdtemp(prefix="minialign-probe-")
    library = os.path.join(tmp, "library")  # kept inside a hidden folder, like the library copy
    try:
        os.mkdir(library)
        config = {"user_namespace": user, "workdir": "/tmp/minialign-work",
                  "view": {"hide": [tmp], "keep": python_paths() + [library], "tmp_mb": 1}}
        run = subprocess.run(sandbox.command("probe", config), capture_output=True, timeout=60,
                             stdin=subprocess.DEVNULL)
        return run.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@functools.lru_cache(maxsize=None)
def cgroup_parents() -> dict[str, Path]:
    """{"pids": folder, "memory": folder}: the cgroup v1 folders of this process in which we
    may create children (root, and the hierarchies mounted where Linux usually has them)."""
    if not is_root():
        return {}
    found = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        _, controllers, where = (line.split(":", 2) + ["", ""])[:3]
        for name in ("pids", "memory"):
            if name in controllers.split(","):
                folder = Path("/sys/fs/cgroup") / name / where.lstrip("/")
                if (folder / "cgroup.procs").exists() and os.access(folder, os.W_OK):
                    found[name] = folder
    return found if len(found) == 2 else {}


def _uid_in_use(uid: int) -> bool:
    import pwd

    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        pass
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return False
    for entry in entries:
        try:
            if os.stat(f"/proc/{entry}").st_uid == uid:
                return True
        except OSError:
            continue
    return False


# ==============================================================================================
# one worker's share


class Cgroup:
    """A pids and a memory cgroup (v1) for one worker: limits for the whole submission."""

    def __init__(self, parents: dict[str, Path], max_processes: int, memory_bytes: int):
        name = f"{CGROUP_NAME}-{os.getpid()}-{secrets.token_hex(4)}"
        self.folders = []
        try:
            for controller, parent in sorted(parents.items()):
                folder = parent / name
                folder.mkdir()
                self.folders.append(folder)
            pids, memory = parents["pids"] / name, parents["memory"] / name
            (pids / "pids.max").write_text(str(max_processes))
            (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
            swap = memory / "memory.memsw.limit_in_bytes"  # no swapping past the limit either
            if swap.exists():
                swap.write_text(str(memory_bytes))
        except OSError:
            self.remove()
            raise

    @property
    def procs_files(self) -> list[str]:
        return [str(f / "cgroup.procs") for f in self.folders]

    def pids(self) -> set[int]:
        found = set()
        for path in self.procs_files:
            try:
                found |= {int(x) for x in Path(path).read_text().split()}
            except (OSError, ValueError):
                pass
        return found

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup until it is empty (pids.max bounds the race)."""
        for _ in range(2000):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.005)

    def remove(self) -> None:
        for folder in self.folders:
            for _ in range(200):  # a killed process leaves the cgroup a moment after it died
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
        self.folders = []


@dataclass
class Plan:
    """How one worker is isolated (becomes part of the warden's config)."""

    uid: int | None = None  # the uid student code runs as; None: the grader's own
    namespaces: bool = False
    user_namespace: bool = False
    cgroup: Cgroup | None = None
    workdir: str = ""  # cwd, HOME and TMPDIR of the worker, as the worker sees it
    view: dict = field(default_factory=dict)

    def config(self) -> dict:
        return {"uid": self.uid, "namespaces": self.namespaces,
                "user_namespace": self.user_namespace, "workdir": self.workdir,
                "view": self.view, "cgroups": self.cgroup.procs_files if self.cgroup else []}


# ==============================================================================================
# one grading run


class Isolation:
    """Sandboxes of one grading run: library copies per chapter, uids, cgroups, hidden paths.

    hide: folders student code must not see (the submissions, the report's folder)."""

    def __init__(self, limits, hide=()):
        self.limits = limits
        self.root = Path(tempfile.mkdtemp(prefix=f"minialign-grade-{os.getpid()}-"))
        os.chmod(self.root, 0o755)  # the library copies in it are read by the workers' uids
        self._lock = threading.Lock()
        self._libraries: dict = {}
        self._uids_taken: set[int] = set()
        self.hide = sorted({os.path.realpath(p) for p in
                            [REPO_DIR, LIBRARY_DIR, Path.home(), self.root, *hide]}
                           - SYSTEM_FOLDERS)
        root = is_root()
        self.namespaces = bool(limits.namespaces) and namespaces_work(not root)
        self.cgroups = cgroup_parents() if limits.cgroups else {}
        python_readable = all(readable_by_others(p) for p in python_paths())
        self.switch_uid = root and limits.drop_privileges and (self.namespaces or
                                                               python_readable)
        self.as_root = root and not self.switch_uid
        self._fork_server = None  # started at the first worker (see fork_server)
        self._fork_server_failed = not (getattr(limits, "fork_server", True)
                                        and sys.platform.startswith("linux"))

    # ------------------------------------------------------------------------------------------

    def describe(self) -> str:
        """One line for the report: what kept this submission's code apart."""
        parts = []
        if self.switch_uid:
            parts.append("as a uid of its own")
        elif self.as_root:
            parts.append("AS ROOT (no other user could run Python here): it could read and "
                         "change any file and signal any process")
        else:
            parts.append("as the grader's user")
        if self.namespaces:
            parts.append("in its own mount and PID namespaces (the course files, other "
                         "submissions and the report hidden; private /tmp)")
        if self.cgroups:
            parts.append(f"in a cgroup (at most {self.limits.max_processes} processes and "
                         f"{self.limits.memory_mb + PYTHON_MEMORY_MB} MB for the submission)")
        if not self.namespaces and not self.switch_uid:
            parts.append("with no file-system isolation: it could read the grader's files")
        return "student code ran " + ", ".join(parts)

    def library(self, chapter: int | None) -> Path:
        """The library copy for `chapter` (its exercises stubbed), written once per run."""
        with self._lock:
            if chapter not in self._libraries:
                exercises = [e for e in find_exercises() if e.chapter == chapter]
                dest = self.root / f"library-ch{chapter or 0:02d}"
                self._libraries[chapter] = write_library(dest, exercises)
            return self._libraries[chapter]

    def plan(self, private: Path, library: Path) -> Plan:
        """The isolation of one worker; `private` is its own folder (output, cwd), `library`
        the library copy it imports (the only one it sees: the others hold this chapter's
        answers)."""
        plan = Plan(namespaces=self.namespaces, user_namespace=self.namespaces and not is_root())
        if self.switch_uid:
            plan.uid = self._take_uid()
        if self.cgroups:
            memory = (self.limits.memory_mb + PYTHON_MEMORY_MB) * 2**20
            try:
                plan.cgroup = Cgroup(self.cgroups, self.limits.max_processes, memory)
            except OSError:
                plan.cgroup = None
        if self.namespaces:
            plan.workdir = "/tmp/minialign-work"  # in the private /tmp
            plan.view = {"hide": self.hide, "keep": python_paths() + [str(library)],
                         "tmp_mb": self.limits.tmp_mb}
        else:
            workdir = private / "cwd"
            workdir.mkdir()
            if plan.uid is not None:
                os.chown(workdir, plan.uid, plan.uid)
            plan.workdir = str(workdir)
        return plan

    def release(self, plan: Plan) -> None:
        """After the worker is gone: kill what is left of it, remove its traces, free its uid."""
        if plan.cgroup is not None:
            plan.cgroup.kill_all()
            plan.cgroup.remove()
        if plan.uid is not None:
            if not plan.namespaces:
                remove_files_of(plan.uid)
            with self._lock:
                self._uids_taken.discard(plan.uid)

    def _take_uid(self) -> int:
        with self._lock:
            for uid in range(FIRST_UID, LAST_UID + 1):
                if uid not in self._uids_taken and not _uid_in_use(uid):
                    self._uids_taken.add(uid)
                    return uid
        raise RuntimeError("no free uid left for a worker")

    def fork_server(self):
        """The zygote the wardens of this run are forked from (see sandbox.py), started at
        the first call; None where it is off or could not start (then each warden and worker
        is a new Python)."""
        from .forkserver import ForkServer, ForkServerError
        from .runner import sandbox_env

        with self._lock:
            if self._fork_server is None and not self._fork_server_failed:
                try:
                    self._fork_server = ForkServer(sandbox_env(self.root), self.root,
                                                   self.root / "zygote.log",
                                                   self.limits.startup_s)
                except (OSError, ForkServerError):
                    self._fork_server_failed = True
            return self._fork_server

    def stop_fork_server(self) -> None:
        """Stop the fork server (it failed, or the run is over): every later worker would be a
        new Python."""
        with self._lock:
            server, self._fork_server = self._fork_server, None
            self._fork_server_failed = True
        if server is not None:
            server.close()

    def close(self) -> None:
        self.stop_fork_server()
        shutil.rmtree(self.root, ignore_errors=True)


def remove_files_of(uid: int) -> None:
    """Remove what a worker's uid left in the shared temporary folders (without namespaces,
    student code can write there; nothing else a uid of our range owns is the grader's)."""
    for folder in sandbox.PRIVATE_TMP:
        try:
            entries = os.scandir(folder)
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.stat(follow_symlinks=False).st_uid != uid:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)
                except OSError:
                    pass
