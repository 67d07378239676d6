"""Latency and accuracy of converted models, measured with the LiteRT interpreter."""

from tfslim.benchmarking.benchmark import benchmark, evaluate, predict
from tfslim.benchmarking.footprint import Footprint
from tfslim.benchmarking.measure import measure
from tfslim.benchmarking.report import (
    Column,
    footprint_columns,
    format_table,
    write_report_files,
)

__all__ = [
    "Column",
    "Footprint",
    "benchmark",
    "evaluate",
    "footprint_columns",
    "format_table",
    "measure",
    "predict",
    "write_report_files",
]
