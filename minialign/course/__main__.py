"""The course's commands.

    python -m minialign.course build [--check] [--force]
        generate exercises/ and solutions/ (and record a new version of the exercise set when
        its items changed)
    python -m minialign.course handout OUT [--chapter N ...] [--library] [--force]
        write what students get into OUT: OUT/exercises/ (no solutions, no answers); with
        --library also OUT/minialign/, the library without the answer key (for credit)
    python -m minialign.course answer-key KEY.json
        write the concept questions' answer key, for `python -m minialign.grade --answer-key`
    python -m minialign.course autograder --out autograder.zip [--chapter N ...]
        a Gradescope autograder zip (setup.sh, run_autograder, the package; see autograder.py)
    python -m minialign.course list
        the exercises found in the library, with chapter, difficulty and time estimate
    python -m minialign.course notebooks [--fast] [NAME ...]
        execute the notebooks (full mode: outputs saved in place, from runs/default) and stamp
        each with its measured run time (notebooks/run_times.json; see notebooks.py)
"""

import argparse
import sys

USAGE = ("usage: python -m minialign.course build [--check] [--force]\n"
         "       python -m minialign.course handout OUT [--chapter N] [--library] [--force]\n"
         "       python -m minialign.course answer-key KEY.json\n"
         "       python -m minialign.course autograder --out autograder.zip [--chapter N]\n"
         "       python -m minialign.course list\n"
         "       python -m minialign.course notebooks [--fast] [NAME ...]")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv else ""
    if command == "build":
        from .build import main as build_main

        return build_main(argv)
    if command == "handout":
        return _handout(argv)
    if command == "answer-key":
        return _answer_key(argv)
    if command == "autograder":
        from .autograder import main as autograder_main

        return autograder_main(argv)
    if command == "notebooks":
        from .notebooks import main as notebooks_main

        return notebooks_main(argv)
    if command == "list":
        from .markers import find_exercises

        for e in find_exercises():
            print(f"{e.id:<40} {e.stars}  {e.minutes:>3} min  minialign/{e.module}.py:{e.start}")
        return 0
    print(USAGE, file=sys.stderr)
    return 2


def _handout(argv) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minialign.course handout",
        description="Write the student handout: the current exercise files (no solutions, no "
                    "answers), each naming its version of the exercise set.")
    parser.add_argument("out", help="the folder to write (OUT/exercises/chNN_*.py)")
    parser.add_argument("--chapter", type=int, action="append",
                        help="only this chapter's file (repeat for several; default: all)")
    parser.add_argument("--library", action="store_true",
                        help="also copy the minialign library into OUT, without the answer key "
                             "of the concept questions (for questions graded for credit)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite exercise files in OUT that contain written solutions")
    args = parser.parse_args(argv)
    from .build import write_handout

    return write_handout(args.out, args.chapter, library=args.library, force=args.force)


def _answer_key(argv) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minialign.course answer-key",
        description="Write the answer key of the concept questions (JSON), to grade with "
                    "`python -m minialign.grade --answer-key KEY.json`. Keep it out of what "
                    "students get.")
    parser.add_argument("path", help="the JSON file to write")
    args = parser.parse_args(argv)
    from .questions import answer_key_json, library_key
    from .report import write_atomic

    key = library_key()
    if key is None:
        print("this installation has no answer key (minialign/course/answer_key.py): write the "
              "key from the instructor's copy of the course", file=sys.stderr)
        return 1
    write_atomic(args.path, answer_key_json(key))
    print(f"wrote {args.path} ({len(key)} questions): keep it out of the students' hands")
    return 0


if __name__ == "__main__":
    sys.exit(main())
