import re
from pathlib import Path

import pytest
import torch

from toolkit.workbook import exercises
from toolkit.workbook.exercises import ch01

LESSONS = Path(__file__).resolve().parents[2] / "lessons"


def stub(*args):
    raise NotImplementedError


def test_untouched_stub_falls_back_to_the_reference_and_says_so(capsys):
    chosen = exercises.check("01.expected_bytes", stub)
    assert chosen is ch01.expected_bytes
    out = capsys.readouterr().out
    assert "not attempted yet" in out and "reference solution" in out and "Hint" in out


def test_wrong_answer_shows_the_case_and_a_hint(capsys):
    chosen = exercises.check("01.expected_bytes", lambda n, dtype: n * 4)
    assert chosen is ch01.expected_bytes
    out = capsys.readouterr().out
    assert "✘" in out and "expected 2000, got 4000" in out and "Hint 1 of 3 (idea)" in out
    assert "torch.finfo" not in out, "the first failure gives the idea, never the code"
    assert "hint('01.expected_bytes', level=2)" in out, "and says how to get the next tier"


def test_hints_come_one_tier_at_a_time(capsys):
    for level, tier in enumerate(("idea", "formula", "code"), 1):
        text = exercises.hint("01.expected_bytes", level=level)
        out = capsys.readouterr().out
        assert f"hint {level} of 3 ({tier})" in out and text in out
    assert "torch.finfo" in text and "Next:" not in out, "the last tier is the code, with nothing after it"
    with pytest.raises(ValueError, match="level must be 1, 2 or 3"):
        exercises.hint("01.expected_bytes", level=4)
    with pytest.raises(ValueError, match="is not known; accepted"):
        exercises.hint("01.nope")


def test_every_exercise_has_three_tiers_and_only_the_last_is_code():
    exercises._load_chapters()
    for exercise in exercises.EXERCISES.values():
        idea, formula, code = exercise.hint
        assert idea and formula and code, exercise.name
        assert "return" in code and "return" not in idea and "return" not in formula, exercise.name


def test_a_crashing_attempt_answers_with_a_hint_not_a_traceback(capsys):
    chosen = exercises.check("01.parameter_group", lambda name: name.split(".")[99])
    assert chosen is ch01.parameter_group
    assert "IndexError" in capsys.readouterr().out


def test_a_correct_attempt_is_returned(capsys):
    def mine(n, dtype):
        return n * (torch.finfo(dtype).bits if dtype.is_floating_point else torch.iinfo(dtype).bits) // 8

    assert exercises.check("01.expected_bytes", mine) is mine
    assert "✔" in capsys.readouterr().out


def test_unknown_exercise_lists_the_names():
    with pytest.raises(ValueError, match="exercise '01.nope' is not known; accepted: 01.expected_bytes"):
        exercises.check("01.nope", stub)


def test_quiz_answers_with_explanations(capsys):
    assert exercises.quiz("01.half_precision", None) is False
    assert "not answered yet" in capsys.readouterr().out
    assert exercises.quiz("01.half_precision", "b") is True
    assert exercises.quiz("01.half_precision", "A") is False
    assert exercises.quiz("01.half_precision", "z") is False
    assert "not a choice" in capsys.readouterr().out


def lesson_solutions():
    """(lesson file, exercise name, code) for every `<!-- solution: NAME -->` block in lessons/."""
    found = []
    for lesson in sorted(LESSONS.glob("[0-9][0-9]_*.md")):
        text = lesson.read_text()
        for name, code in re.findall(r"<!-- solution: (\S+) -->\s*```python\n(.*?)```", text, re.S):
            found.append(pytest.param(name, code, id=f"{lesson.stem}:{name}"))
    return found


def test_every_exercise_has_a_solution_in_a_lesson_plan():
    names = {p.values[0] for p in lesson_solutions()}
    exercises._load_chapters()
    assert set(exercises.EXERCISES) <= names


@pytest.mark.parametrize("name,code", lesson_solutions())
def test_lesson_solutions_pass_their_checks(name, code, capsys):
    namespace = {}
    exec(compile(code, f"<solution {name}>", "exec"), namespace)
    function = namespace[name.split(".", 1)[1]]
    assert exercises.check(name, function) is function, capsys.readouterr().out


