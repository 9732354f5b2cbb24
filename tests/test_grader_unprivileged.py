"""The hostile class again, graded by a grader that is NOT root (an instructor's account, CI).

`test_grader_adversarial.py` grades its attacking class as root: student code then gets a uid of
its own, namespaces and cgroups. Here the same submissions (a representative part of them, to
keep the time down) are graded by a grader running as an ordinary uid, the way most instructors
and CI systems run it. isolation.py then uses a user namespace with mount and PID namespaces
where the kernel allows unprivileged user namespaces, and otherwise only process groups and
rlimits; both are graded here (the second by turning namespaces off).

How, when the tests run as root: this file runs itself in three stages.

  1. the test            as root, starts stage 2 in a new mount namespace (`unshare --mount`)
  2. `--view UID`        still root, in that namespace: builds the private view isolation.py
                         builds for workers (`sandbox.private_view`): /root hidden, Python and
                         the venv shown again read-only (this machine's Python lives under
                         /root, where no other user may go), a fresh /tmp. Then it starts
                         stage 3 as UID, and once that is over, looks for what it left behind:
                         any process of UID, any file in /tmp, /var/tmp or /dev/shm.
  3. `--grade`           as UID: writes the class, grades it with `grade_submissions`, writes
                         what the test checks as JSON.

Stage 2's /tmp is a tmpfs mounted nosuid,nodev, as systemd mounts /tmp on many distributions;
the grader keeps its library copies there. That is how this test found that a read-only remount
in a user namespace must repeat such locked flags (`sandbox._kept_flags`): without it every
worker failed to start and every student got 0, while the namespace probe said all was well.

Skipped when the tests do not run as root (a uid of our own cannot be had) or without `unshare`.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from minialign.course import isolation  # noqa: E402

MARK = "7123.25"  # test_grader_adversarial's mark of a process a submission tried to leave behind
WORKDIR = "/tmp/unprivileged-grader"  # stage 3's home, in the private /tmp of stage 2

# submissions of test_grader_adversarial.py graded here: honest ones (`exercises` is the
# solutions; `solutions` is a wrong merge) and one or more of each class of attack on chapter 1
CLASS = ["exercises", "solutions", "exception", "syntax_error", "infinite_loop",
         "os_exit_in_function", "fake_passed_output", "conftest_and_site_plugins",
         "link_to_solutions", "link_to_a_classmate", "link_through_proc", "folder_is_a_link",
         "surrogates_and_escapes", "daemons_in_new_sessions", "fork_bomb",
         "writes_to_shared_tmp"]
NEEDS_NAMESPACES = ["reads_what_is_not_its_own", "signals_everything"]
# without namespaces, "student code runs as your user ... it could read your files and signal
# the grader" (docs/instructors.md): those two attacks would succeed by design and are left out;
# a smaller class keeps the time down
WITHOUT_NAMESPACES = ["exercises", "solutions", "infinite_loop", "os_exit_in_function",
                      "link_to_solutions", "link_through_proc", "surrogates_and_escapes",
                      "daemons_in_new_sessions", "fork_bomb", "writes_to_shared_tmp"]


def spare_uid() -> int:
    """A uid of isolation.py's range that no account or process uses (from the top, away from
    the ones a root-mode grader hands out first)."""
    for uid in range(isolation.LAST_UID - 1, isolation.FIRST_UID, -1):
        if not isolation._uid_in_use(uid):
            return uid
    pytest.skip("no free uid")


def processes_of(uid: int, but=()) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in but:
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except (OSError, ValueError):
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid or MARK in cmdline:
            found.append(f"{entry}: {cmdline[:200]}")
    return found


# ==============================================================================================
# the test (stage 1)


@pytest.fixture(scope="module")
def unprivileged(tmp_path_factory):
    if not isolation.is_root():
        pytest.skip("needs root, to run the grader as a uid of its own")
    if shutil.which("unshare") is None:
        pytest.skip("needs the unshare command (util-linux) for a private mount namespace")
    uid = spare_uid()
    results = {}
    for mode in ("namespaces", "no namespaces"):
        out = tmp_path_factory.mktemp("unprivileged") / "results.json"
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        start = time.monotonic()
        try:
            run = subprocess.run(
                ["unshare", "--mount", "--propagation", "private", sys.executable, __file__,
                 "--view", str(uid), str(fd), mode],
                pass_fds=(fd,), capture_output=True, cwd=REPO, timeout=400,
                stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        finally:
            os.close(fd)
        print(f"\n{mode}: graded as uid {uid} in {time.monotonic() - start:.1f} s")
        log = (run.stdout + run.stderr).decode("utf-8", "replace")
        if run.returncode != 0 or not out.stat().st_size:
            if "unshare failed" in log or "Operation not permitted" in log.split("\n")[0]:
                pytest.skip(f"no private mount namespace here: {log[-500:]}")
            pytest.fail(f"stage 2 failed ({run.returncode}):\n{log[-4000:]}")
        results[mode] = json.loads(out.read_text())
        # stage 2 is gone, and with it its namespace: nothing of the uid is left on the host
        assert processes_of(uid) == [], mode
    return results


MODES = ["namespaces", "no namespaces"]


@pytest.mark.parametrize("mode", MODES)
def test_every_student_gets_exactly_what_was_earned(unprivileged, mode):
    from test_grader_adversarial import LINKS, SUBMISSIONS

    result = unprivileged[mode]
    assert result["returncode"] == 0, result["log"]
    graded = result["reports"]
    assert sorted(graded) == sorted(result["class"])  # a complete report: every student
    for name, report in graded.items():
        expected = SUBMISSIONS[name][1]
        items = {item["id"]: item for item in report["items"]}
        for exercise_id, status in expected.items():
            item = items[exercise_id]
            assert item["status"] == status, (name, exercise_id, item)
            assert item["points"] == (item["max_points"] if status == "passed" else 0), item
        for item in report["items"]:
            if item["id"] not in expected and item["kind"] == "exercise":
                assert item["points"] == 0, (name, item)
                assert item["status"] == "not attempted" or name in LINKS, (name, item)
    assert result["csv_students"] == sorted(result["class"])  # every row is in the CSV
    assert all(result["gradescope_ok"].values())


@pytest.mark.parametrize("mode", MODES)
def test_the_report_says_how_student_code_was_isolated(unprivileged, mode):
    result = unprivileged[mode]
    note = result["reports"]["exercises"]["notes"]["0"][0]
    assert note.startswith("student code ran as the grader's user"), note
    assert ("namespaces" in note) == result["namespaces"], note
    assert "cgroup" not in note and "AS ROOT" not in note
    if not result["namespaces"]:
        assert "could read the grader's files" in note


@pytest.mark.parametrize("mode", MODES)
def test_nothing_is_left_behind(unprivileged, mode):
    result = unprivileged[mode]
    assert result["processes_left"] == []  # no process of the uid, no `sleep MARK` daemon
    assert result["plugins_imported"] == []
    left = result["files_left"]
    if result["namespaces"]:
        assert left == []
    else:
        # docs/instructors.md: without namespaces, what student code writes to /tmp, /var/tmp or
        # /dev/shm as your user is not told apart from your files and stays; the grader's own
        # temporary folders are all removed
        assert [p for p in left if "PWNED_tmp" not in p] == []


def test_namespaces_are_used_where_the_kernel_allows_them(unprivileged):
    """On this machine (the suite's), unprivileged user namespaces are expected to work; if a
    kernel refuses them, the first mode is graded without namespaces and says so."""
    result = unprivileged["namespaces"]
    assert result["namespaces"] == result["namespaces_work"]
    if result["namespaces"]:
        assert set(NEEDS_NAMESPACES) <= set(result["class"])


# ==============================================================================================
# stage 2: root in a private mount namespace


def view_main(uid: int, fd: int, mode: str) -> None:
    from minialign.course import sandbox

    # what isolation.py does for a worker: /root hidden, Python (under /root here) and the
    # venv shown again read-only, fresh /tmp, /var/tmp and /dev/shm; WORKDIR belongs to `uid`.
    # The repository stays visible (read-only) wherever it is: a CI clone may live in /tmp
    view = {"hide": ["/root"], "keep": [*isolation.python_paths(), str(REPO)], "tmp_mb": 1024}
    sandbox.private_view(view, uid, WORKDIR)
    os.chmod(WORKDIR, 0o700)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": WORKDIR, "LANG": "C.UTF-8",
           "MINIALIGN_NO_PROGRESS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    results = Path(WORKDIR) / "results.json"
    run = subprocess.run([sys.executable, __file__, "--grade", str(results), mode], user=uid,
                         group=uid, extra_groups=[], env=env, cwd=REPO, capture_output=True,
                         timeout=360, stdin=subprocess.DEVNULL)
    log = (run.stdout + run.stderr).decode("utf-8", "replace")[-6000:]
    left = []
    for _ in range(100):  # killed processes take a moment to be reaped
        left = processes_of(uid)
        if not left:
            break
        time.sleep(0.05)
    try:
        result = json.loads(results.read_text())
    except (OSError, ValueError):
        result = {"reports": {}, "class": ["?"]}
    result.update(returncode=run.returncode, log=log, processes_left=left)
    grader_files = {"results.json", "class"}
    result["plugins_imported"] = [str(p) for p in Path(WORKDIR).rglob("PWNED_*")]
    kept = view["keep"]  # their mount points, when they lie in /tmp (a CI clone), are ours

    def ours(path):
        return path == WORKDIR or any(k == path or k.startswith(path + "/") for k in kept)

    result["files_left"] = sorted(
        [os.path.join(f, p) for f in ("/tmp", "/var/tmp", "/dev/shm") for p in os.listdir(f)
         if not ours(os.path.join(f, p))]
        + [str(p) for p in Path(WORKDIR).iterdir() if p.name not in grader_files])
    with os.fdopen(fd, "w") as f:
        json.dump(result, f)


# ==============================================================================================
# stage 3: the grader, as an ordinary uid


def grade_main(results: str, mode: str) -> None:
    import csv
    import io

    sys.path.insert(0, str(HERE))
    import test_grader_adversarial as adversarial

    from minialign.course.grader import grade_submissions
    from minialign.course.report import render_csv, render_gradescope
    from minialign.course.runner import Limits

    assert os.getuid() != 0
    namespaces = mode == "namespaces" and isolation.namespaces_work(True)
    names = (CLASS + NEEDS_NAMESPACES) if namespaces else \
        WITHOUT_NAMESPACES if mode != "namespaces" else CLASS
    root = Path(WORKDIR) / "class"
    root.mkdir()
    adversarial._write_class(root, names)
    limits = Limits(load_s=4, memory_mb=1024, namespaces=mode == "namespaces")
    graded = grade_submissions(root, [1], time_limit=3, limits=limits, strict=True)
    rows = list(csv.DictReader(io.StringIO(render_csv(graded))))
    report = {
        "class": names, "namespaces": namespaces,
        "namespaces_work": isolation.namespaces_work(True),
        "reports": {r.student: {"items": [{"id": i.id, "kind": i.kind, "status": i.status,
                                           "points": i.points, "max_points": i.max_points,
                                           "message": i.message} for i in r.items],
                                "notes": {str(k): v for k, v in r.notes.items()}}
                    for r in graded},
        "csv_students": sorted({row["student"] for row in rows}),
        "gradescope_ok": {r.student: bool(json.loads(render_gradescope(r))["tests"])
                          for r in graded},
    }
    Path(results).write_text(json.dumps(report))


if __name__ == "__main__":
    if sys.argv[1] == "--view":
        view_main(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif sys.argv[1] == "--grade":
        grade_main(sys.argv[2], sys.argv[3])
