import json

import pytest

from toolkit.workbook import claims, report


def make(technique, size, acc, b1, b64, chapter="01"):
    return report.Result(technique=technique, chapter=chapter, bytes_on_disk=size, accuracy=acc,
                         latency_ms_batch1=b1, latency_ms_batch64=b64, parameters=1000, hardware="test machine")


def test_unknown_technique_lists_the_accepted_names():
    with pytest.raises(ValueError, match="technique 'fp8-typo' is not known; accepted: .*bf16.*fp32"):
        make("fp8-typo", 10, 0.9, 1, 1)


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="accuracy"):
        make("fp32", 10, 91.3, 1, 1)
    with pytest.raises(ValueError, match="bytes_on_disk"):
        make("fp32", 0, 0.9, 1, 1)
    with pytest.raises(ValueError, match="technique name"):
        report.register_technique("has space", "no")


def test_register_technique_allows_new_rows(monkeypatch):
    monkeypatch.setitem(report.TECHNIQUES, "int8-dynamic", "test")
    assert make("int8-dynamic", 10, 0.9, 1, 1).technique == "int8-dynamic"


def test_records_round_trip_and_table(tmp_path):
    rows = [make("fp32", 4000, 0.92, 5.0, 400.0), make("bf16", 2000, 0.92, 4.0, 100.0)]
    for row in rows:
        path = report.record(row, tmp_path)
        assert json.loads(path.read_text())["technique"] == row.technique
    loaded = report.load_results(tmp_path)
    assert [r.technique for r in loaded] == ["fp32", "bf16"]
    assert loaded[1].bytes_on_disk == 2000
    loaded[0].extra["latency_big_batch"] = {"p10_ms": 390.0, "p90_ms": 410.5}
    table = report.comparison_table(loaded)
    assert "| 400.0 (390.0-410.5) |" in table
    assert "| 01 | bf16 | 0.0 | 2.00x | 4.0 | 100.0 | 4.00x | 1.00x | 92.0% | +0.0 pts |" in table
    assert "| 01 | fp32 |" in table and "0.25x" in table
    assert not list(tmp_path.rglob("*.tmp*")), "records are written atomically"


def test_report_gathers_results_chart_and_claims(tmp_path):
    results = tmp_path / "results"
    report.record(make("fp32", 4000, 0.92, 5.0, 400.0), results)
    report.record(make("fp16", 2000, 0.91, 5.0, 300.0), results)
    claims.claim("fp16 halves the file", True, evidence="2000 vs 4000", chapter="01", smoke=False, results_dir=results)
    out = report.write_report(results, tmp_path / "report.md", [{"notebook": "01_overview.ipynb", "status": "ok", "seconds": 30}])
    text = out.read_text()
    assert "| 01 | fp16 |" in text and "report_chart.png" in text
    assert "| 01 | fp16 halves the file | holds | 2000 vs 4000 |" in text
    assert "| 01_overview.ipynb | ok | 0.5 |" in text
    assert (tmp_path / "report_chart.png").stat().st_size > 10_000


def test_empty_report_says_so(tmp_path):
    text = report.write_report(tmp_path / "results", tmp_path / "report.md").read_text()
    assert "no results recorded yet" in text


def test_records_carry_their_description_so_the_report_knows_chapter_techniques(tmp_path, monkeypatch):
    monkeypatch.setitem(report.TECHNIQUES, "w4-test", "int4 test technique")
    report.record(make("w4-test", 10, 0.9, 1, 1), tmp_path)
    monkeypatch.delitem(report.TECHNIQUES, "w4-test")  # as in a fresh process that never ran the chapter
    (loaded,) = report.load_results(tmp_path)
    assert loaded.technique == "w4-test" and loaded.description == "int4 test technique"


