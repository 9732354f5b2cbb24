"""The parent's side of the fork server (the zygote in `sandbox.py`): one per grading run.

    server = ForkServer(env, cwd, log_path)   # starts `python -I ... zygote`; torch imported once
    warden = server.spawn(config, env, cwd, fds=(req_r, resp_w, output))
    warden.poll(); warden.wait(timeout=10); warden.send_signal(signal.SIGTERM)
    server.close()                            # the zygote ends; wardens left get SIGTERM

A `ForkedWarden` behaves like the `subprocess.Popen` of a warden (pid, returncode, poll,
wait, send_signal): the zygote writes its exit status to a pipe of its own, and keeps it a
zombie until the status was read, so that its pid (and process group) cannot be taken by
another process while the parent may still signal it.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import threading

from . import sandbox


class ForkServerError(RuntimeError):
    """The zygote could not start or stopped answering."""


class ForkServer:
    def __init__(self, env: dict, cwd, log_path, startup_s: float = 120.0):
        self._lock = threading.Lock()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = ours
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self.proc = subprocess.Popen(
                sandbox.command("zygote", {"fd": theirs.fileno()}),
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                cwd=cwd, env=env, start_new_session=True)
        finally:
            os.close(log)
            theirs.close()
        ready = select.select([self._sock], [], [], startup_s)[0]
        message = self._sock.recv(1 << 16) if ready else b""
        if not message or json.loads(message).get("op") != "ready":
            self.close()
            raise ForkServerError("the fork server did not start")

    def spawn(self, config: dict, env: dict, cwd, fds, warm: bool = False) -> "ForkedWarden":
        """A warden forked from the zygote, with `fds` (request pipe, reply pipe, output file)
        as config["fd_in"], config["fd_out"], stdout and stderr. warm: its worker will train
        (the zygote first loads what an optimizer's first use imports, once)."""
        request = {"op": "fork", "config": config, "env": env, "cwd": str(cwd), "warm": warm}
        with self._lock:
            if self._sock is None:
                raise ForkServerError("the fork server is closed")
            socket.send_fds(self._sock, [json.dumps(request).encode()], list(fds))
            message, status_fds, _, _ = socket.recv_fds(self._sock, 1 << 16, 1)
        if not message or not status_fds:
            for fd in status_fds:
                os.close(fd)
            raise ForkServerError("the fork server stopped answering")
        return ForkedWarden(self, json.loads(message)["pid"], status_fds[0])

    def reap(self, pid: int) -> None:
        with self._lock:
            if self._sock is not None:
                try:
                    self._sock.send(json.dumps({"op": "reap", "pid": pid}).encode())
                except OSError:
                    pass

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()  # EOF: the zygote stops its wardens and exits
                self._sock = None
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ForkedWarden:
    """A warden forked by the zygote, seen through the Popen methods the parent uses."""

    def __init__(self, server: ForkServer, pid: int, status_fd: int):
        self.server, self.pid, self._status = server, pid, status_fd
        self.returncode = None

    def poll(self):
        return self.wait(timeout=0, _raise=False)

    def wait(self, timeout: float | None = None, _raise: bool = True):
        if self.returncode is not None:
            return self.returncode
        if not select.select([self._status], [], [], timeout)[0]:  # (None: until it ends)
            if _raise:
                raise subprocess.TimeoutExpired(f"warden {self.pid}", timeout)
            return None
        text = os.read(self._status, 64).decode("ascii", "replace").strip()
        os.close(self._status)
        self._status = None
        try:
            self.returncode = int(text)
        except ValueError:  # the zygote died before it could tell
            self.returncode = -9
        self.server.reap(self.pid)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # still a zombie at worst until reaped: the pid is its own
            os.kill(self.pid, sig)
