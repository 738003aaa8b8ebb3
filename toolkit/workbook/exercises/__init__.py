"""Exercises: fixed small cases with known answers, a hint for every failure, never a crash.

A chapter's exercise is a stub the reader fills in, followed by a check cell::

    def expected_bytes(num_parameters, dtype):
        raise NotImplementedError  # your code here

    expected_bytes = toolkit.workbook.exercises.check("01.expected_bytes", expected_bytes)

``check`` runs the reader's function on every case. It answers with one of:

- ``✔`` all cases pass: the reader's function is returned and used by the cells below;
- ``✘`` a case fails or raises: the input, the expected and the actual value, and the first
  hint; the reference solution is returned so the chapter still runs;
- ``○`` the stub is untouched (it raised ``NotImplementedError``): the reference solution
  is returned and the message says so.

Hints come in tiers, shown one at a time: the first says the idea, the second the formula, the
last the code. ``check`` shows only the first; ``hint("01.expected_bytes", level=2)`` shows the
next, so a reader asks for the code only after trying with the idea and the formula.

Reference solutions and cases live in one module per chapter (``toolkit/workbook/exercises/ch01.py``);
the lesson plans print the same solutions and the tests run them through the same checks.

Every message a reader meets here (titles, hint tiers, quiz questions, choices and explanations,
the checks' answers) exists in English and in simplified Chinese: ``language("zh")`` switches
them, as does ``WORKBOOK_LANGUAGE=zh`` set before Jupyter starts. The Chinese texts live in
``toolkit/workbook/exercises/zh/`` (one module per chapter) and use the companion's glossary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from toolkit import runtime


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


TIERS = {"en": ("idea", "formula", "code"), "zh": ("思路", "公式", "代码")}

# Every sentence check, hint and quiz print, in both languages (placeholders filled by str.format).
MESSAGES = {
    "en": {
        "first_hint": "Hint 1 of {n} ({tier}): {text}\n  Stuck? toolkit.workbook.exercises.hint({name!r}, level=2) shows the {next}.",
        "hint": "{title} · hint {level} of {n} ({tier}): {text}",
        "next_hint": "\n  Next: toolkit.workbook.exercises.hint({name!r}, level={level}) shows the {next}.",
        "bad_level": "level must be 1, 2 or 3 (idea, formula, code); got {level!r}",
        "not_attempted": "○ {title}: not attempted yet. The chapter goes on with the reference solution; fill in the stub "
                         "and re-run this cell to check yours.\n  {hint}",
        "raised": "✘ {title}: calling it with ({args}) raised {error}\n  {hint}\n  The chapter goes on with the reference solution.",
        "wrong": "✘ {title}: for ({args}) expected {expected!r}, got {got!r}.\n  {hint}\n  The chapter goes on with the reference solution.",
        "correct": "✔ {title}: correct on all {n} cases.",
        "unanswered": "○ Quiz {name} not answered yet: set its answer to one of {letters} and re-run this cell.",
        "not_a_choice": "✘ {answer!r} is not a choice; accepted: {letters}.",
        "right": "✔ Right. ",
        "not_quite": "✘ Not quite. ",
        "think_again": "  Think again, or read the explanation in the lesson plan.",
    },
    "zh": {
        "first_hint": "提示 1/{n}（{tier}）：{text}\n  卡住了？toolkit.workbook.exercises.hint({name!r}, level=2) 给出{next}。",
        "hint": "{title} · 提示 {level}/{n}（{tier}）：{text}",
        "next_hint": "\n  下一步：toolkit.workbook.exercises.hint({name!r}, level={level}) 给出{next}。",
        "bad_level": "level 只能是 1、2 或 3（思路、公式、代码）；收到的是 {level!r}",
        "not_attempted": "○ {title}：还没有作答。本章先用参考答案继续运行；补全函数后重新运行本单元即可检查你的答案。\n  {hint}",
        "raised": "✘ {title}：用 ({args}) 调用时抛出 {error}\n  {hint}\n  本章用参考答案继续运行。",
        "wrong": "✘ {title}：输入 ({args}) 时应得 {expected!r}，实际得到 {got!r}。\n  {hint}\n  本章用参考答案继续运行。",
        "correct": "✔ {title}：全部 {n} 个用例正确。",
        "unanswered": "○ 测验 {name} 还没有作答：把答案设为 {letters} 之一，再运行本单元。",
        "not_a_choice": "✘ {answer!r} 不是选项；可选：{letters}。",
        "right": "✔ 正确。",
        "not_quite": "✘ 不太对。",
        "think_again": "  再想一想，或阅读教案中的解释。",
    },
}


def language(code: str | None = None) -> str:
    """Switch the reader-facing messages to ``code`` (``"en"`` or ``"zh"``) and return the language in use.

    ``language()`` only reports it. The setting covers quizzes, hints, exercise checks and the claims'
    notices (``toolkit.workbook.claims``); the environment variable ``WORKBOOK_LANGUAGE`` sets the default.
    """
    return runtime.language() if code is None else runtime.set_language(code)


def _say(key: str, **values) -> str:
    return MESSAGES[runtime.language()][key].format(**values)


def _chinese() -> dict:
    from toolkit.workbook.exercises import zh

    return zh.TEXTS


def title(exercise: Exercise) -> str:
    """The exercise's title in the current language."""
    return _chinese()[exercise.name]["title"] if runtime.language() == "zh" else exercise.title


