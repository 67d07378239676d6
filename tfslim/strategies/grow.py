"""`tfslim.grow_improve_shrink`: more capacity to learn with, then back to the old footprint.

The survey's recipe for a quality-sensitive model (Menghani 2021, section 4): grow the
model (wider, or deeper when `build_model` takes a `depth`), train it, then shrink it back
with the same levers as `tfslim.shrink` (channel pruning to the baseline's footprint,
distillation from the grown model, QAT) until its footprint measured on the target is no
larger than the baseline's, and compare the two at equal footprint.
"""

import inspect
import os
from collections.abc import Mapping

import keras

from tfslim import _keras_graph
from tfslim._checks import check_float, check_int, invalid_type, invalid_value
from tfslim.strategies import candidates as _candidates
from tfslim.strategies import distributed
from tfslim.strategies.run import Run, fingerprint
from tfslim.strategies.shrink import (
    check_data,
    check_directory,
    check_model,
    check_target_and_budget,
)
from tfslim.tuning.budget import Budget

__all__ = ["grow_improve_shrink", "widen"]

_MAX_SHRINKS = 3
_GROWTH_KEYS = ("width_multiplier", "depth")


def widen(model: keras.Model, factor: float) -> keras.Model:
    """A fresh (untrained) copy of `model` with `factor` times the filters and units.

    Every layer with `filters` or `units` grows, except the model's output layers, so
    the outputs keep their shape. Works on Sequential and Functional models.

    Args:
        model: keras.Model. The model to grow.
        factor: float >= 1. Width multiplier.

    Returns:
        An uncompiled keras.Model.
    """
    check_model("model", model)
    factor = check_float("factor", factor, minimum=1)
    outputs = {_keras_graph.producer(t).name for t in model.outputs}

    def clone(layer):
        config = layer.get_config()
        if layer.name not in outputs:
            for key in ("filters", "units"):
                if isinstance(config.get(key), int):
                    config[key] = max(1, round(config[key] * factor))
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def grow_improve_shrink(
    build_model,
    train_data: tuple,
    validation_data: tuple,
    *,
    target="mcu",
    footprint_of: keras.Model | None = None,
    growth=(1.5, 2.0),
    budget: Budget | None = None,
    epochs: int = 10,
    shrink_epochs: int = 3,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    max_candidates: int | None = None,
    directory="tfslim_grow",
    overwrite: bool = False,
    calibration_samples: int = 200,
    latency_runs: int = 20,
    seed: int = 0,
    log=None,
):
    """Grows a classifier, trains it, shrinks it back to the baseline's footprint.

    Candidates: the baseline as given (post-training int8); the baseline distilled from
    itself with QAT (`shrink_epochs`, the same improvement without growth, for a fair
    comparison); then for each entry of `growth` the grown model trained for `epochs`
    (`grow150`, or `grow100_depth3` for `{"depth": 3}`), and that model channel-pruned
    back, distilled from itself-grown with QAT (`grow150_width67`). A model grown only in
    width is pruned to `1 / width_multiplier` of its channels; one grown in depth to the
    widest uniform fraction of its channels whose estimated int8 weights, plus the grown
    model's measured non-weight bytes (ops, quantization parameters), fit the flash
    budget. A shrunk model still over the budget is pruned further (narrower by its
    measured excess over the budget, at least 5%; up to 3 tries); a narrower width that
    keeps the same channels in every group as an earlier try (small groups round alike)
    is not made again, and the log line and `result.notes` say so. The budget is the
    baseline's measured int8 flash and TFLite Micro arena unless `budget` is given;
    `result.notes` gives each grown model's quality at that footprint against the
    baseline's.

    Growth in depth: an entry `{"width_multiplier": w, "depth": d}` builds
    `build_model(width_multiplier=w, depth=d)`. `build_model` must then be a callable
    whose `depth` parameter has an int default, the baseline's depth (the baseline is
    `build_model(width_multiplier=1.0)`); `d` is at least that default, and the entry must
    grow something (`w > 1` or `d` above the default). A `keras.Model` can only be widened.

    Args:
        build_model: callable or keras.Model. `build_model(width_multiplier=...)`
            returns an uncompiled model (e.g. a `tfslim.architectures` builder wrapped to
            take a multiplier), or a model grown with `widen`. A callable that also takes
            `depth=` (with an int default) can be grown in depth.
        train_data: tuple `(x, y)` of NumPy arrays (integer labels).
        validation_data: tuple `(x, y)` of NumPy arrays. Quality is measured on it.
        target: str or Target. Where the model runs. Defaults to `"mcu"`.
        footprint_of: keras.Model or None. The trained baseline whose footprint the grown
            models must meet; None: `build_model` itself when it is a model, else
            `build_model(width_multiplier=1.0)` trained for `epochs`. Defaults to `None`.
        growth: sequence of float > 1 (width multipliers) or mappings with keys
            `width_multiplier` (float >= 1, default 1.0) and `depth` (int), distinct,
            e.g. `[1.5, 2.0, {"depth": 3}]`. Defaults to `(1.5, 2.0)`.
        budget: Budget or None. None: the baseline's flash and arena. Defaults to `None`.
        epochs: int. Training epochs of a grown model. Defaults to `10`.
        shrink_epochs: int. Epochs of distillation + QAT after shrinking. Defaults to `3`.
        batch_size: int. Defaults to `32`.
        learning_rate: float. Adam learning rate. Defaults to `1e-3`.
        max_candidates: int or None. Make only the first this many. Defaults to `None`.
        directory: str or path-like. Models, `manifest.json` and the report (resumable,
            as for `tfslim.shrink`). Defaults to `"tfslim_grow"`.
        overwrite: bool. Recompute an earlier or different run. Defaults to `False`.
        calibration_samples: int. Inputs calibrating post-training int8. Defaults to `200`.
        latency_runs: int. Timed LiteRT runs per candidate. Defaults to `20`.
        seed: int. Keras seed set before each candidate. Defaults to `0`.
        log: callable or None. Called with one line per finished candidate, and one per
            shrink step not made as a repeat. Defaults to `None`.

    Returns:
        A `tfslim.strategies.StrategyResult` (strategy `"grow"`).

    Raises:
        TypeError, ValueError: for an invalid argument, checked before any training.
        FileExistsError: as for `tfslim.shrink`.

    Example:

    >>> def build(width_multiplier=1.0, depth=1):  # doctest: +SKIP
    ...     layers = [keras.Input((8, 8, 1))]
    ...     for _ in range(depth):
    ...         layers.append(keras.layers.Conv2D(round(8 * width_multiplier), 3,
    ...                                           padding="same", activation="relu"))
    ...     layers += [keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")]
    ...     return keras.Sequential(layers)
    >>> result = tfslim.grow_improve_shrink(build, (x, y), (x_val, y_val),
    ...     target="nano33ble", growth=[2.0, {"depth": 2}])  # doctest: +SKIP
    >>> [c.name for c in result.candidates]  # doctest: +SKIP
    ['original', 'original_qat', 'grow200', 'grow200_width50', 'grow100_depth2', ...]
    """
    settings = dict(
        epochs=check_int("epochs", epochs),
        shrink_epochs=check_int("shrink_epochs", shrink_epochs),
        batch_size=check_int("batch_size", batch_size),
        learning_rate=check_float("learning_rate", learning_rate, minimum=0, min_inclusive=False),
        calibration_samples=check_int("calibration_samples", calibration_samples),
        latency_runs=check_int("latency_runs", latency_runs, minimum=0),
        seed=check_int("seed", seed, minimum=0),
        growth=_check_growth(growth, build_model),
    )
    limit = None if max_candidates is None else check_int("max_candidates", max_candidates)
    train_data = check_data("train_data", train_data)
    validation_data = check_data("validation_data", validation_data)
    if isinstance(build_model, keras.Model):
        grow = lambda factor, depth=None: widen(build_model, factor)  # noqa: E731
        footprint_of = build_model if footprint_of is None else footprint_of
    else:

        def grow(factor, depth=None):
            extra = {} if depth is None else {"depth": depth}
            return build_model(width_multiplier=factor, **extra)

    if footprint_of is not None:
        check_model("footprint_of", footprint_of)
    if log is not None and not callable(log):
        raise invalid_type("log", "a callable or None", log)
    if distributed.role() is not None:
        raise ValueError(
            "Invalid environment for grow_improve_shrink. It runs in one process: each shrunk "
            "candidate starts from its grown one and is held to the baseline's measured "
            "footprint, so its candidates are not independent trials for KerasTuner's "
            "distributed mode; unset KERASTUNER_ORACLE_IP. Received: "
            f"KERASTUNER_TUNER_ID={os.environ.get('KERASTUNER_TUNER_ID')!r}"
        )
    target, given = check_target_and_budget(target, budget)
    directory = check_directory(directory)
    x, y = train_data
    if footprint_of is None:
        keras.utils.set_random_seed(seed)
        footprint_of = _fit(grow(1.0), x, y, settings)
    run = Run(directory, "grow", target, given, overwrite, log)
    run.open(fingerprint(footprint_of, None, train_data, validation_data, target, settings))

    made = 0

    def add(spec, make):
        nonlocal made
        if limit is not None and made >= limit:
            return None
        made += 1
        return run.candidate(spec, make, train_data, validation_data, settings)

    base = add(_candidates.CandidateSpec("original", qat=False, train=False), lambda: footprint_of)
    if budget is None:
        run.rejudge(
            Budget(
                max_flash_bytes=base.footprint.flash_bytes,
                max_arena_bytes=base.footprint.arena_bytes,
            )
        )
    fair = _candidates.CandidateSpec("original_qat")
    add(fair, lambda: _improve(fair, footprint_of, footprint_of, x, y, settings))
    for entry in settings["growth"]:
        factor, depth = entry["width_multiplier"], entry["depth"]
        tag = f"grow{round(100 * factor)}" + ("" if depth is None else f"_depth{depth}")
        grown_spec = _candidates.CandidateSpec(tag, qat=False, growth=factor, depth=depth)
        cache = {}

        def grown(factor=factor, depth=depth, cache=cache):
            if "model" not in cache:
                keras.utils.set_random_seed(seed)
                cache["model"] = _fit(grow(factor, depth), x, y, settings)
            return cache["model"]

        grown_candidate = add(grown_spec, grown)
        if grown_candidate is None:
            break
        # A resumed run reads the grown model back instead of training it again.
        model = cache.get("model") or grown_candidate.load_model()
        if depth is None:
            width = 1.0 / factor
        else:
            flash = run.budget.max_flash_bytes or base.footprint.flash_bytes
            width = matching_width(model, grown_candidate.footprint.flash_bytes, flash)
        made_with = {}  # Channels kept per group -> the shrunk candidate that keeps them.
        for _ in range(_MAX_SHRINKS):
            spec = _candidates.CandidateSpec(
                f"{tag}_width{round(100 * width)}", width=width, growth=factor, depth=depth
            )
            kept = kept_channels(model, width)
            if kept in made_with:
                # Small groups round to the same counts at the narrower width: the same
                # architecture again, trained the same way, so still over the footprint.
                line = (
                    f"{spec.name}: not made, it keeps the same channels as {made_with[kept]} "
                    f"({', '.join(map(str, kept))} per group)"
                )
                run.log(line)
                run.notes.append(line)
                width *= 0.8
                continue

            def shrunk(spec=spec, model=model):
                return _improve(spec, model, model, x, y, settings)

            candidate = add(spec, shrunk)
            if candidate is None or candidate.feasible:
                break
            made_with[kept] = spec.name
            width = next_width(model, width, run.budget.overshoot(candidate.footprint))
    _notes(run)
    return run.finish("original")