def test_each_chapter_is_compared_with_its_own_baselines():
    rows = [make("fp32", 4000, 0.90, 5.0, 400.0, chapter="01"), make("fp32", 4000, 0.92, 5.0, 200.0, chapter="03"),
            make("bf16", 2000, 0.92, 4.0, 100.0, chapter="03")]
    table = report.comparison_table(rows)
    assert "| 03 | bf16 | 0.0 | 2.00x | 4.0 | 100.0 | 2.00x | 1.00x | 92.0% | +0.0 pts |" in table
    assert "| 01 | fp32 | 0.0 | 1.00x | 5.0 | 400.0 | 1.00x | 0.25x | 90.0% | +0.0 pts |" in table  # no bf16 in 01: the first one found


def test_tables_give_the_accuracy_interval_and_the_report_the_run_log(tmp_path):
    fp32 = make("fp32", 90_000_000, 0.933, 4.0, 180.0)
    fp32.extra["test_examples"] = 450
    table = report.comparison_table([fp32])
    assert "accuracy (95% CI)" in table and "| 93.3% (90.6-95.3) |" in table
    report.record(fp32, tmp_path)
    log = [{"notebook": "01_overview.ipynb", "status": "ok", "seconds": 600.0, "peak_rss_mb": 912.4, "budget_minutes": 4.0},
           {"notebook": "02_x.ipynb", "status": "ok", "seconds": 30.0, "peak_rss_mb": None, "budget_minutes": None}]
    text = report.write_report(tmp_path, tmp_path / "report.md", log).read_text()
    assert "| 01_overview.ipynb | ok | 10.0 | 4.0 **over budget** | 912 |" in text
    assert "| 02_x.ipynb | ok | 0.5 | n/a | n/a |" in text
    assert "one sentence = 0.22 points" in text


def test_a_disturbed_timing_is_marked_noisy():
    quiet, busy = make("fp32", 90_000_000, 0.93, 4.0, 180.0), make("bf16", 45_000_000, 0.93, 4.0, 800.0)
    quiet.extra["latency_big_batch"] = {"p10_ms": 178.0, "p90_ms": 185.0}
    busy.extra["latency_big_batch"] = {"p10_ms": 186.0, "p90_ms": 1036.0}
    table = report.comparison_table([quiet, busy])
    assert "180.0 (178.0-185.0) |" in table and "800.0 (186.0-1036.0) ⚠ |" in table
    assert "speed-ups computed from it mislead" in table


def test_a_timing_on_a_busy_machine_is_marked_even_with_a_tight_spread():
    row = make("fp32", 90_000_000, 0.93, 4.0, 1072.0)
    row.extra["latency_big_batch"] = {"p10_ms": 1069.6, "p90_ms": 1076.5, "other_load": 0.5}
    assert "1072.0 (1069.6-1076.5) ⚠ |" in report.comparison_table([row])


def test_pareto_front_keeps_what_nothing_beats_on_both_axes():
    points = [(10.0, 0.90), (5.0, 0.90), (5.0, 0.85), (2.0, 0.80), (20.0, 0.93), (3.0, 0.79)]
    # (10, .90) is beaten by (5, .90); (5, .85) by (5, .90); (3, .79) by (2, .80)
    assert report.pareto_front(points) == [3, 1, 4]
    assert report.pareto_front([(1.0, 0.5)]) == [0]


