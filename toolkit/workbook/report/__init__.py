"""Results: one record per technique, a comparison table, the size/latency/accuracy chart and the report.

- ``records``    ``Result``, the technique registry, ``record`` and ``load_results``
- ``table``      the comparison table against each chapter's baselines, accuracy intervals, Pareto fronts
- ``chart``      the trade-off chart
- ``write``      ``build/report.md`` from every record and claim
- ``roundtrip``  ``measure_technique`` (size, latencies, accuracy the workbook's way) and ``RoundTrips``
"""

from toolkit.workbook.report.chart import place_labels, tradeoff_chart
from toolkit.workbook.report.records import TECHNIQUES, Result, check_technique, load_results, record, register_technique
from toolkit.workbook.report.roundtrip import RoundTrips, measure_technique
from toolkit.workbook.report.table import accuracy_with_interval, best_tradeoffs, comparison_table, one_per_technique, pareto_front
from toolkit.workbook.report.write import write_report

__all__ = ["TECHNIQUES", "Result", "RoundTrips", "accuracy_with_interval", "best_tradeoffs", "check_technique",
           "comparison_table", "load_results", "measure_technique", "one_per_technique", "pareto_front", "place_labels",
           "record", "register_technique", "tradeoff_chart", "write_report"]