def matching_width(model, flash_bytes: int, max_flash_bytes: int) -> float:
    """The widest fraction of `model`'s channels (the same in every prunable group, in
    steps of 0.01) whose int8 file is estimated to fit `max_flash_bytes`; 1.0 if `model`
    fits as it is (its shrink-back then only distils it with QAT).

    The estimate is the pruned model's int8 weights as `ChannelPruning` counts them
    (`ChannelGraph.cost`: one byte per kernel weight, four per bias) plus the bytes of
    `model`'s measured file (`flash_bytes`) that are not weights: ops, tensors and
    quantization parameters, which pruning does not grow. 0.01 if nothing fits.
    """
    from tfslim.pruning.channel_graph import ChannelGraph

    graph = ChannelGraph(model)
    groups = graph.groups()
    overhead = max(0, flash_bytes - graph.cost()["int8_bytes"])
    for percent in range(100, 0, -1):
        kept = _kept(groups, percent / 100)
        if graph.cost(kept)["int8_bytes"] + overhead <= max_flash_bytes:
            return percent / 100
    return 0.01


def next_width(model, width: float, overshoot: float) -> float:
    """The width of the next shrink step after one `overshoot` over the budget (its
    largest relative excess, `Budget.overshoot`).

    Narrower by the excess, as if every limited figure grew linearly with the width
    (arena and latency nearly do; flash grows faster, so this errs on the narrow side),
    by at least 5% and at most half, and then to the first width that keeps fewer
    channels in some group than `width` does. A candidate 3% over its arena limit is
    retried 5% narrower, not a fixed 20% (which gave up quality for footprint it did not
    need to lose); one 40% over, 29% narrower.
    """
    from tfslim.pruning.channel_graph import ChannelGraph

    groups = ChannelGraph(model).groups()  # Once: each step below only recounts channels.
    factor = min(0.95, max(0.5, 1.0 / (1.0 + overshoot)))
    narrower = round(width * factor, 2)
    kept = _kept(groups, width)
    while narrower > 0.01 and _kept(groups, narrower) == kept:
        narrower = round(narrower - 0.01, 2)
    return max(narrower, 0.01)


