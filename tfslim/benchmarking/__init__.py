"""Latency and accuracy of converted models, measured with the LiteRT interpreter."""

from tfslim.benchmark.benchmark import benchmark, evaluate, predict

__all__ = ["benchmark", "evaluate", "predict"]
