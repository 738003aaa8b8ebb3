import pytest

from toolkit import claims


def test_a_false_claim_stops_a_full_run(tmp_path, capsys):
    with pytest.raises(claims.ClaimFailed, match="bf16 is faster.*90 vs 80"):
        claims.claim("bf16 is faster", False, evidence="90 vs 80", chapter="01", smoke=False, results_dir=tmp_path)
    assert "✘" in capsys.readouterr().out
    assert claims.load_claims(tmp_path)[0]["verdict"] == "FAILED"


def test_a_false_claim_is_only_reported_in_smoke_mode(tmp_path, capsys):
    assert claims.claim("bf16 is faster", False, evidence="e", chapter="01", smoke=True, results_dir=tmp_path) is False
    assert "not enforced" in capsys.readouterr().out
    assert claims.claim("bf16 is faster", True, evidence="e", chapter="01", smoke=True, results_dir=tmp_path) is True
    rows = claims.load_claims(tmp_path)
    assert len(rows) == 1 and rows[0]["verdict"] == "holds", "a re-checked claim replaces its old verdict"


def test_reset_forgets_a_chapter(tmp_path):
    claims.claim("x", True, evidence="e", chapter="02", smoke=False, results_dir=tmp_path)
    claims.reset("02", tmp_path)
    assert claims.load_claims(tmp_path) == []
