"""The course machinery: exercises built from the library, checks with hints, the grader.

    python -m minialign.course build [--check]     exercises/ and solutions/ from the markers
    python -m minialign.grade [--impl ...]          grade a student's folder (see grader.py)

In a notebook, at the end of a chapter:

    from minialign.course import check
    check(2)          # grades exercises/ch02_gpt.py and prints the table
    check(2, hints=1) # ... with a first hint for each exercise not passed ("all": every hint)

and to train every later stage with your own functions (see impl.py):

    from minialign.course import use
    use("exercises")  # unwritten functions fall back to the library's; use("library") undoes it

or, to see one chapter's stage trained by your functions beside the library's (see yours.py):

    from minialign.course import train_with_your_code
    train_with_your_code("dpo").plot()   # a short run in runs/yours/dpo, findings in words

Modules: `markers` (find the marked regions), `build` (write the chapter files and the
handout), `versions` (which items each version of the files handed out), `questions` (concept
questions; their key is `answer_key`, which a handout for credit leaves out), `checks` (the check API) and `checks_chNN` (the graded checks), `sandbox`
and `wire` (the child process that runs student code, and what crosses the boundary),
`runner` (the parent's side of it), `grader` (grading and the command line), `report` (the
report formats), `impl` (training with a learner's functions, in-process), `yours` (a short run
of one stage with them, beside the library's, and what looks wrong said in words), `capstone`
and `checks_capstones` (graded runs of chapter 5's PPO and chapter 6's DPO, measured with the
gold reward).
Nothing here imports torch until it grades or trains.
"""


def use(impl="exercises", log=print):
    """Train with the functions written in `impl` ("exercises", "solutions", a folder) wherever
    the library calls them, from now on in this process; "library" puts the library's back."""
    from . import impl as impl_module

    return impl_module.use(impl, log=log)


def train_with_your_code(stage, impl="exercises", **options):
    """Train `stage` (pretrain, sft, reward, ppo, dpo) with your functions in a short run beside
    the library's, and say in words what looks wrong; see yours.py. Returns the result
    (`.plot()` draws both runs)."""
    from . import yours

    return yours.train_with_your_code(stage, impl, **options)


def check(chapter=None, impl="exercises", hints=None, **options):
    """Grade the student's file(s) of `chapter` (all chapters when None) and print the table.

    impl: "exercises" (the repository's exercise folder), "solutions", or a folder path.
    hints: None (none), N (the first N hints of each exercise not passed, gentlest first) or
    "all" (down to the formula), as `python -m minialign.grade --hints N` shows them.
    options: passed to `grader.grade` (time_limit, memory_mb, jobs; capstones=False leaves
    out the capstones of chapters 5 and 6, short training runs). Returns the report.
    """
    from .grader import grade
    from .report import render_text

    chapters = None if chapter is None else [chapter] if isinstance(chapter, int) else chapter
    report = grade(impl, chapters=chapters, hints=hints, **options)
    print(render_text(report))
    return report
