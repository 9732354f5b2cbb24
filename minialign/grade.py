"""`python -m minialign.grade`: grade exercises and concept questions (see course/grader.py).

    python -m minialign.grade                                   your exercises/, every chapter
    python -m minialign.grade --chapter 2                       one chapter
    python -m minialign.grade --chapter 5 --hints 1             ... and a first hint for each
                                                                exercise not passed (--hints: all)
    python -m minialign.grade --impl solutions                  the reference solutions (100%)
    python -m minialign.grade --impl DIR --format gradescope --out results.json
    python -m minialign.grade --submissions DIR --out grades.csv    a whole class
"""

import sys

from minialign.course.grader import main

if __name__ == "__main__":
    sys.exit(main())
