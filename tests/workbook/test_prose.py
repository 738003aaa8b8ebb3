"""Every static sentence of a chapter that compares or quantifies is generated, claim-backed or a
definition: the prose audit (``python -m toolkit.workbook.audit``) against ``tests/prose_register.json``."""

import json
from pathlib import Path

import pytest

from toolkit.workbook import audit

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REGISTER = audit.load_register()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_quantitative_sentence_is_accounted_for(path):
    entries = REGISTER.get(path.stem, {})
    flagged = audit.notebook_sentences(path)
    missing = [s for s in flagged if audit.key(s) not in entries]
    changed = [s for s in flagged if audit.key(s) in entries and entries[audit.key(s)]["sentence"] != s]
    stale = set(entries) - {audit.key(s) for s in flagged}
    assert not missing, "sentences the register does not cover (add them to tests/prose_register.json with a kind):\n" + "\n".join(missing)
    assert not changed, "sentences changed since they were registered (check the verdict again):\n" + "\n".join(changed)
    assert not stale, f"register entries whose sentence is gone: {sorted(stale)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_claim_backed_sentences_name_a_claim_the_chapter_checks(path):
    code = audit.notebook_code(path)
    for key, entry in REGISTER.get(path.stem, {}).items():
        assert entry["kind"] in audit.KINDS, (key, entry["kind"])
        if entry["kind"] == "claim":
            backing = entry["claim"]
            assert backing in code and ("claim(" in code), f"{key!r}: no claim containing {backing!r} in {path.name}"


def test_the_audit_flags_comparisons_and_quantities():
    text = "This layer is **faster** than that one. It has 12 rows. Accuracy rose by 3 points. We define s as the step."
    assert audit.flagged(text) == ["This layer is **faster** than that one.", "Accuracy rose by 3 points."]


def test_register_is_valid_json_with_known_kinds():
    raw = json.loads((ROOT / "tests" / "prose_register.json").read_text())
    assert set(raw) == {p.stem for p in NOTEBOOKS}
