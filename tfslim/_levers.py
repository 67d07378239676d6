"""The levers `tfslim.shrink(techniques=...)` accepts, and their checks.

This module imports neither TensorFlow nor Keras (only `tfslim._checks`), so the
`tfslim optimize` command refuses an unknown `--techniques` name or a bad `--clusters`
in well under a second, before the library loads. It sits outside `tfslim.strategies`
because importing any module of that package runs its `__init__`, which loads Keras;
`tfslim.strategies.candidates` re-exports every name here.
"""

from tfslim._checks import check_int, invalid_type, invalid_value

__all__ = [
    "DEFAULT_TECHNIQUES",
    "MAX_CLUSTERS",
    "TECHNIQUES",
    "check_clusters",
    "check_techniques",
    "unknown_techniques",
]

# Lever name -> what it does; the names `techniques=` accepts.
TECHNIQUES = {
    "qat": "quantization-aware fine-tuning with distillation from the teacher",
    "prune": "unstructured magnitude pruning to `sparsity`",
    "m_by_n": "m:n structured sparsity (2 of every 4 weights zero)",
    "channels": "narrower models: channel pruning to each of `widths`, then stripped",
    "cluster": (
        "weight clustering to `clusters` values per kernel, then clustering-preserving QAT; "
        "LUT-compressed for TFLite Micro on microcontroller targets"
    ),
}
# TFLite Micro's LUT compression stores at most 7-bit indices (128 values per table).
MAX_CLUSTERS = 128
DEFAULT_TECHNIQUES = ("qat", "prune", "channels")


def unknown_techniques(names) -> list:
    """The entries of `names` that are not lever names, in their order."""
    return [name for name in names if name not in TECHNIQUES]


def check_techniques(techniques) -> tuple:
    """`techniques` as a tuple of distinct lever names, in the order given.

    Raises:
        TypeError: if `techniques` is not a list or tuple (a single string is refused).
        ValueError: if it is empty or holds a name not in `TECHNIQUES`.
    """
    if isinstance(techniques, str) or not isinstance(techniques, list | tuple):
        raise invalid_type("techniques", f"a list of names from {list(TECHNIQUES)}", techniques)
    if unknown_techniques(techniques) or not techniques:
        raise invalid_value(
            "techniques", f"a non-empty list of names from {list(TECHNIQUES)}", techniques
        )
    return tuple(dict.fromkeys(techniques))


def check_clusters(clusters) -> int:
    """`clusters` as an int in [2, `MAX_CLUSTERS`] (see `tfslim._checks.check_int`)."""
    return check_int("clusters", clusters, minimum=2, maximum=MAX_CLUSTERS)