def test_chart_and_best_tradeoffs_show_each_technique_once(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg", force=True)
    monkeypatch.setitem(report.TECHNIQUES, "int8", "test row")
    monkeypatch.setitem(report.TECHNIQUES, "int2", "test row")
    rows = [make("fp32", 4000, 0.93, 5.0, 400.0), make("bf16", 2000, 0.93, 4.0, 120.0), make("int8", 1000, 0.92, 3.0, 150.0),
            make("int2", 500, 0.54, 3.0, 160.0)]
    results = rows + [make("fp32", 4000, 0.93, 5.0, 410.0, chapter="03")]
    assert [r.chapter for r in report.one_per_technique(results) if r.technique == "fp32"] == ["01"]
    fig = report.tradeoff_chart(results, tmp_path / "chart.png")
    low, high = fig.axes[0].get_ylim()
    assert low > 54 and high < 95, "a 54% outlier must not stretch the accuracy axis"
    labels = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert labels.count("fp32") == 2 and any(t.startswith("int2 (54%)") for t in labels)
    text = report.best_tradeoffs(results)
    assert "**size**: int2 (0.0 MB, 54.0%) → int8" in text and "bf16 (0.0 MB, 93.0%)" in text
    assert "latency at batch 64**: bf16 (120.0 ms, 93.0%)" in text


def test_round_trips_measure_the_reloaded_model_and_record_it(tmp_path, monkeypatch, tokenizer, splits):
    import torch

    from toolkit import models

    monkeypatch.setenv("WORKBOOK_RESULTS_DIR", str(tmp_path / "results"))
    model = models.sentiment_classifier(smoke=True, progress=False)
    trips = report.RoundTrips(tmp_path / "files", tokenizer, splits.test[:64], chapter="03", smoke=True, repeats=1)
    result = trips.run("bf16", "bfloat16 cast", models.cast(model, torch.bfloat16), models.save_float,
                       lambda path: models.load_float(path, torch.bfloat16, smoke=True))
    path = tmp_path / "files" / "bf16.safetensors"
    assert result.bytes_on_disk == path.stat().st_size
    assert result.extra["same_prediction"] == 1.0 and result.extra["max_logit_diff"] == 0.0
    assert trips.results["bf16"] is result and next(trips.models["bf16"].parameters()).dtype == torch.bfloat16
    assert [r.technique for r in report.load_results(tmp_path / "results")] == ["bf16"]


def test_chart_labels_never_overlap_and_the_legend_stays_off_the_data(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg", force=True)
    names = ["pipeline-final", "pipeline-mixed-precision", "openvino-int8", "int8-a", "int8-b", "int8-c"]
    for name in names:
        monkeypatch.setitem(report.TECHNIQUES, name, "test row")
    # a crowded front: the points the real report draws on top of each other
    rows = [make("fp32", 90_000_000, 0.933, 10.0, 450.0), make("bf16", 45_000_000, 0.933, 5.0, 190.0),
            make("openvino-int8", 23_000_000, 0.931, 2.5, 110.0), make("pipeline-final", 7_800_000, 0.924, 2.0, 36.0),
            make("pipeline-mixed-precision", 6_300_000, 0.918, 9.0, 146.0), make("int8-a", 12_000_000, 0.930, 3.0, 120.0),
            make("int8-b", 11_000_000, 0.929, 3.1, 118.0), make("int8-c", 10_000_000, 0.928, 3.2, 116.0)]
    fig = report.tradeoff_chart(rows, tmp_path / "chart.png")
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        assert ax.get_xscale() == "log"
        boxes = [t.get_window_extent(renderer) for t in ax.texts]
        assert len(boxes) >= 4  # the fronts and the two baselines are labelled
        clashes = [(a.get_text(), b.get_text()) for i, a in enumerate(ax.texts) for b in ax.texts[i + 1:]
                   if a.get_window_extent(renderer).overlaps(b.get_window_extent(renderer))]
        assert not clashes, f"overlapping labels: {clashes}"
        legend_box = fig.legends[0].get_window_extent(renderer)
        assert not legend_box.overlaps(ax.get_window_extent(renderer)), "the legend must sit off the panels"
    assert (tmp_path / "chart.png").stat().st_size > 10_000


def test_labels_avoid_the_markers_they_could_cover():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    points = [(1.0, 1.0), (1.05, 1.02), (1.1, 1.0), (0.95, 1.03)]
    ax.scatter(*zip(*points))
    ax.set_xlim(0.5, 1.5)
    ax.set_ylim(0.5, 1.5)
    fig.canvas.draw()
    notes = report.place_labels(ax, [(x, y, f"point {i}", {}) for i, (x, y) in enumerate(points)], points)
    renderer = fig.canvas.get_renderer()
    markers = ax.transData.transform(points)
    for note in notes:
        box = note.get_window_extent(renderer)
        assert not any(box.x0 - 6 < px < box.x1 + 6 and box.y0 - 6 < py < box.y1 + 6 for px, py in markers), note.get_text()
    plt.close(fig)
