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


def test_every_indexed_docstring_names_where_it_is_taught():
    import importlib

    assert index.write_backlinks(write=False) == [], "regenerate them: python -m toolkit.workbook.index --backlinks"
    for name, places in index.uses().items():
        module, qualname = index._split(name)
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        chapter, _, section = places[0]
        assert index.backlink(chapter, section) in (obj.__doc__ or ""), name


def test_backlinks_are_written_once_into_any_docstring_shape():
    source = 'def f(x):\n    """One line."""\n    return x\n\n\nclass A:\n    def g(self):\n        pass\n'
    once = index._with_backlink(index._with_backlink(source, "f", "Taught in: chapter 1."), "A.g", "Taught in: chapter 2.")
    assert index._with_backlink(once, "f", "Taught in: chapter 1.") == once, "idempotent"
    assert '    """One line.\n\n    Taught in: chapter 1.\n    """' in once and '        """Taught in: chapter 2."""\n        pass' in once
    moved = index._with_backlink(once, "f", "Taught in: chapter 3.")
    assert "chapter 1" not in moved.split("class A")[0] and "Taught in: chapter 3." in moved
    assert index.backlink(7, "3. Surgery: cutting the matrices") == "Taught in: chapter 7, section 3 (Surgery: cutting the matrices)."