def kept_channels(model, width: float) -> tuple:
    """The channels a shrunk candidate of `width` keeps in each prunable group of `model`,
    in group order; two widths with the same counts make the same architecture."""
    from tfslim.pruning.channel_graph import ChannelGraph

    return tuple(_kept(ChannelGraph(model).groups(), width).values())


def _kept(groups, width: float) -> dict:
    """{group id: channels kept} as `ChannelPruning(1 - width)` prunes them."""
    from tfslim.pruning.channel_plan import kept_counts

    return kept_counts(groups, 1 - width)


def _depth_default(build_model):
    """The int default of `build_model`'s `depth` parameter, or why it cannot grow in depth."""
    if isinstance(build_model, keras.Model):
        return None, "a keras.Model can only be widened; pass a callable build_model"
    try:
        parameter = inspect.signature(build_model).parameters.get("depth")
    except (TypeError, ValueError):
        return None, "the signature of build_model cannot be read"
    if parameter is None:
        return None, "build_model takes no `depth` argument"
    default = parameter.default
    if isinstance(default, bool) or not isinstance(default, int):
        return None, (
            "the `depth` argument of build_model has no int default (the baseline's depth); "
            f"its default is {default if default is not parameter.empty else 'missing'}"
        )
    return default, None


def _check_build_model(build_model) -> None:
    if isinstance(build_model, keras.Model):
        return
    if not callable(build_model):
        raise invalid_type(
            "build_model", "a callable build_model(width_multiplier=...)", build_model
        )
    try:
        parameters = inspect.signature(build_model).parameters
    except (TypeError, ValueError):
        return  # A builtin or C callable: the call itself will tell.
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if "width_multiplier" not in parameters and not takes_any:
        raise TypeError(
            "Invalid value for argument `build_model`. Expected a callable taking the keyword "
            "`width_multiplier` (build_model(width_multiplier=...)). Received: build_model="
            f"{getattr(build_model, '__name__', build_model)!r} with parameters "
            f"{list(parameters)}"
        )


