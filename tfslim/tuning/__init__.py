"""Footprint-aware KerasTuner search: quality under the budget a device actually has.

`FootprintTuner` trains, converts for a target, and records each trial's `tfslim.Footprint`:
int8 quality with the measured flash, tensor arena, host LiteRT latency and the estimated MCU
latency. `Budget`
limits are hard constraints (over-budget trials are kept as infeasible), `pareto_front`
finds the trade-offs, and `write_report` writes them as a table, JSON and a plot.
"""

from tfslim.tuning.budget import Budget
from tfslim.tuning.builtin import build_digits_search_model, run_builtin_search
from tfslim.tuning.oracle import BudgetAwareRandomSearchOracle, estimate_footprint
from tfslim.tuning.pareto import pareto_front
from tfslim.tuning.report import write_report
from tfslim.tuning.tuner import FOOTPRINT_METRICS, FootprintTuner, front_records

__all__ = [
    "FOOTPRINT_METRICS",
    "Budget",
    "BudgetAwareRandomSearchOracle",
    "FootprintTuner",
    "build_digits_search_model",
    "estimate_footprint",
    "front_records",
    "pareto_front",
    "run_builtin_search",
    "write_report",
]