def _stubs() -> list[tuple[str, str, list[str]]]:
    """(notebook, exercise name, the stub's parameter names) for every stub a notebook checks."""
    import ast

    import nbformat

    found = []
    for path in sorted((LESSONS.parent / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        checked = dict(re.findall(r'(\w+) = toolkit\.workbook\.exercises\.check\("([^"]+)", \1\)', "\n".join(cells)))
        for source in cells:
            if "raise NotImplementedError" not in source:
                continue
            for node in ast.parse(source).body:
                if isinstance(node, ast.FunctionDef) and node.name in checked:
                    found.append((path.stem, checked[node.name], [a.arg for a in node.args.args]))
    return found


def test_every_exercise_has_a_stub_with_its_references_signature():
    import inspect

    exercises._load_chapters()
    stubs = _stubs()
    assert {name for _, name, _ in stubs} == set(exercises.EXERCISES), "every exercise has exactly one stub in a notebook"
    for notebook, name, params in stubs:
        reference = list(inspect.signature(exercises.EXERCISES[name].reference).parameters)
        assert params == reference, f"{notebook}: the stub of {name} takes {params}, the reference {reference}"


def test_every_lesson_plan_answers_its_discussion_questions():
    for plan in sorted(LESSONS.glob("[0-9][0-9]_*.md")):
        text = plan.read_text()
        assert "## Discussion questions, with answers" in text, f"{plan.name} has no answered discussion questions"
        section = text.split("## Discussion questions, with answers", 1)[1].split("\n## ", 1)[0]
        questions = re.findall(r"^\d+\. ", section, re.M)
        assert len(questions) >= 3, f"{plan.name}: {len(questions)} discussion questions"
        for item in [i for i in re.split(r"\n(?=\d+\. )", section.strip()) if re.match(r"\d+\. ", i)]:
            # an answer follows the question: an *Answer.* paragraph, or text after a bold question
            assert "*Answer.*" in item or re.match(r"\d+\. \*\*.+?\*\*\s*\S", item, re.S), f"{plan.name}: unanswered: {item[:80]}"


def test_every_chapter_has_five_quizzes_with_explained_options_and_no_giveaway():
    import nbformat

    exercises._load_chapters()
    notebooks = {p.name[:2]: "\n".join(c.source for c in nbformat.read(p, as_version=4).cells)
                 for p in sorted((LESSONS.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))}
    for chapter, code in notebooks.items():
        quizzes = [q for q in exercises.QUIZZES.values() if q.name.startswith(chapter + ".")]
        assert len(quizzes) >= 5, f"chapter {chapter} has {len(quizzes)} quizzes"
        for q in quizzes:
            assert q.answer in q.choices and set(q.explanations) == set(q.choices), f"{q.name}: every option needs an explanation"
            assert f'"{q.name}"' in code or f"'{q.name}'" in code, f"{q.name} is never asked in its notebook"
        assert len({q.answer for q in quizzes}) >= 3, f"chapter {chapter}: answers {[q.answer for q in quizzes]} are not spread"
        longest = [q.name for q in quizzes if max(q.choices, key=lambda k: len(q.choices[k])) == q.answer]
        assert len(longest) <= 3, f"chapter {chapter}: the right answer is the longest option in {longest}"


def test_a_guess_is_compared_with_the_measurement():
    text = exercises.compare_guess({"speed_up": 2.0, "best": "FFN in", "faster": True}, {"speed_up": 3.1, "best": "ffn in", "faster": False})
    assert "you guessed 2.0, measured **3.1**: ✘ too low" in text
    assert "'FFN in', measured **'ffn in'**: ✔ right" in text and "True, measured **False**: ✘" in text
    assert "✔ close" in exercises.compare_guess({"x": 2.9}, {"x": 3.1})
    assert "No guess written" in exercises.compare_guess({"x": None}, {"x": 3.1})
    with pytest.raises(ValueError, match="keys"):
        exercises.compare_guess({"y": 1}, {"x": 3.1})
    with pytest.raises(ValueError, match="rel_tol"):
        exercises.compare_guess({"x": 1}, {"x": 3.1}, rel_tol=2)
