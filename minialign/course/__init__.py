"""The course machinery: exercises built from the library, checks with hints, the grader.

    python -m minialign.course build [--check]     exercises/ and solutions/ from the markers
    python -m minialign.grade [--impl ...]          grade a student's folder (see grader.py)

In a notebook, at the end of a chapter:

    from minialign.course import check
    check(2)          # grades exercises/ch02_gpt.py and prints the table

and to train every later stage with your own functions (see impl.py):

    from minialign.course import use
    use("exercises")  # unwritten functions fall back to the library's; use("library") undoes it

Modules: `markers` (find the marked regions), `build` (write the chapter files and the
handout), `versions` (which items each version of the files handed out), `questions` (concept
questions; their key is `answer_key`, which a handout for credit leaves out), `checks` (the check API) and `checks_chNN` (the graded checks), `sandbox`
and `wire` (the child process that runs student code, and what crosses the boundary),
`runner` (the parent's side of it), `grader` (grading and the command line), `report` (the
report formats), `impl` (training with a learner's functions, in-process).
Nothing here imports torch until it grades or trains.
"""


def use(impl="exercises", log=print):
    """Train with the functions written in `impl` ("exercises", "solutions", a folder) wherever
    the library calls them, from now on in this process; "library" puts the library's back."""
    from . import impl as impl_module

    return impl_module.use(impl, log=log)


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
