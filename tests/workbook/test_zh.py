"""The Chinese companion (lessons/zh/README.md): every chapter has its 中文小结, every glossary term is taught
where the glossary says, and the README leads a reader there."""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPANION = ROOT / "lessons" / "zh" / "README.md"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CJK = re.compile(r"[\u4e00-\u9fff]")


def notebook_text(path: Path) -> str:
    return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells).lower()


def glossary() -> list[tuple[str, str, int]]:
    """(Chinese, English, chapter) rows of the companion's term table (its fourth column, the article's synonym, is not read)."""
    section = COMPANION.read_text().split("## 术语对照", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([^|]+?) \| ([^|]+?) \| 第 (\d) 章 \|(?: [^|]*\|)?$", section, re.M)  # 4th column: the article's word
    return [(zh, en, int(chapter)) for zh, en, chapter in rows]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_chapter_ends_with_a_chinese_summary(path):
    cells = nbformat.read(path, as_version=4).cells
    summary = [c for c in cells if c.cell_type == "markdown" and c.source.startswith("### 中文小结")]
    assert summary, f"{path.name} has no '### 中文小结' cell"
    bullets = [line for line in summary[0].source.splitlines() if line.startswith("- ") and CJK.search(line)]
    assert len(bullets) >= 3, f"{path.name}: the Chinese summary has {len(bullets)} bullet points"
    assert f"notebooks/{path.name}" in COMPANION.read_text(), f"the companion does not link {path.name}"


def test_every_glossary_term_is_taught_in_the_chapter_it_names():
    rows = glossary()
    assert len(rows) >= 30 and all(CJK.search(zh) for zh, _, _ in rows)
    texts = {int(p.name[:2]): notebook_text(p) for p in NOTEBOOKS}
    for zh, en, chapter in rows:
        term = en.split(" (")[0].lower()  # "post-training quantization (PTQ)" -> "post-training quantization"
        assert chapter in texts, f"{zh}: chapter {chapter} does not exist"
        assert term in texts[chapter], f"glossary term {en!r} ({zh}) does not appear in chapter {chapter}"


def test_the_readme_leads_to_the_companion():
    assert "lessons/zh/README.md" in (ROOT / "README.md").read_text()


# Variants the glossary rejects (review early-chapters-zh A9, A10): the standard term, not the article's
# wording or a calque. The companion's "原文用语" column may quote the article's words; nothing else may.
REJECTED = {
    "后训练量化": "训练后量化",
    "比特宽度": "位宽",
    "日程": "调度（schedule）",
    "本书": "本手册",
    "工作手册": "实践手册",
    "诚实地": "可靠、可比地",
    "尊重残差": "保证残差连接两端的通道一致",
    "整数码": "整数（量化编码）",
}


def chinese_texts() -> dict[str, str]:
    """Every Chinese text a reader meets: each chapter's Chinese cells, the companion without its glossary's synonym column,
    and the Chinese quizzes, hints and claim notices."""
    texts = {}
    for path in NOTEBOOKS:
        cells = nbformat.read(path, as_version=4).cells
        texts[path.name] = "\n".join(c.source for c in cells if c.cell_type == "markdown" and CJK.search(c.source))
    companion = re.sub(r"^(\| [^|]+ \| [^|]+ \| 第 \d 章 \|) [^|]*\|$", r"\1", COMPANION.read_text(), flags=re.M)
    texts["lessons/zh/README.md"] = companion
    from toolkit.workbook import claims
    from toolkit.workbook.exercises import zh

    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from strings(item)
        elif isinstance(value, (tuple, list)):
            for item in value:
                yield from strings(item)

    texts["toolkit/workbook/exercises/zh"] = "\n".join(strings(zh.TEXTS))  # the quizzes and hints of language("zh")
    texts["toolkit/workbook/claims.py"] = "\n".join(list(strings(claims.NOTICE["zh"])) + [e.why_zh for e in claims.SPEED_EXPECTATIONS.values()])
    return texts


def test_chinese_texts_use_the_glossary_terms_not_their_rejected_variants():
    found = [f"{name}: {bad!r} (use {good!r})" for name, text in chinese_texts().items()
             for bad, good in REJECTED.items() if bad in text]
    assert not found, "rejected Chinese variants:\n" + "\n".join(found)


def test_the_rejected_variants_check_would_catch_one():
    assert "后训练量化" in COMPANION.read_text()  # quoted once, as the article's word, in the synonym column ...
    assert "后训练量化" not in chinese_texts()["lessons/zh/README.md"]  # ... which the check leaves out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_chapter_opens_with_a_chinese_guide_to_its_article_sections(path):
    cells = nbformat.read(path, as_version=4).cells
    guide = [c for c in cells[:3] if c.cell_type == "markdown" and c.source.startswith("### 中文导读")]
    assert guide, f"{path.name}: no '### 中文导读' cell among the first three cells"
    text = guide[0].source
    assert "原文" in text and "lessons/zh/README.md" in text and len(CJK.findall(text)) >= 60, \
        f"{path.name}: the guide must say what the chapter does, which article section it covers, and link the companion"
