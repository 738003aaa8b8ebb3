"""The Chinese switch: every quiz, hint tier and claim notice exists in both languages, and one call switches them."""

import re

import pytest

from toolkit import runtime
from toolkit.workbook import claims, exercises
from toolkit.workbook.exercises import zh

CJK = re.compile(r"[\u4e00-\u9fff]")
exercises._load_chapters()


@pytest.fixture(autouse=True)
def english_afterwards(monkeypatch):
    monkeypatch.delenv(runtime.LANGUAGE_ENV, raising=False)
    monkeypatch.setattr(runtime, "_language", None)
    yield


def test_every_exercise_has_a_chinese_title_and_three_hint_tiers():
    for name, exercise in exercises.EXERCISES.items():
        text = zh.TEXTS.get(name)
        assert text is not None, f"{name} has no Chinese text"
        assert CJK.search(text["title"]) and len(text["hint"]) == 3, name
        assert CJK.search(text["hint"][0]) and text["hint"][1].strip(), f"{name}: the idea tier in Chinese, a formula tier"
        assert text["hint"][2].split("; ")[0] == exercise.hint[2].split("; ")[0], f"{name}: the code tier is the same code"


def test_every_quiz_has_its_question_choices_and_explanations_in_chinese_with_the_same_letters():
    for name, item in exercises.QUIZZES.items():
        text = zh.TEXTS.get(name)
        assert text is not None, f"{name} has no Chinese text"
        assert CJK.search(text["question"]), name
        assert list(text["choices"]) == list(item.choices), f"{name}: the letters differ"
        assert set(text["explanations"]) == set(item.explanations), f"{name}: explanations for other letters"
        assert all(CJK.search(e) for e in text["explanations"].values()), name
        for letter, english in item.explanations.items():  # a misaligned letter would move "Right" to another option
            assert english.startswith("Right") == text["explanations"][letter].startswith("正确"), f"{name} ({letter})"


def test_no_chinese_text_is_left_over_from_a_removed_exercise_or_quiz():
    assert set(zh.TEXTS) == set(exercises.EXERCISES) | set(exercises.QUIZZES)


def test_one_call_switches_checks_hints_and_quizzes(capsys):
    assert exercises.language() == "en"
    assert exercises.language("zh") == "zh"
    exercises.check("01.expected_bytes", lambda n, dtype: n * 4)
    out = capsys.readouterr().out
    assert "练习 1.1" in out and "提示 1/3（思路）" in out and "expected 2000" not in out and "应得 2000" in out
    assert exercises.hint("01.expected_bytes", level=2) == zh.TEXTS["01.expected_bytes"]["hint"][1]
    assert exercises.quiz("01.half_precision", "b") is True
    assert "✔ 正确。" + zh.TEXTS["01.half_precision"]["explanations"]["b"] in capsys.readouterr().out
    assert "分类器的 bf16 副本" in exercises.quiz_markdown(["01.half_precision"])
    exercises.language("en")
    assert "A bf16 copy of the classifier" in exercises.quiz_markdown(["01.half_precision"])


def test_the_environment_variable_sets_the_default_and_bad_values_are_clear_errors(monkeypatch):
    monkeypatch.setenv(runtime.LANGUAGE_ENV, "zh")
    assert exercises.language() == "zh"
    monkeypatch.setenv(runtime.LANGUAGE_ENV, "fr")
    with pytest.raises(ValueError, match="WORKBOOK_LANGUAGE must be one of en, zh"):
        exercises.language()
    with pytest.raises(ValueError, match="language must be one of 'en', 'zh'; got 'de'"):
        exercises.language("de")


def test_a_claim_notice_in_chinese(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(claims.ENFORCE_ENV, raising=False)
    exercises.language("zh")
    claims.claim("x is small", False, evidence="x = 3", chapter="02", smoke=False, results_dir=tmp_path)
    out = capsys.readouterr().out
    assert "通知：本次运行没有证实本章的一条陈述" in out and "本机测得: x = 3" in out and "教案" in out
    assert claims.load_claims(tmp_path)[0]["statement"] == "x is small", "the record for the report stays as stated"


def test_every_speed_expectation_explains_itself_in_both_languages(monkeypatch):
    for key, expectation in claims.SPEED_EXPECTATIONS.items():
        assert CJK.search(expectation.why_zh) and not CJK.search(expectation.why), key
        exercises.language("zh")
        assert expectation.reason() == expectation.why_zh
        exercises.language("en")
        assert expectation.reason() == expectation.why


def test_a_prediction_is_compared_in_chinese_too():
    exercises.language("zh")
    text = exercises.compare_guess({"ratio": 2.0}, {"ratio": 3.5})
    assert text.startswith("**你的预测与测量结果**") and "偏低" in text


def test_an_unanswered_quiz_restates_its_question_in_chinese(capsys):
    exercises.language("zh")
    assert exercises.quiz("01.half_precision", None) is False
    out = capsys.readouterr().out
    assert "还没有作答" in out and zh.TEXTS["01.half_precision"]["question"] in out and "  b. " in out
