"""A chapter's key statements, checked against the numbers the chapter just measured.

Prose can drift from the measurements; a claim cannot. Each chapter states its key
results as claims::

    toolkit.claim("bf16 halves the file", bf16_bytes <= 0.51 * fp32_bytes,
                  evidence=f"{bf16_bytes:,} vs {fp32_bytes:,} bytes", chapter="01", smoke=SMOKE)

In full mode a claim that does not hold stops the run with ``ClaimFailed``: the workbook
must not publish a statement its own numbers contradict. In smoke mode (tiny data, a
barely trained model) the verdict is printed and recorded but never raises.
Every verdict is written to ``build/results/claims/<chapter>.json`` for the report.
"""

from __future__ import annotations

import json
from pathlib import Path

from toolkit import runtime


class ClaimFailed(AssertionError):
    """A chapter's key statement is contradicted by its own full-mode measurements."""


def _claims_file(chapter: str, results_dir: Path | None) -> Path:
    folder = Path(results_dir) if results_dir is not None else runtime.results_dir()
    return folder / "claims" / f"{chapter}.json"


def claim(
    statement: str,
    holds: bool,
    *,
    evidence: str,
    chapter: str,
    smoke: bool,
    results_dir: Path | None = None,
) -> bool:
    """Check ``statement``; raise ``ClaimFailed`` in full mode if it does not hold."""
    holds = bool(holds)
    if holds:
        verdict = "holds"
    else:
        verdict = "does not hold (smoke run, not enforced)" if smoke else "FAILED"
    path = _claims_file(chapter, results_dir)
    entries = json.loads(path.read_text()) if path.is_file() else []
    entries = [e for e in entries if e["statement"] != statement]
    entries.append({"chapter": chapter, "statement": statement, "verdict": verdict, "evidence": evidence, "smoke": smoke})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(entries, indent=2))
    tmp.replace(path)
    mark = "✔" if holds else ("•" if smoke else "✘")
    print(f"{mark} claim {verdict}: {statement} [{evidence}]")
    if not holds and not smoke:
        raise ClaimFailed(f"chapter {chapter}: {statement!r} does not hold: {evidence}")
    return holds


def reset(chapter: str, results_dir: Path | None = None) -> None:
    """Forget a chapter's earlier verdicts (the runner calls this before a chapter runs)."""
    _claims_file(chapter, results_dir).unlink(missing_ok=True)


def load_claims(results_dir: Path | None = None) -> list[dict]:
    folder = Path(results_dir) if results_dir is not None else runtime.results_dir()
    rows = []
    for path in sorted((folder / "claims").glob("*.json")):
        rows += json.loads(path.read_text())
    return rows
