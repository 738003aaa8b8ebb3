"""Prose audit: the static sentences of the workbook that state a comparison or a quantity.

The workbook's rule is that prose states only what the run measured. Sentences *generated*
from the run's numbers (``display(Markdown(f"..."))`` in a code cell) follow the numbers by
construction. Static Markdown cannot, so every static sentence with a comparative or
quantitative word must be one of:

- ``claim``: backed by a claim the chapter checks (``toolkit.workbook.claims.claim`` / ``speed_claim``);
  the register names a piece of the claim's statement, and the audit finds it in the code;
- ``definition``: a definition, a formula, or a fact that holds on any machine by construction
  (the int8 range, 6.02 dB per bit, what a mask stores), or a statement of what a section does;
- ``plan``: a time estimate for the reader (reading and compute minutes);
- ``quiz``: a quiz title or answer option, right or wrong on purpose, explained by the quiz itself.

``tests/prose_register.json`` holds the verdict for every such sentence, keyed by notebook and
the sentence's start; ``tests/workbook/test_prose.py`` fails on a new unregistered sentence, on a
register entry whose sentence is gone, and on a claim entry whose claim the chapter lost.

    python -m toolkit.workbook.audit            # list every flagged sentence with its verdict
    python -m toolkit.workbook.audit --missing  # only sentences the register does not cover
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REGISTER = ROOT / "tests" / "prose_register.json"
KINDS = ("claim", "definition", "plan", "quiz")

COMPARATIVE = re.compile(
    r"\b(faster|slower|fastest|slowest|better|worse|best|worst|more|less|fewer|most|least|larger|smaller|"
    r"largest|smallest|higher|lower|bigger|cheaper|costlier|twice|half|halves|double|doubles|several|"
    r"much|many|few|almost|nearly|about|close|closer|hardly|barely|wins?|loses?|beats?|gains?|"
    r"speed-?ups?|points?|percent)\b"
    r"|\d\s*(%|x\b|×|dB|MB|GB|ms|s\b|bytes|minutes?|seconds?|points?)",
    re.IGNORECASE,
)
KEY_LENGTH = 70


def _strip_markdown(text: str) -> str:
    text = re.sub(r"```.*?```", " ", text, flags=re.S)  # code blocks are code, not claims
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)  # display formulas
    text = re.sub(r"^\s*\|.*\|\s*$", " ", text, flags=re.M)  # table rows: checked one by one below
    return text


def sentences(markdown: str) -> list[str]:
    """Split a Markdown cell into sentences (and table rows), whitespace collapsed."""
    rows = [" ".join(r.split()) for r in re.findall(r"^\s*\|.*\|\s*$", markdown, flags=re.M) if not re.match(r"^\s*\|[\s:|-]+\|\s*$", r)]
    text = " ".join(_strip_markdown(markdown).split())
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z*(`\-\d])|\s+(?=- \*\*|\d\. )", text)
    return [p.strip() for p in parts if p.strip()] + rows


def flagged(markdown: str) -> list[str]:
    return [s for s in sentences(markdown) if COMPARATIVE.search(s)]


def key(sentence: str) -> str:
    return sentence[:KEY_LENGTH]


def notebook_sentences(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    found = []
    for cell in cells:
        if cell["cell_type"] == "markdown":
            found += flagged("".join(cell["source"]))
    return found


def notebook_code(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def load_register(path: Path = REGISTER) -> dict[str, dict[str, dict]]:
    return json.loads(path.read_text()) if path.is_file() else {}


def audit(notebooks_dir: Path = ROOT / "notebooks", register: dict | None = None) -> dict[str, list[dict]]:
    """{notebook: [{"sentence", "kind" (None if unregistered), "note"}]} for every flagged sentence."""
    register = load_register() if register is None else register
    report = {}
    for path in sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb")):
        entries = register.get(path.stem, {})
        report[path.stem] = [
            {"sentence": s, "kind": entries.get(key(s), {}).get("kind"), "note": entries.get(key(s), {}).get("note", "")}
            for s in notebook_sentences(path)
        ]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--missing", action="store_true", help="only sentences the register does not cover")
    parser.add_argument("--json", action="store_true", help="print the audit as JSON")
    args = parser.parse_args(argv)
    report = audit()
    if args.json:
        print(json.dumps(report, indent=1, ensure_ascii=False))
        return 0
    missing = 0
    for notebook, rows in report.items():
        shown = [r for r in rows if not args.missing or r["kind"] is None]
        if shown:
            print(f"\n## {notebook}: {len(rows)} flagged sentences")
        for r in shown:
            missing += r["kind"] is None
            print(f"- [{r['kind'] or 'UNREGISTERED'}] {r['sentence']}" + (f"  ({r['note']})" if r["note"] else ""))
    counts = {k: sum(r["kind"] == k for rows in report.values() for r in rows) for k in KINDS}
    print(f"\n{sum(len(r) for r in report.values())} flagged sentences: " + ", ".join(f"{v} {k}" for k, v in counts.items())
          + f", {missing} unregistered")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
