"""The toolkit index (lessons/toolkit-index.md) is generated from the chapters and kept current."""

from toolkit.workbook import index


def test_the_index_is_current():
    assert index.INDEX_PATH.read_text() == index.build_index(), "regenerate it: python -m toolkit.workbook.index"


def test_the_index_resolves_calls_through_every_kind_of_import():
    text = index.build_index()
    assert text.count("\n| `toolkit.") >= 100
    assert "| `toolkit.quant.integer.integer_linear` | [ch. 3]" in text  # via `from toolkit import quant`
    assert "`toolkit.prune.structured.prune_ffn_` | [ch. 7]" in text or "`toolkit.prune.structured.prune_ffn_` | [ch. 8]" in text
    assert "`toolkit.workbook.exercises.check` | [ch. 1](../notebooks/01_overview.ipynb)" in text  # via `import toolkit`
    assert "_deciles" not in text, "private names are not indexed"