def _check_growth(growth, build_model) -> list[dict]:
    """`growth` as `{"width_multiplier": float, "depth": int or None}` entries, where None
    is the baseline's depth."""
    _check_build_model(build_model)
    expected = (
        'a non-empty list of width multipliers (floats > 1) and/or mappings such as {"depth": '
        '3} or {"width_multiplier": 1.5, "depth": 3}'
    )
    if isinstance(growth, str) or not isinstance(growth, list | tuple) or not growth:
        raise invalid_type("growth", expected, growth)
    entries = []
    for i, g in enumerate(growth):
        name = f"growth[{i}]"
        if not isinstance(g, Mapping):
            factor = check_float(name, g, minimum=1, min_inclusive=False)
            entry = {"width_multiplier": factor, "depth": None}
        else:
            entry = _check_growth_mapping(name, g, build_model)
        if entry in entries:
            raise invalid_value("growth", "distinct entries (width multiplier and depth)", growth)
        entries.append(entry)
    return entries


def _check_growth_mapping(name: str, g: Mapping, build_model) -> dict:
    unknown = [k for k in g if k not in _GROWTH_KEYS]
    if unknown or not g:
        raise invalid_value(name, f"a mapping with keys from {list(_GROWTH_KEYS)}", dict(g))
    factor = check_float(f"{name}['width_multiplier']", g.get("width_multiplier", 1.0), minimum=1)
    depth = g.get("depth")
    if depth is not None:
        default, reason = _depth_default(build_model)
        if reason is not None:
            raise ValueError(
                f"Invalid value for argument `{name}`. Growing depth needs a callable "
                f"build_model(width_multiplier=..., depth=...) whose `depth` has an int "
                f"default; {reason}. Received: {name}={dict(g)!r}"
            )
        depth = check_int(f"{name}['depth']", depth, minimum=default)
        if depth == default:
            depth = None  # The baseline's depth: the same model as no depth at all.
    if factor == 1 and depth is None:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected an entry that grows the model: "
            "width_multiplier > 1 or depth above build_model's default. "
            f"Received: {name}={dict(g)!r}"
        )
    return {"width_multiplier": factor, "depth": depth}