def hints(exercise: Exercise) -> tuple[str, ...]:
    """The exercise's hint tiers (idea, formula, code) in the current language."""
    return tuple(_chinese()[exercise.name]["hint"]) if runtime.language() == "zh" else exercise.hint


def quiz_text(item: Quiz) -> tuple[str, dict[str, str], dict[str, str]]:
    """(question, choices, explanations) of a quiz in the current language."""
    if runtime.language() == "zh":
        text = _chinese()[item.name]
        return text["question"], dict(text["choices"]), dict(text["explanations"])
    return item.question, dict(item.choices), dict(item.explanations)


def quiz_markdown(names: list[str]) -> str:
    """The quizzes ``names`` as numbered Markdown questions with their choices, in the current language.

    Taught in: chapter 1.
    """
    parts = []
    for number, name in enumerate(names, 1):
        question, choices, _ = quiz_text(_lookup(QUIZZES, name, "quiz"))
        parts.append(f"**{number}. {question}**\n\n" + "\n".join(f"- **{k}.** {v}" for k, v in choices.items()))
    return "\n\n".join(parts)


def _first_hint(exercise: Exercise) -> str:
    tiers = TIERS[runtime.language()]
    return _say("first_hint", n=len(exercise.hint), tier=tiers[0], text=hints(exercise)[0], name=exercise.name, next=tiers[1])


def hint(name: str, level: int = 1) -> str:
    """Show tier ``level`` of an exercise's hints (1 the idea, 2 the formula, 3 the code) and return it."""
    exercise = _lookup(EXERCISES, name, "exercise")
    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= len(exercise.hint):
        raise ValueError(_say("bad_level", level=level))
    tiers, text = TIERS[runtime.language()], hints(exercise)[level - 1]
    more = _say("next_hint", name=name, level=level + 1, next=tiers[level]) if level < len(exercise.hint) else ""
    print(_say("hint", title=title(exercise), level=level, n=len(exercise.hint), tier=tiers[level - 1], text=text) + more)
    return text


def check(name: str, attempt: Callable) -> Callable:
    """Run ``attempt`` on the exercise's cases; return it if right, else the reference.

    Taught in: chapter 1, section 4 (Where the parameters and the bytes live).
    """
    exercise = _lookup(EXERCISES, name, "exercise")
    for args, expected in exercise.cases:
        shown = ", ".join(repr(a) for a in args)
        try:
            got = attempt(*args)
        except NotImplementedError:
            print(_say("not_attempted", title=title(exercise), hint=_first_hint(exercise)))
            return exercise.reference
        except Exception as error:  # a reader's bug must answer with a hint, not a traceback
            print(_say("raised", title=title(exercise), args=shown, error=f"{type(error).__name__}: {error}", hint=_first_hint(exercise)))
            return exercise.reference
        if not _same(got, expected, exercise.rel_tol):
            print(_say("wrong", title=title(exercise), args=shown, expected=expected, got=got, hint=_first_hint(exercise)))
            return exercise.reference
    print(_say("correct", title=title(exercise), n=len(exercise.cases)))
    return attempt


