"""How many channels `ChannelPruning` removes from each group, for a fraction or a footprint.

A fraction prunes every group by the same share. A footprint (`max_params`, `max_macs`,
`max_int8_bytes`, `max_latency_ms`) is met either by the smallest such uniform share
(`_plan_fraction`), or by pruning each group by its own share (`allocate_channels`): channels
are removed a few at a time from whichever group gives up the least importance per unit of
footprint saved, until every limit is met. The figures are counted from the model's structure
(`ChannelGraph.cost`), not measured.
"""

from __future__ import annotations

import numpy as np

from tfslim.pruning.channel_graph import ChannelGraph

# Steps per group of the allocation: finer steps cost planning time (each candidate step is a
# count of the whole model) and change the plan little.
_STEPS_PER_GROUP = 16


def _n_pruned(fraction: float, size: int, multiple: int = 1) -> int:
    """Channels of a group of `size` to prune at `fraction`; the rest a multiple of `multiple`.

    The kept count is rounded to the nearest multiple (half up), at least one multiple and at
    most `size`; a fraction that prunes nothing, or a group of at most `multiple` channels,
    keeps the whole group.
    """
    n_pruned = min(int(round(fraction * size)), size - 1)
    if multiple == 1 or n_pruned == 0:
        return n_pruned
    if size <= multiple:
        return 0
    kept = multiple * int(np.floor((size - n_pruned) / multiple + 0.5))
    return size - min(size, max(multiple, kept))


def kept_counts(groups, fraction: float, multiple: int = 1) -> dict:
    """{group id: channels kept} of `groups` when `ChannelPruning` prunes `fraction` of
    each, kept counts rounded to multiples of `multiple` (see `_n_pruned`)."""
    return {g.id: g.size - _n_pruned(fraction, g.size, multiple) for g in groups}


def _check_limit(name: str, value) -> int | float:
    """A footprint limit: an int >= 1 (absolute) or a float in (0, 1) (of the unpruned model)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(
            f"Invalid type for argument `{name}`. Expected an int (a count) or a float in "
            f"(0, 1) (a fraction of the unpruned model). Received: {name}={value!r} of type "
            f"{type(value).__name__}"
        )
    if isinstance(value, int | np.integer):
        if value >= 1:
            return int(value)
    elif 0 < value < 1:
        return float(value)
    raise ValueError(
        f"Invalid value for argument `{name}`. Expected an int >= 1 (a count) or a float in "
        f"(0, 1) (a fraction of the unpruned model). Received: {name}={value!r}"
    )


def _figure(figure: str, value) -> str:
    return f"{value:.3f} ms" if figure == "latency_ms" else f"{value:.0f}"


def _check_latency_target(max_latency_ms, target):
    """The target of a latency limit: an object with `estimate_latency_ms`, or None."""
    if max_latency_ms is None:
        if target is not None:
            raise ValueError(
                "Argument `target` of ChannelPruning is only used with `max_latency_ms`. "
                f"Received: target={target!r}, max_latency_ms=None"
            )
        return None
    if (
        isinstance(max_latency_ms, bool)
        or not isinstance(max_latency_ms, int | float | np.integer | np.floating)
        or not np.isfinite(max_latency_ms)
        or max_latency_ms <= 0
    ):
        raise ValueError(
            "Invalid value for argument `max_latency_ms`. Expected a number of milliseconds "
            f"> 0. Received: max_latency_ms={max_latency_ms!r}"
        )
    if not callable(getattr(target, "estimate_latency_ms", None)):
        # The pruning stage does not import the converter stage's target registry: the caller
        # hands over the target object.
        raise TypeError(
            "Invalid value for argument `target`: `max_latency_ms` needs the board whose "
            "latency is estimated, as a `tfslim.Target` (e.g. "
            "`target=tfslim.get_target('nano33ble')`). Received: "
            f"target={target!r} of type {type(target).__name__}"
        )
    if target.estimate_latency_ms(1, ops=[]) is None:
        name = getattr(target, "name", target)
        raise ValueError(
            f"Invalid value for argument `target`: target '{name}' has no latency estimate "
            "(no clock or cost model); `max_latency_ms` needs a microcontroller target. "
            f"Received: target={name!r}"
        )
    return target


def _plan_fraction(
    graph: ChannelGraph, groups: list, limits: dict, target=None, multiple: int = 1
) -> float:
    """Smallest fraction of every group's channels whose pruned model meets `limits`."""
    figures, bounds, meets = _bounds(graph, groups, limits, target, multiple)
    if meets(figures()):
        return 0.0

    def cost(fraction):
        return figures(kept_counts(groups, fraction, multiple))

    low, high = 0.0, 1.0  # cost(low) misses, cost(high) meets
    for _ in range(40):
        middle = (low + high) / 2
        if meets(cost(middle)):
            high = middle
        else:
            low = middle
    return high


