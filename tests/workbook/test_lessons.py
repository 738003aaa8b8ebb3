"""The instructor guide's agendas add up, and every lesson plan's timing table is consistent.

Each lesson plan has a "## Timing (N minutes in a workshop; ...)" section with rows "| a-b | ... |"
that run from 0 to N without gaps. Each agenda in lessons/README.md is a table of blocks and
minutes under a heading that gives its length; a "Chapter k" block takes its plan's N minutes, a
"Chapter k, timing a-b" block takes the plan's rows from a to b (both must be row boundaries).
"""

import re
from pathlib import Path

import pytest

LESSONS = Path(__file__).resolve().parents[2] / "lessons"
PLANS = sorted(LESSONS.glob("[0-9][0-9]_*.md"))


def timing(plan: Path) -> tuple[int, list[tuple[int, int]]]:
    text = plan.read_text()
    heading = re.search(r"^## Timing \((\d+) minutes in a workshop", text, re.M)
    assert heading, f"{plan.name}: no '## Timing (N minutes in a workshop; ...)' section"
    section = text[heading.end():].split("\n## ", 1)[0]
    rows = [(int(a), int(b)) for a, b in re.findall(r"^\| *(\d+)-(\d+) *\|", section, re.M)]
    return int(heading.group(1)), rows


@pytest.mark.parametrize("plan", PLANS, ids=[p.stem for p in PLANS])
def test_a_lesson_plans_timing_runs_from_zero_to_its_length_without_gaps(plan):
    total, rows = timing(plan)
    assert rows and rows[0][0] == 0, f"{plan.name}: the timing starts at minute 0"
    for (_, end), (start, _) in zip(rows, rows[1:]):
        assert start == end, f"{plan.name}: a gap or an overlap at minute {end}"
    assert all(a < b for a, b in rows)
    assert rows[-1][1] == total, f"{plan.name}: rows end at {rows[-1][1]}, the heading says {total} minutes"


def agendas() -> dict[str, tuple[int, list[tuple[str, int]]]]:
    text = (LESSONS / "README.md").read_text()
    section = text.split("## Session formats", 1)[1].split("\n## ", 1)[0]
    found = {}
    for heading, body in re.findall(r"^### (.+?)\n(.*?)(?=^### |\Z)", section, re.M | re.S):
        length = re.search(r"(\d+) minutes", heading)
        assert length, f"agenda {heading!r}: its heading must give its length in minutes"
        blocks = [(name.strip(), int(minutes)) for name, minutes in re.findall(r"^\| *([^|]+?) *\| *(\d+) *\|$", body, re.M)]
        found[heading] = (int(length.group(1)), blocks)
    return found


def test_there_are_three_agendas():
    assert len(agendas()) == 3


@pytest.mark.parametrize("name", list(agendas()))
def test_an_agenda_adds_up_and_matches_its_lesson_plans(name):
    length, blocks = agendas()[name]
    assert sum(minutes for _, minutes in blocks) == length, f"{name}: blocks add up to {sum(m for _, m in blocks)}"
    plans = {int(p.name[:2]): p for p in PLANS}
    for block, minutes in blocks:
        chapter = re.match(r"Chapter (\d+)(?:, timing (\d+)-(\d+))?", block)
        if not chapter:
            assert not re.match(r"chapter", block, re.I), f"{name}: {block!r} starts with a chapter but not as 'Chapter k'"
            continue
        k = int(chapter.group(1))
        assert k in plans, f"{name}: Chapter {k} has no lesson plan"
        total, rows = timing(plans[k])
        if chapter.group(2) is None:
            assert minutes == total, f"{name}: Chapter {k} takes {total} minutes in its plan, the agenda gives {minutes}"
        else:
            a, b = int(chapter.group(2)), int(chapter.group(3))
            boundaries = {0} | {end for _, end in rows}
            assert a in boundaries and b in boundaries, f"{name}: {a}-{b} does not start and end at rows of plan {k}"
            assert minutes == b - a, f"{name}: Chapter {k}, timing {a}-{b} is {b - a} minutes, the agenda gives {minutes}"


def discussion_questions(plan: Path) -> list[str]:
    """The questions of a plan's "## Discussion questions" section: the bold part, or the text before *Answer.*"""
    section = plan.read_text().split("## Discussion questions", 1)[1].split("\n## ", 1)[0]
    questions = []
    for item in [i for i in re.split(r"\n(?=\d+\. )", section.strip()) if re.match(r"\d+\. ", i)]:
        body = re.sub(r"^\d+\. ", "", item)
        bold = re.match(r"\*\*(.+?)\*\*", body, re.S)
        questions.append(" ".join((bold.group(1) if bold else body.split("*Answer.*")[0]).split()))
    return questions


@pytest.mark.parametrize("plan", PLANS, ids=[p.stem for p in PLANS])
def test_the_discussion_questions_are_asked_in_the_notebook_too(plan):
    import nbformat

    notebook = LESSONS.parent / "notebooks" / f"{plan.stem}.ipynb"
    cells = [c.source for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "markdown"]
    asked = next((c for c in cells if c.startswith("## Questions to discuss")), None)
    assert asked, f"{notebook.name}: no '## Questions to discuss' cell (students do not open the lesson plans)"
    asked = " ".join(asked.split())
    for question in discussion_questions(plan):
        assert question in asked, f"{notebook.name} does not ask: {question[:80]}"


@pytest.mark.parametrize("plan", PLANS, ids=[p.stem for p in PLANS])
def test_a_lesson_plan_says_what_to_cut_when_the_group_falls_behind(plan):
    section = plan.read_text().split("## Timing", 1)[1].split("\n## ", 1)[0]
    assert "If the group falls behind" in section, f"{plan.name}: no cut point after the timing table"
