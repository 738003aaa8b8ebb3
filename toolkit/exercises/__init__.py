"""Exercises: fixed small cases with known answers, a hint for every failure, never a crash.

A chapter's exercise is a stub the reader fills in, followed by a check cell::

    def expected_bytes(num_parameters, dtype):
        raise NotImplementedError  # your code here

    expected_bytes = toolkit.exercises.check("01.expected_bytes", expected_bytes)

``check`` runs the reader's function on every case. It answers with one of:

- ``✔`` all cases pass: the reader's function is returned and used by the cells below;
- ``✘`` a case fails or raises: the input, the expected and the actual value, and the first
  hint; the reference solution is returned so the chapter still runs;
- ``○`` the stub is untouched (it raised ``NotImplementedError``): the reference solution
  is returned and the message says so.

Hints come in tiers, shown one at a time: the first says the idea, the second the formula, the
last the code. ``check`` shows only the first; ``hint("01.expected_bytes", level=2)`` shows the
next, so a reader asks for the code only after trying with the idea and the formula.

Reference solutions and cases live in one module per chapter (``toolkit/exercises/ch01.py``);
the lesson plans print the same solutions and the tests run them through the same checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class Exercise:
    name: str  # "<chapter>.<function name>", e.g. "01.expected_bytes"
    title: str
    reference: Callable
    cases: tuple[tuple[tuple, Any], ...]  # ((args, expected), ...)
    hint: tuple[str, ...]  # tiers: (idea, formula, code)
    rel_tol: float = 0.0

    def __post_init__(self):
        if isinstance(self.hint, str) or len(self.hint) != 3:
            raise ValueError(f"exercise {self.name}: hint must be three tiers (idea, formula, code)")


@dataclass(frozen=True)
class Quiz:
    name: str
    question: str
    choices: dict[str, str]  # letter -> text
    answer: str
    explanations: dict[str, str] = field(default_factory=dict)  # letter -> why


EXERCISES: dict[str, Exercise] = {}
QUIZZES: dict[str, Quiz] = {}


def register(item: Exercise | Quiz) -> Exercise | Quiz:
    (EXERCISES if isinstance(item, Exercise) else QUIZZES)[item.name] = item
    return item


def _lookup(table: dict, name: str, what: str):
    _load_chapters()
    if name not in table:
        raise ValueError(f"{what} {name!r} is not known; accepted: {', '.join(sorted(table))}")
    return table[name]


def _same(got: Any, expected: Any, rel_tol: float) -> bool:
    if isinstance(expected, (tuple, list)):
        return isinstance(got, (tuple, list)) and len(got) == len(expected) and all(
            _same(g, e, rel_tol) for g, e in zip(got, expected)
        )
    if isinstance(expected, torch.Tensor):
        return isinstance(got, torch.Tensor) and got.shape == expected.shape and torch.allclose(
            got.float(), expected.float(), rtol=rel_tol, atol=0.0 if rel_tol == 0 else 1e-12
        )
    if isinstance(expected, float) or (isinstance(expected, int) and isinstance(got, float)):
        try:
            return math.isclose(float(got), float(expected), rel_tol=rel_tol, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return got == expected


TIERS = ("idea", "formula", "code")


def _first_hint(exercise: Exercise) -> str:
    return (f"Hint 1 of {len(exercise.hint)} ({TIERS[0]}): {exercise.hint[0]}\n"
            f"  Stuck? toolkit.exercises.hint({exercise.name!r}, level=2) shows the {TIERS[1]}.")


def hint(name: str, level: int = 1) -> str:
    """Show tier ``level`` of an exercise's hints (1 the idea, 2 the formula, 3 the code) and return it."""
    exercise = _lookup(EXERCISES, name, "exercise")
    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= len(exercise.hint):
        raise ValueError(f"level must be 1, 2 or 3 (idea, formula, code); got {level!r}")
    text = exercise.hint[level - 1]
    more = (f"\n  Next: toolkit.exercises.hint({name!r}, level={level + 1}) shows the {TIERS[level]}."
            if level < len(exercise.hint) else "")
    print(f"{exercise.title} · hint {level} of {len(exercise.hint)} ({TIERS[level - 1]}): {text}{more}")
    return text


