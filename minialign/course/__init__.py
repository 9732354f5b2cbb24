"""The course machinery: exercises built from the library, checks with hints, the grader.

    python -m minialign.course build [--check]     exercises/ and solutions/ from the markers
    python -m minialign.grade [--impl ...]          grade a student's folder (see grader.py)

In a notebook, at the end of a chapter:

    from minialign.course import check
    check(2)          # grades exercises/ch02_gpt.py and prints the table

Modules: `markers` (find the marked regions), `build` (write the chapter files), `questions`
(concept questions), `checks` (the check API) and `checks_chNN` (the graded checks), `sandbox`
and `wire` (the child process that runs student code, and what crosses the boundary),
`runner` (the parent's side of it), `grader` (grading, reports, the command line).
Nothing here imports torch until it grades.
"""


def check(chapter=None, impl="exercises", **options):
    """Grade the student's file(s) of `chapter` (all chapters when None) and print the table.

    impl: "exercises" (the repository's exercise folder), "solutions", or a folder path.
    options: passed to `grader.grade` (time_limit, memory_mb, jobs). Returns the report.
    """
    from .grader import grade
    from .report import render_text

    chapters = None if chapter is None else [chapter] if isinstance(chapter, int) else chapter
    report = grade(impl, chapters=chapters, **options)
    print(render_text(report))
    return report
