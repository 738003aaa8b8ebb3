"""The Chinese companion (lessons/zh/README.md): every chapter has its 中文小结, every glossary term is taught
where the glossary says, and the README leads a reader there."""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
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