def plan_rounded_fraction(
    graph: ChannelGraph, groups: list, limits: dict, target=None, multiple: int = 1
) -> tuple[float, dict[int, int]]:
    """(fraction, group id -> channels to prune) of a uniform footprint plan in multiples.

    The smallest uniform fraction (`_plan_fraction`) rounds every group to its nearest
    multiple, and groups of one size cross a rounding step at the same fraction: MobileNetV2
    (alpha 0.35) has up to four expansion groups of each width, so with `multiple=8` and
    `max_params=0.3, max_macs=0.3` the plan fell from above the limits to 0.21x parameters
    and 0.28x MACs (59.3% of the channels pruned, against 51.6% unrounded). The slack is
    given back: groups rounded below their share (1 - fraction of their size), the furthest
    below first, each keep the multiple above it while the limits still hold. Every group
    stays at one of the two multiples around its share.
    """
    fraction = _plan_fraction(graph, groups, limits, target, multiple)
    pruned = {g.id: _n_pruned(fraction, g.size, multiple) for g in groups}
    if multiple == 1 or fraction == 0.0:
        return fraction, pruned
    figures, _, meets = _bounds(graph, groups, limits, target, multiple)

    def kept(plan):
        return {g.id: g.size - plan[g.id] for g in groups}

    share = {g.id: (1 - fraction) * g.size for g in groups}
    below = sorted(
        (g for g in groups if g.size - pruned[g.id] < share[g.id]),
        key=lambda g: ((g.size - pruned[g.id]) / share[g.id], g.id),
    )
    for group in below:
        up = min(group.size, multiple * int(np.ceil(share[group.id] / multiple)))
        trial = {**pruned, group.id: group.size - up}
        if trial[group.id] < pruned[group.id] and meets(figures(kept(trial))):
            pruned = trial
    return fraction, pruned


def _bounds(graph: ChannelGraph, groups: list, limits: dict, target, multiple: int):
    """(figures, bounds, meets) of a footprint; raises when the fewest channels miss it."""
    figures = _figures_counter(graph, limits, target)
    full = figures()
    needs_size = [f"max_{f}" for f in ("macs", "latency_ms") if f in limits]
    if needs_size and full["macs"] is None:
        argument = needs_size[0]
        raise ValueError(
            f"Invalid value for argument `{argument}`: the MACs of model "
            f"'{graph.model.name}' depend on its input size, which is not fixed. Build it with "
            f"a fixed input shape or give `max_params`. Received: {argument}="
            f"{limits[argument.removeprefix('max_')]!r}"
        )
    bounds = {
        figure: limit * full[figure]
        if isinstance(limit, float) and figure != "latency_ms"
        else limit
        for figure, limit in limits.items()
    }

    def meets(counted):
        return all(counted[figure] <= bound for figure, bound in bounds.items())

    if meets(full):
        return figures, bounds, meets
    smallest = figures(kept_counts(groups, 1.0, multiple))
    if not meets(smallest):
        fewest = "one channel" if multiple == 1 else f"{multiple} channels (channel_multiple)"
        missed = ", ".join(
            f"max_{figure}={limits[figure]!r} ({_figure(figure, bound)}; unpruned "
            f"{_figure(figure, full[figure])}, every "
            f"prunable group at {fewest} {_figure(figure, smallest[figure])})"
            for figure, bound in bounds.items()
            if smallest[figure] > bound
        )
        raise ValueError(
            f"Invalid footprint for model '{graph.model.name}': channel pruning cannot reach "
            f"{missed}. Expected a limit at or above the figure of the fewest channels (the "
            "frozen channels, such as the outputs, and the layers outside any group stay)."
        )
    return figures, bounds, meets


