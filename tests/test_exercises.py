import re
from pathlib import Path

import pytest
import torch

from toolkit import exercises
from toolkit.exercises import ch01

LESSONS = Path(__file__).resolve().parent.parent / "lessons"


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
    assert "✘" in out and "expected 2000, got 4000" in out and "torch.finfo" in out


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
