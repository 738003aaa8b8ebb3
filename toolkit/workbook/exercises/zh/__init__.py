"""The exercises' and quizzes' texts in simplified Chinese, one module per chapter.

Each module maps an exercise's name to its ``title`` and three ``hint`` tiers (思路, 公式, 代码),
and a quiz's name to its ``question``, ``choices`` and ``explanations`` (the same letters as the
English). ``toolkit.workbook.exercises.language("zh")`` shows these instead of the English; the tests check
that every exercise and quiz has its Chinese text and that the letters agree. Terms follow the
glossary of ``lessons/zh/README.md``; code, function names and numbers stay as they are.
"""

from toolkit.workbook.exercises.zh import ch01, ch02, ch03, ch04, ch05, ch06, ch07, ch08, ch09, ch10

TEXTS: dict[str, dict] = {}
for _chapter in (ch01, ch02, ch03, ch04, ch05, ch06, ch07, ch08, ch09, ch10):
    TEXTS.update(_chapter.TEXTS)