def quiz(name: str, answer: str | None) -> bool:
    """Say whether ``answer`` (a letter) is right, and why; ``None`` means not answered yet.

    Taught in: chapter 1, section 5 (The landscape of techniques).
    """
    item = _lookup(QUIZZES, name, "quiz")
    letters = ", ".join(item.choices)
    if answer is None:
        print(_say("unanswered", name=name, letters=letters))
        if runtime.language() != "en":  # the chapter's Markdown states the question in English; restate it
            question, choices, _ = quiz_text(item)
            print(f"  {question}\n" + "\n".join(f"  {k}. {v}" for k, v in choices.items()))
        return False
    letter = str(answer).strip().lower()
    if letter not in item.choices:
        print(_say("not_a_choice", answer=answer, letters=letters))
        return False
    correct = letter == item.answer
    _, _, explanations = quiz_text(item)
    print(_say("right" if correct else "not_quite") + explanations.get(letter, ""))
    if not correct:
        print(_say("think_again"))
    return correct


def compare_guess(guess: dict[str, Any], measured: dict[str, Any], rel_tol: float = 0.25) -> str:
    """"Predict, then run": each guessed quantity beside its measurement, as one Markdown line each.

    ``guess`` and ``measured`` share their keys. A number counts as close when
    |guess - measured| <= rel_tol * |measured|; a word or a yes/no must match (case aside).
    A ``None`` guess asks the reader to write one before looking, next time.

    Taught in: chapter 1, section 5 (The landscape of techniques).
    """
    if not isinstance(guess, dict) or set(guess) != set(measured):
        raise ValueError(f"guess must be a dict with the keys {sorted(measured)}; got {guess!r}")
    if not 0 < rel_tol < 1:
        raise ValueError(f"rel_tol must be between 0 and 1; got {rel_tol!r}")
    zh = runtime.language() == "zh"
    if all(value is None for value in guess.values()):
        return ("○ **没有写下猜测。** 下次请先在猜测单元里填好再运行实验：写下来的预测，才让测量真正教会你东西。" if zh else
                "○ **No guess written.** Next time, fill in the guess cell before running the experiment: "
                "a prediction you wrote down is what makes the measurement teach you something.")
    lines = []
    for key, truth in measured.items():
        said = guess[key]
        if said is None:
            lines.append(f"- `{key}`：没有猜测；测得 **{truth}**。" if zh else f"- `{key}`: no guess; measured **{truth}**.")
        elif isinstance(truth, (int, float)) and not isinstance(truth, bool) and isinstance(said, (int, float)):
            close = abs(said - truth) <= rel_tol * abs(truth)
            if zh:
                lines.append(f"- `{key}`：你猜 {said}，测得 **{truth}**：" + ("✔ 很接近。" if close else
                             f"✘ {'偏高' if said > truth else '偏低'}；你的猜测漏掉了什么？"))
            else:
                lines.append(f"- `{key}`: you guessed {said}, measured **{truth}**: " + ("✔ close." if close else
                             f"✘ {'too high' if said > truth else 'too low'}; what did the guess leave out?"))
        else:
            right = str(said).strip().lower() == str(truth).strip().lower()
            lines.append(f"- `{key}`：你猜 {said!r}，测得 **{truth!r}**：" + ("✔ 猜对了。" if right else "✘ 这次没猜中。") if zh else
                         f"- `{key}`: you guessed {said!r}, measured **{truth!r}**: " + ("✔ right." if right else "✘ not this time."))
    return ("**你的预测与测量结果**\n\n" if zh else "**Your prediction against the measurement**\n\n") + "\n".join(lines)


def _load_chapters() -> None:
    from toolkit.workbook.exercises import ch01, ch02, ch03, ch04, ch05, ch06, ch07, ch08, ch09, ch10  # noqa: F401  (registers their exercises on import)
