"""The Gradescope autograder zip (minialign/course/autograder.py): built, unzipped into an
/autograder-like tree, and run on a sample submission (setup.sh's pip install is not run)."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from minialign.course import autograder
from minialign.course.markers import REPO_DIR

SOLUTION = REPO_DIR / "solutions" / "ch01_tokenizer.py"


def test_zip_layout_and_setup(tmp_path):
    path = autograder.build(tmp_path / "autograder.zip", chapters=[1])
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        setup = z.read("setup.sh").decode()
        run = z.read("run_autograder").decode()
        modes = {i.filename: i.external_attr >> 16 for i in z.infolist()}
    assert {"setup.sh", "run_autograder", "minialign/__init__.py",
            "minialign/course/rubric.json"} <= set(names)
    assert not any(n.startswith(("solutions/", "exercises/", "tests/")) for n in names)
    assert not any("answer" in Path(n).name.lower() for n in names)
    assert modes["setup.sh"] & 0o111 and modes["run_autograder"] & 0o111
    assert "(3, 11)" in setup and "whl/cpu" in setup and "torch==" in setup
    for heavy in ("jupyter", "matplotlib", "pytest"):
        assert heavy not in setup  # grading imports none of them
    assert "--chapter 1" in run


def test_run_autograder_on_a_sample_submission(tmp_path):
    root = tmp_path / "autograder"
    (root / "source").mkdir(parents=True)
    key = tmp_path / "key.json"  # the instructor's key: the concept questions are graded too
    subprocess.run([sys.executable, "-m", "minialign.course", "answer-key", str(key)],
                   check=True, cwd=REPO_DIR, capture_output=True, timeout=120)
    zip_path = autograder.build(tmp_path / "autograder.zip", chapters=[1], answer_key=key)
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(root / "source")
    # a student who zipped a folder holding a renamed file
    (root / "submission" / "my work").mkdir(parents=True)
    (root / "submission" / "my work" / "ch01_tokenizer (1).py").write_text(SOLUTION.read_text())
    run = root / "source" / "run_autograder"
    run.chmod(0o755)
    env = {**os.environ, "AUTOGRADER_ROOT": str(root),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)  # the unzipped package, not the repository's, is graded with
    done = subprocess.run([str(run)], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == results["max_score"] > 0
    assert "ch01_tokenizer (1).py" in results["output"]  # says which file it graded
    assert all(t["visibility"] in autograder.VISIBILITIES for t in results["tests"])
    assert any(t["name"].startswith("q1.") and t["max_score"] > 0 for t in results["tests"])


def test_find_submission_by_close_names(tmp_path):
    (tmp_path / "ch04_Reward-final.py").write_text("x = 1\n")
    (tmp_path / "ch06_dpo.py").write_text("x = 1\n")
    found, notes = autograder.find_submission(tmp_path, [4, 6, 5])
    assert found[4].name == "ch04_Reward-final.py" and found[6].name == "ch06_dpo.py"
    assert 5 not in found
    assert any("chapter 4" in n and "ch04_reward.py" in n for n in notes)
    assert any("chapter 5" in n and "no ch05_ppo.py" in n for n in notes)
    assert not any("chapter 6" in n for n in notes)  # exact name, where expected: nothing to say


def test_visibility_comes_from_the_rubric(tmp_path, monkeypatch):
    rubric = tmp_path / "rubric.json"
    rubric.write_text(json.dumps({"exercises": {"ch01.merge": {"points": 3,
                                                               "visibility": "hidden"},
                                                "ch01.get_pair_counts": 2}}))
    monkeypatch.setattr("minialign.course.grader.RUBRIC_PATH", rubric)
    vis = autograder.item_visibility("after_due_date")
    assert vis == {"ch01.merge": "hidden", "ch01.get_pair_counts": "after_due_date"}
