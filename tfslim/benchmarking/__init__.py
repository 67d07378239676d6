"""Latency and accuracy of converted models, measured with the LiteRT interpreter."""

from tfslim.benchmarking.benchmark import benchmark, evaluate, predict
from tfslim.benchmarking.error_report import LayerRecord, QuantizationReport
from tfslim.benchmarking.footprint import Footprint
from tfslim.benchmarking.measure import measure
from tfslim.benchmarking.quantization_report import quantization_report
from tfslim.benchmarking.report import (
    Column,
    footprint_columns,
    format_table,
    write_report_files,
)

__all__ = [
    "Column",
    "Footprint",
    "LayerRecord",
    "QuantizationReport",
    "benchmark",
    "evaluate",
    "footprint_columns",
    "format_table",
    "measure",
    "predict",
    "quantization_report",
    "write_report_files",
]