def check(name: str, attempt: Callable) -> Callable:
    """Run ``attempt`` on the exercise's cases; return it if right, else the reference."""
    exercise = _lookup(EXERCISES, name, "exercise")
    for args, expected in exercise.cases:
        shown = ", ".join(repr(a) for a in args)
        try:
            got = attempt(*args)
        except NotImplementedError:
            print(
                f"○ {exercise.title}: not attempted yet. The chapter goes on with the reference "
                f"solution; fill in the stub and re-run this cell to check yours.\n  {_first_hint(exercise)}"
            )
            return exercise.reference
        except Exception as error:  # a reader's bug must answer with a hint, not a traceback
            print(
                f"✘ {exercise.title}: calling it with ({shown}) raised {type(error).__name__}: {error}\n"
                f"  {_first_hint(exercise)}\n  The chapter goes on with the reference solution."
            )
            return exercise.reference
        if not _same(got, expected, exercise.rel_tol):
            print(
                f"✘ {exercise.title}: for ({shown}) expected {expected!r}, got {got!r}.\n"
                f"  {_first_hint(exercise)}\n  The chapter goes on with the reference solution."
            )
            return exercise.reference
    print(f"✔ {exercise.title}: correct on all {len(exercise.cases)} cases.")
    return attempt


def quiz(name: str, answer: str | None) -> bool:
    """Say whether ``answer`` (a letter) is right, and why; ``None`` means not answered yet."""
    item = _lookup(QUIZZES, name, "quiz")
    if answer is None:
        print(f"○ Quiz {name} not answered yet: set its answer to one of {', '.join(item.choices)} and re-run this cell.")
        return False
    letter = str(answer).strip().lower()
    if letter not in item.choices:
        print(f"✘ {answer!r} is not a choice; accepted: {', '.join(item.choices)}.")
        return False
    correct = letter == item.answer
    print(("✔ Right. " if correct else "✘ Not quite. ") + item.explanations.get(letter, ""))
    if not correct:
        print(f"  Think again, or read the explanation in the lesson plan.")
    return correct



def compare_guess(guess: dict[str, Any], measured: dict[str, Any], rel_tol: float = 0.25) -> str:
    """"Predict, then run": each guessed quantity beside its measurement, as one Markdown line each.

    ``guess`` and ``measured`` share their keys. A number counts as close when
    |guess - measured| <= rel_tol * |measured|; a word or a yes/no must match (case aside).
    A ``None`` guess asks the reader to write one before looking, next time.
    """
    if not isinstance(guess, dict) or set(guess) != set(measured):
        raise ValueError(f"guess must be a dict with the keys {sorted(measured)}; got {guess!r}")
    if not 0 < rel_tol < 1:
        raise ValueError(f"rel_tol must be between 0 and 1; got {rel_tol!r}")
    if all(value is None for value in guess.values()):
        return ("○ **No guess written.** Next time, fill in the guess cell before running the experiment: "
                "a prediction you wrote down is what makes the measurement teach you something.")
    lines = []
    for key, truth in measured.items():
        said = guess[key]
        if said is None:
            lines.append(f"- `{key}`: no guess; measured **{truth}**.")
        elif isinstance(truth, (int, float)) and not isinstance(truth, bool) and isinstance(said, (int, float)):
            close = abs(said - truth) <= rel_tol * abs(truth)
            lines.append(f"- `{key}`: you guessed {said}, measured **{truth}**: " + ("✔ close." if close else
                         f"✘ {'too high' if said > truth else 'too low'}; what did the guess leave out?"))
        else:
            right = str(said).strip().lower() == str(truth).strip().lower()
            lines.append(f"- `{key}`: you guessed {said!r}, measured **{truth!r}**: " + ("✔ right." if right else "✘ not this time."))
    return "**Your prediction against the measurement**\n\n" + "\n".join(lines)


def _load_chapters() -> None:
    from toolkit.exercises import ch01, ch02, ch03, ch04, ch05, ch06, ch07, ch08, ch09  # noqa: F401  (registers their exercises on import)
