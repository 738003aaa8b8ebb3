"""The README's chapter minutes come from a runner's report, copied by `python -m toolkit.workbook.runner --readme`, never typed."""

import re
from pathlib import Path

import pytest

from toolkit.workbook import runner

README = Path(__file__).resolve().parents[2] / "README.md"


def block() -> str:
    text = README.read_text()
    return runner.README_START + text.split(runner.README_START, 1)[1].split(runner.README_END, 1)[0] + runner.README_END


def test_the_readme_block_is_exactly_what_the_runner_writes_from_it():
    assert runner.readme_section(block()) == block(), "the block was edited by hand: regenerate it from a full run's report"


def test_the_readme_quotes_a_full_run_of_every_chapter_with_a_consistent_total():
    text = block()
    rows = re.findall(r"^\| (\d\d_\w+\.ipynb) \| ok \| ([0-9.]+) \|", text, re.M)
    assert [name for name, _ in rows] == [p.name for p in runner.chapters()]
    total = float(re.search(rf"^Total: ([0-9.]+) minutes for {len(rows)} chapters\.$", text, re.M).group(1))
    assert abs(total - sum(float(m) for _, m in rows)) <= 0.05 * len(rows), "the total is the rows' sum, before rounding"
    assert re.search(r"^Run: \d{4}-\d\d-\d\d, commit \w+.*, full mode, 1 chapter at a time\.$", text, re.M)
    assert re.search(r"^Measured on: .+ \| features: ", text, re.M)


def fake_report(rows=None, run="Run: 2026-12-03, commit abc1234, full mode, 1 chapter at a time."):
    rows = rows if rows is not None else [(p.name, "ok", 1.0) for p in runner.chapters()]
    table = "\n".join(f"| {name} | {status} | {minutes:.1f} | 2.0 | 1,000 |" for name, status, minutes in rows)
    return (f"# Compression workbook: results\n\n## Chapters run\n\n{run}\n\n| notebook | status | minutes | budget (min) | "
            f"peak memory (MB) |\n| --- | --- | ---: | ---: | ---: |\n{table}\n\nTotal: {sum(r[2] for r in rows):.1f} minutes for "
            f"{len(rows)} chapters.\n\n## Every technique\n\nMeasured on: CPU X | 2 torch threads | features: avx2\n")


def test_only_a_complete_successful_full_run_can_be_quoted():
    names = [p.name for p in runner.chapters()]
    with pytest.raises(ValueError, match="full-mode run"):
        runner.readme_section(fake_report(run="Run: 2026-12-03, commit abc1234, smoke mode, 2 chapters at a time."))
    with pytest.raises(ValueError, match="did not run to the end cannot be quoted: 03_"):
        runner.readme_section(fake_report([(n, "failed: ClaimFailed" if n.startswith("03") else "ok", 1.0) for n in names]))
    with pytest.raises(ValueError, match="must list every chapter once"):
        runner.readme_section(fake_report([(n, "ok", 1.0) for n in names[:-1]]))


def test_update_readme_replaces_only_the_block(tmp_path):
    readme, report = tmp_path / "README.md", tmp_path / "report.md"
    readme.write_text(f"intro\n\n{runner.README_START}\nold numbers\n{runner.README_END}\n\nafter\n")
    report.write_text(fake_report())
    written = runner.update_readme(report, readme)
    text = readme.read_text()
    assert text.startswith("intro\n\n") and text.endswith("\n\nafter\n") and "old numbers" not in text
    n = len(runner.chapters())
    assert written in text and f"Total: {n:.1f} minutes for {n} chapters." in written
    readme.write_text("no markers here\n")
    with pytest.raises(ValueError, match="must hold the block's markers once each"):
        runner.update_readme(report, readme)


def test_the_run_line_names_the_commit_and_the_mode():
    line = runner.run_line(smoke=False, jobs=1)
    assert re.fullmatch(r"Run: \d{4}-\d\d-\d\d, commit \w+( with local changes)?, full mode, 1 chapter at a time\.", line)
    assert "smoke mode, 2 chapters at a time" in runner.run_line(smoke=True, jobs=2)
