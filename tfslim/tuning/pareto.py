"""Pareto fronts: the trials no other trial beats on every objective at once."""

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["pareto_front"]


def pareto_front(
    points: Sequence[Mapping[str, float]],
    *,
    maximize: Sequence[str] = ("quality",),
    minimize: Sequence[str] = (),
) -> list[int]:
    """Returns the indices of the points that no other point dominates.

    Point `a` dominates `b` when `a` is at least as good on every objective and strictly
    better on one. Identical points do not dominate each other, so all copies stay.

    Args:
        points: sequence of mappings from objective name to a number.
        maximize: sequence of str. Objectives where larger is better. Defaults to
            `("quality",)`.
        minimize: sequence of str. Objectives where smaller is better. Defaults to `()`.

    Returns:
        Sorted list of indices into `points`.

    Raises:
        ValueError: if no objective is given, or a point lacks one.

    Example:

    >>> pts = [{"quality": 0.9, "flash": 30}, {"quality": 0.8, "flash": 10},
    ...        {"quality": 0.7, "flash": 20}]
    >>> pareto_front(pts, maximize=["quality"], minimize=["flash"])
    [0, 1]
    """
    maximize, minimize = list(maximize), list(minimize)
    if not maximize and not minimize:
        raise ValueError(
            "Invalid value for arguments `maximize` and `minimize`. Expected at least one "
            f"objective name. Received: maximize={maximize}, minimize={minimize}"
        )
    if not points:
        return []
    names = maximize + minimize
    for i, point in enumerate(points):
        missing = [n for n in names if n not in point or point[n] is None]
        if missing:
            raise ValueError(
                f"Invalid value for argument `points`. Expected every point to have the "
                f"objectives {names}. Received: points[{i}]={dict(point)} (missing {missing})"
            )
    # Negate minimized objectives so that larger is better everywhere.
    signs = np.array([1.0] * len(maximize) + [-1.0] * len(minimize))
    values = np.array([[float(p[n]) for n in names] for p in points]) * signs
    geq = np.all(values[:, None, :] >= values[None, :, :], axis=2)  # geq[j, i]: j >= i
    gt = np.any(values[:, None, :] > values[None, :, :], axis=2)
    dominated = np.any(geq & gt, axis=0)
    return [int(i) for i in np.flatnonzero(~dominated)]
