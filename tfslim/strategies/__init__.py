"""The survey's two strategies in one call each, measured on the target.

`shrink` (shrink-and-improve) compresses a trained model with every lever tfslim has and
recovers quality by distillation and quantization-aware training; each candidate is
converted, measured with the real interpreters and judged against a `Budget`. The
`StrategyResult` holds the candidates, the Pareto front per footprint figure and the best
candidate that fits, with `report.md`, `report.json` and `front.png` beside the models.
`grow_improve_shrink` grows a model, trains it and shrinks it back to the baseline's
measured footprint, to compare quality at equal cost.
"""

from tfslim.strategies.candidates import TECHNIQUES, CandidateSpec
from tfslim.strategies.grow import grow_improve_shrink, widen
from tfslim.strategies.result import Candidate, StrategyResult
from tfslim.strategies.shrink import shrink

__all__ = [
    "TECHNIQUES",
    "Candidate",
    "CandidateSpec",
    "StrategyResult",
    "grow_improve_shrink",
    "shrink",
    "widen",
]