def _figures_counter(graph: ChannelGraph, limits: dict, target=None):
    """A function of kept channels (None: all) to the figures `limits` names, and the bounds."""

    def figures(kept=None):
        counted = graph.cost(kept)
        if "latency_ms" in limits and counted["macs"] is not None:
            estimate = target.estimate_latency_ms(counted["macs"], ops=counted["ops"])
            counted["latency_ms"] = estimate["value_ms"]
        return counted

    return figures


def allocate_channels(
    graph: ChannelGraph,
    groups: list,
    scores: dict,
    limits: dict,
    target=None,
    multiple: int = 1,
) -> dict[int, int]:
    """Channels to prune per group (group id -> count) so the pruned model meets `limits`.

    Greedy: each round, every group offers its next step (its lowest-scoring kept channels,
    `size / 16` of them in multiples of `multiple`; the first step of a group whose size is no
    multiple rounds it down to one), and the step with the least importance lost per unit of
    footprint saved is taken, until every limit is met. A group's importance is the share of its
    channels' total score it keeps, and the loss of a step is the drop of its logarithm: taking
    the same share of any group's channels costs alike, each further step of a group costs more
    than its last, and the plan maximizes the product of the groups' kept shares. So groups
    whose channels are unequal give up their weak ones first, and a group that carries more of
    a limited figure (the MACs of a wide early layer, the parameters of a wide late one) gives
    up a larger share. The footprint saved is the sum, over the limits not yet met, of each
    figure's saving as a share of the unpruned model's. Groups keep at least `multiple`
    channels (one without rounding); a group of at most `multiple` channels stays whole, as
    with a uniform fraction.

    Args:
        graph: the model's `ChannelGraph`.
        groups: the prunable groups (`Space`s) to allocate among.
        scores: group id -> array of per-channel importance (see `channel_scores`).
        limits: figure -> limit, as `ChannelPruning` checks them.
        target: the board of a `latency_ms` limit.
        multiple: kept channels are rounded to multiples of it.

    Returns:
        A dict of group id to the number of channels to prune.
    """
    figures, bounds, meets = _bounds(graph, groups, limits, target, multiple)
    full = figures()
    kept = {g.id: g.size for g in groups}
    ranked = {}
    for group in groups:
        score = np.clip(np.asarray(scores[group.id], dtype="float64"), 0.0, None)
        total = score.sum()
        share = score / total if total > 0 else np.full(group.size, 1.0 / group.size)
        ranked[group.id] = np.sort(share) + 1e-9  # a kept share of 0 costs everything
    floor = {g.id: g.size if multiple > 1 and g.size <= multiple else multiple for g in groups}
    step = {
        g.id: multiple * max(1, int(round(g.size / (_STEPS_PER_GROUP * multiple)))) for g in groups
    }
    current = full
    while not meets(current):
        weights = {
            figure: 1.0 / full[figure]
            for figure, bound in bounds.items()
            if current[figure] > bound and full[figure] > 0
        }
        best = None
        for group in groups:
            now = kept[group.id]
            after = now - now % multiple if now % multiple else now - step[group.id]
            after = max(after, floor[group.id])
            if after >= now:
                continue
            counted = figures({**kept, group.id: after})
            saving = sum(w * (current[f] - counted[f]) for f, w in weights.items())
            if saving <= 0:
                continue
            share = ranked[group.id]
            lost = np.log(share[-now:].sum()) - np.log(share[-after:].sum())
            if best is None or lost / saving < best[0]:
                best = (lost / saving, group.id, after, counted)
        if best is None:
            break  # every group at its floor, which `_bounds` checked meets the limits
        _, chosen, after, current = best
        kept[chosen] = after
    return {g.id: g.size - kept[g.id] for g in groups}