def _fit(model, x, y, settings):
    model.compile(
        keras.optimizers.Adam(settings["learning_rate"]),
        _candidates.classification_loss(model, x),
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=settings["epochs"], batch_size=settings["batch_size"], verbose=0)
    return model


def _improve(spec, model, teacher, x, y, settings):
    """`spec`'s levers on `model`, then distillation from `teacher` + QAT for `shrink_epochs`."""
    return _candidates.train_candidate(
        spec,
        model,
        teacher,
        x,
        y,
        epochs=settings["shrink_epochs"],
        batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"],
    )


def _notes(run) -> None:
    by_name = {c.name: c for c in run.candidates}
    base = by_name.get("original")
    if base is None:
        return
    fair = by_name.get("original_qat")
    for c in run.candidates:
        if not c.name.startswith("grow") or "_width" not in c.name:
            continue
        if not c.feasible:
            run.notes.append(
                f"{c.name}: still over the baseline's footprint ({'; '.join(c.violations)})"
            )
            continue
        gain = 100 * (c.quality - base.quality)
        line = (
            f"{c.name}: quality {c.quality:.4f} at {c.footprint.flash_bytes:,} B flash "
            f"(baseline {base.quality:.4f} at {base.footprint.flash_bytes:,} B): "
            f"{gain:+.2f} points"
        )
        if fair is not None:
            line += f", {100 * (c.quality - fair.quality):+.2f} vs the baseline distilled + QAT"
        run.notes.append(line)
