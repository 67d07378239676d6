"""Latency and accuracy of converted models, measured with the LiteRT interpreter."""

from tfslim.benchmarking.benchmark import benchmark, evaluate, predict

__all__ = ["benchmark", "evaluate", "predict"]
