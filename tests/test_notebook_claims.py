"""The numbers the notebooks' prose quotes come from their outputs.

Notebooks are committed with the outputs of a full run; their Markdown talks about those
outputs. When a rerun changes a number, a sentence that quotes the old one becomes false. This
test reads every committed notebook and checks each measured-looking number in its prose (a
decimal such as 0.62 or -0.45, a percentage such as 69% or 68.3%, a count written with thousands
separators such as 2,001,024) against the numbers in the same notebook's outputs: the quote must
be one of them, rounded as the prose rounds it (69% quotes 0.6907 or 69.1%). Numbers that are
facts of the code rather than of a run (a config default, a constant in a code cell) or of the
literature (listed below, each with its reason) are allowed as they are. Math ($...$) and code
spans are not prose and are skipped.

It also checks that every notebook opens with its learning objectives and its measured run
time, and that no output holds an absolute path of the machine that ran it.
"""

import dataclasses
import json
import re

import pytest

from minialign.course.markers import REPO_DIR

NOTEBOOKS = sorted((REPO_DIR / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# numbers the prose may quote that no output prints: constants of mathematics and of the papers
# the chapters discuss (notebook stem -> {number as written: why})
LITERATURE = {
    "*": {"0.693": "ln 2, the loss of a coin flip", "0.5": "one half"},
    "08_grpo": {"800,000": "PRM800K: the step-level labels of Lightman et al. 2023"},
}

# a measured-looking number: a decimal, a percentage or a count with thousands separators; not
# part of a word, a version (2.13.0), a section or question number (q4.2, §9.1)
PROSE_NUMBER = re.compile(
    r"(?<![\w.§/-])(?P<sign>[-−])?(?P<num>\d{1,3}(?:,\d{3})+|\d+\.\d+|\d+(?=%)|"
    r"\d+(?= ?(?:s|min|seconds|minutes)\b))(?P<pct>%)?(?P<unit> ?(?:s|min|seconds|minutes)\b)?"
    r"(?![\w]|\.\d)")
OUTPUT_NUMBER = re.compile(r"[-−]?\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?%?")
ABSOLUTE_PATH = re.compile(r"(/home/|/Users/|/work/|/tmp/|/root/|[A-Z]:\\\\Users)")


def strip_non_prose(markdown: str) -> str:
    """Markdown without math, code, link targets and HTML tags: what a reader reads as prose."""
    text = re.sub(r"```.*?```", " ", markdown, flags=re.S)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
    text = re.sub(r"\$[^$]*\$", " ", text)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return re.sub(r"<[^>]+>", " ", text)


def prose_numbers(markdown: str) -> list[dict]:
    """[{"text", "value", "decimals", "percent"}] for each measured-looking number."""
    found = []
    for m in PROSE_NUMBER.finditer(strip_non_prose(markdown)):
        num = m["num"].replace(",", "")
        value = float(num) * (-1 if m["sign"] else 1)
        decimals = len(num.split(".")[1]) if "." in num else 0
        unit = (m["unit"] or "").strip()
        if not m["pct"] and not unit and "," not in m["num"] and decimals == 0:
            continue  # a plain integer: too often a count of things, not a measurement
        found.append({"text": m.group(0).replace("−", "-").removesuffix(m["unit"] or ""),
                      "value": value, "decimals": decimals, "percent": bool(m["pct"]),
                      "minutes": unit.startswith("min")})
    return found


def output_numbers(text: str) -> list[tuple[float, bool]]:
    """[(value, is_percent)] for every number in `text`."""
    out = []
    for tok in OUTPUT_NUMBER.findall(text):
        pct = tok.endswith("%")
        try:
            out.append((float(tok.rstrip("%").replace(",", "").replace("−", "-")), pct))
        except ValueError:
            continue
    return out


def quotes(claim: dict, value: float, percent: bool) -> bool:
    """Does the prose number `claim` quote this output number (rounded as the prose rounds)?
    A percentage quotes a percentage or a fraction (69% quotes 0.6907), a decimal quotes a
    decimal or a percentage (0.69 quotes 69.1%); the sign may be dropped ("a correlation of
    0.45" for -0.45); a duration in minutes quotes one in seconds."""
    if claim["percent"]:
        candidates = [value] if percent else ([100 * value] if abs(value) <= 1 else [])
    elif claim.get("minutes"):
        candidates = [] if percent else [value, value / 60]  # "3 min" quotes 3 min or 181 s
    else:
        candidates = [value / 100] if percent else [value]
    half = 0.5 * 10 ** -claim["decimals"] + 1e-9
    return any(abs(abs(c) - abs(claim["value"])) <= half for c in candidates)


def cell_text(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def outputs_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            parts.append("".join(out["text"]))
        for kind in ("text/plain", "text/markdown", "text/html"):
            data = out.get("data", {}).get(kind)
            if data:
                parts.append("".join(data) if isinstance(data, list) else data)
    return "\n".join(parts)


def config_constants() -> list[tuple[float, bool]]:
    """Every numeric default of the library's configs, and the settings of the short runs of
    the "train it with your code" cells: quoting one is quoting the code."""
    from minialign import (bon, compare, dpo, grpo, model, ppo, preferences, pretrain, prm,
                           reward, sft)

    values = []
    for module in (bon, compare, dpo, grpo, model, ppo, preferences, pretrain, prm, reward, sft):
        for obj in vars(module).values():
            if dataclasses.is_dataclass(obj) and isinstance(obj, type):
                for f in dataclasses.fields(obj):
                    items = f.default if isinstance(f.default, tuple) else (f.default,)
                    values += [(float(v), False) for v in items
                               if isinstance(v, (int, float)) and not isinstance(v, bool)]
    from minialign.course import yours  # the short runs of the "train it with your code" cells

    values += [(float(v), False) for changes in yours.SHORT.values() for v in changes.values()]
    return values


def sections(cells) -> list[int]:
    """The section number of each cell: a Markdown cell with a "## " heading starts one."""
    out, k = [], 0
    for cell in cells:
        if cell["cell_type"] == "markdown" and re.search(r"^## ", cell_text(cell), re.M):
            k += 1
        out.append(k)
    return out


def unsupported_claims(nb: dict, stem: str, constants) -> list[str]:
    """The prose numbers of one notebook that nothing supports, each with its context. A
    number is supported by the outputs of the code cells of its own section (or the two cells
    either side), by a constant in any code cell, by the configs' defaults, or LITERATURE."""
    cells = nb["cells"]
    code = [i for i, c in enumerate(cells) if c["cell_type"] == "code"]
    section = sections(cells)
    in_code = constants + [n for i in code for n in output_numbers(cell_text(cells[i]))]
    allowed = {**LITERATURE["*"], **LITERATURE.get(stem, {})}
    bad = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "markdown" or i == 0 and "**Run time:**" in cell_text(cell):
            continue
        nearby = [n for j in code if section[j] == section[i] or abs(j - i) <= 2
                  for n in output_numbers(outputs_text(cells[j]))]
        prose = strip_non_prose(cell_text(cell))
        for claim in prose_numbers(cell_text(cell)):
            if claim["text"].lstrip("-") in allowed:
                continue
            if not any(quotes(claim, v, p) for v, p in nearby + in_code):
                at = prose.find(claim["text"].lstrip("-"))
                bad.append(f"cell {i}: {claim['text']!r} in "
                           f"...{prose[max(0, at - 60):at + 30]!r}...")
    return bad


# ----------------------------------------------------------------------------------------------
# the checker itself, on hand-made text


def test_prose_numbers_skip_math_code_versions_and_section_numbers():
    md = ("PPO wins 69% of the time, gold 0.62 (SFT -0.45 or −0.45), 2,001,024 parameters; "
          "see q4.2 and §9.1, torch 2.13.0, $\\beta = 0.1$, `lr=3e-4`, 4 layers, 2023, in "
          "88 s or 3 minutes, 2 stages.")
    texts = [c["text"] for c in prose_numbers(md)]
    assert texts == ["69%", "0.62", "-0.45", "-0.45", "2,001,024", "88", "3"]
    claim = prose_numbers("about 3 min")[0]
    assert quotes(claim, 181.0, False) and not quotes(claim, 240.0, False)


def test_a_quote_must_round_to_an_output_number():
    claim = prose_numbers("wins 69% of the time")[0]
    assert quotes(claim, 0.6907, False) and quotes(claim, 69.1, True)
    assert not quotes(claim, 0.6849, False) and not quotes(claim, 70.0, True)
    claim = prose_numbers("a gold reward of 0.62")[0]
    assert quotes(claim, 0.6249, False) and quotes(claim, -0.62, False)
    assert not quotes(claim, 0.626, False)
    claim = prose_numbers("a correlation of 0.45")[0]
    assert quotes(claim, 45.0, True)  # a percentage written as a fraction


def test_a_notebook_whose_prose_quotes_a_stale_number_is_caught():
    out = {"output_type": "stream", "text": "win rate 68.5%\n"}
    nb = {"cells": [{"cell_type": "code", "source": "print(win)", "outputs": [out]},
                    {"cell_type": "markdown", "source": "PPO wins 70% of the time."},
                    {"cell_type": "markdown", "source": "It wins 68.5%, about 68%."}]}
    bad = unsupported_claims(nb, "xx", [])
    assert len(bad) == 1 and "'70%'" in bad[0] and bad[0].startswith("cell 1")
    # an output of another section does not support a quote, unless it is next to it
    far = [{"cell_type": "markdown", "source": f"## {k}\n\ntext"} for k in range(3)]
    nb = {"cells": [nb["cells"][0], *far, {"cell_type": "markdown", "source": "wins 68.5%"}]}
    assert len(unsupported_claims(nb, "xx", [])) == 1


# ----------------------------------------------------------------------------------------------
# the committed notebooks


@pytest.fixture(scope="module")
def constants():
    return config_constants()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_numbers_in_the_prose_come_from_the_outputs(path, constants):
    nb = json.loads(path.read_text())
    bad = unsupported_claims(nb, path.stem, constants)
    assert not bad, (f"{path.name}: {len(bad)} number(s) in the prose that no output of the "
                     f"notebook prints:\n" + "\n".join(bad))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_each_notebook_opens_with_objectives_and_its_measured_run_time(path):
    from minialign.course.notebooks import RUN_TIMES, run_time_line

    first = cell_text(json.loads(path.read_text())["cells"][0])
    assert "**You will:**" in first, f"{path.name}: no learning objectives in the first cell"
    times = json.loads(RUN_TIMES.read_text())
    assert path.stem in times.get("full", {}), f"{path.name}: never timed in full mode"
    assert run_time_line(path.stem, times) in first, (
        f"{path.name}: its run-time line differs from notebooks/run_times.json; run "
        f"`python -m minialign.course notebooks`")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_outputs_hold_no_absolute_path_of_the_machine_that_ran_them(path):
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            hit = ABSOLUTE_PATH.search(outputs_text(cell))
            assert not hit, f"{path.name} cell {i}: {outputs_text(cell)[hit.start() - 40:][:120]!r}"
