"""`python -m minialign.course build [--check] [--force]`: generate exercises/ and solutions/.

`python -m minialign.course list` prints the exercises found in the library, with their
chapter, difficulty and time estimate, and whether each has a check, rubric points and mutants.
"""

import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv else ""
    if command == "build":
        from .build import main as build_main

        return build_main(argv)
    if command == "list":
        from .markers import find_exercises

        for e in find_exercises():
            print(f"{e.id:<40} {e.stars}  {e.minutes:>3} min  minialign/{e.module}.py:{e.start}")
        return 0
    print("usage: python -m minialign.course build [--check] [--force]\n"
          "       python -m minialign.course list", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
