"""Per-layer quantization sensitivity, and the accuracy-aware search built on it.

`tfslim.sensitivity(model, (x, y), target=...)` converts the model to float once,
calibrates it once (`mixed_precision.MixedPrecisionPlan`), then builds one model per layer:
that layer alone int8 in a float model (`mode="quantize_alone"`), or that layer alone at
higher precision in an int8 model (`mode="float_alone"`; float for `mobile`, int16x8 for
boards). Each model runs in LiteRT on the same small validation subset.
"""

import time

import numpy as np

from tfslim._checks import check_int
from tfslim.litert import flatbuffer, micro
from tfslim.litert.calibration import calibration_samples
from tfslim.litert.mixed_precision import (
    MICRO_INT16_OPS,
    MixedPrecisionPlan,
    evaluate,
    resolve_layers,
)
from tfslim.litert.targets import Target, get_target

__all__ = ["SensitivityResult", "sensitivity"]

_MODES = ("quantize_alone", "float_alone")


class SensitivityResult:
    """Layers ranked by how much their quantization matters, most sensitive first.

    Made by `tfslim.sensitivity`; iterating it yields the records.

    Args:
        records: list of dict. The ranked records (see Attributes).
        mode: str. The analysis mode.
        metric_name: str. The metric's name.
        float_metric: float. The float model's metric.
        int8_metric: float. The all-int8 model's metric.
        samples: int. Validation samples used.
        seconds: float. Wall time of the analysis.
        setup_seconds: float or None. Of which the float export and the calibration.

    Attributes:
        records: list of dict. One per layer: `layer`, `ops` (TFLite op names),
            `precision` (of the layer in its model: `"int8"`, `"float"` or `"int16"`),
            `metric` (with that layer alone quantized / alone at higher precision),
            `drop` (float model's metric minus `metric`), `sensitivity` (how much the
            layer matters: the drop its quantization alone causes, or the gain keeping it
            alone at higher precision brings) and `seconds` (its conversion and run).
            Layers that cannot get the higher precision on the target (no TFLite Micro
            int16 kernel) have `metric` None and a `skipped` reason, and rank last.
        mode: str. `"quantize_alone"` or `"float_alone"`.
        metric_name: str. `"accuracy"`, `"neg_mse"` or the metric callable's name.
        float_metric: float. The float model's metric.
        int8_metric: float. The all-int8 model's metric (same calibration).
        samples: int. Validation samples used.
        seconds: float. Wall time of the whole analysis.
        setup_seconds: float or None. Of which the float export and the calibration.
    """

    def __init__(
        self,
        records,
        *,
        mode,
        metric_name,
        float_metric,
        int8_metric,
        samples,
        seconds,
        setup_seconds=None,
    ):
        self.records = records
        self.mode = mode
        self.metric_name = metric_name
        self.float_metric = float_metric
        self.int8_metric = int8_metric
        self.samples = samples
        self.seconds = seconds
        self.setup_seconds = setup_seconds

    def __iter__(self):
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index):
        return self.records[index]

    def table(self) -> str:
        """The ranking as a plain-text table."""
        lines = [
            f"sensitivity ({self.mode}, {self.metric_name} on {self.samples} samples): float "
            f"{self.float_metric:.4f}, all-int8 {self.int8_metric:.4f}, {self.seconds:.1f} s",
            f"{'rank':>4}  {'layer':<32} {'precision':<9} {'metric':>8} {'drop':>8} "
            f"{'sensitivity':>11}",
        ]
        for i, r in enumerate(self.records, 1):
            if r["metric"] is None:
                lines.append(f"{i:>4}  {r['layer']:<32} {'-':<9} skipped: {r['skipped']}")
                continue
            lines.append(
                f"{i:>4}  {r['layer']:<32} {r['precision']:<9} {r['metric']:>8.4f} "
                f"{r['drop']:>8.4f} {r['sensitivity']:>11.4f}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        top = self.records[0]["layer"] if self.records else None
        return (
            f"<SensitivityResult mode={self.mode} layers={len(self.records)} top={top!r} "
            f"seconds={self.seconds:.1f}>"
        )


def sensitivity(
    model,
    validation_data: tuple,
    *,
    target: "str | Target" = "mobile",
    metric=None,
    mode: str = "quantize_alone",
    layers: "list[str] | None" = None,
    calibration_data=None,
    calibration_steps: int = 100,
    samples: int = 256,
) -> SensitivityResult:
    """Ranks layers by the metric drop their int8 quantization causes.

    Args:
        model: A Keras 3 model, a `.keras` path or a SavedModel directory (single input).
        validation_data: tuple. `(x, y)`: labelled samples (NumPy arrays).
        target: str or Target. Sets the higher precision of `"float_alone"`: float for
            `mobile`, int16x8 for microcontroller targets (layers whose ops TFLite Micro
            has no int16 kernel for are skipped). Defaults to `"mobile"`.
        metric: callable or None. `metric(y_true, y_pred) -> float`, higher is better.
            None: accuracy for classifiers (integer or one-hot labels, arg-max of the
            outputs), else the negative mean squared error. Defaults to `None`.
        mode: str. `"quantize_alone"`: each layer alone int8 in a float model;
            `"float_alone"`: each layer alone at higher precision in an int8 model.
            Defaults to `"quantize_alone"`.
        layers: list of str or None. Layer names or regex patterns to analyse; None
            takes every layer with ops in the converted model. Defaults to `None`.
        calibration_data: Representative inputs (as for `tfslim.convert`); None uses the
            validation inputs. Defaults to `None`.
        calibration_steps: int. Calibration samples. Defaults to `100`.
        samples: int. Validation samples each model is evaluated on (the first ones).
            Defaults to `256`.

    Returns:
        A `SensitivityResult`, most sensitive layer first.

    Raises:
        ValueError: for an invalid option or data, or a layer pattern matching nothing.

    Example:

    >>> import keras, numpy as np, tfslim
    >>> x = np.random.rand(64, 6).astype("float32")
    >>> y = (x.sum(1) > 3).astype("int64")
    >>> model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="a"),
    ...                           keras.layers.Dense(2, name="b")])
    >>> ranking = tfslim.sensitivity(model, (x, y), samples=64)
    >>> sorted(r["layer"] for r in ranking)
    ['a', 'b']
    """
    start = time.perf_counter()
    target = get_target(target)
    if mode not in _MODES:
        raise ValueError(
            f"Invalid value for argument `mode`. Expected one of {list(_MODES)}. "
            f"Received: mode={mode!r}"
        )
    check_int("samples", samples)
    x, y = check_validation(validation_data)
    x, y = x[:samples], y[:samples]
    score, metric_name = _metric(metric)
    plan = make_plan(
        model,
        x if calibration_data is None else calibration_data,
        calibration_steps=calibration_steps,
    )
    setup_seconds = time.perf_counter() - start
    candidates = resolve_layers("layers", layers, plan) if layers is not None else list(plan.layers)
    float_metric = score(y, evaluate(plan.float_model, x))
    int8_metric = score(y, evaluate(plan.quantize(), x))
    records = rank(
        plan,
        x,
        y,
        score,
        candidates,
        target=target,
        mode=mode,
        float_metric=float_metric,
        int8_metric=int8_metric,
    )
    return SensitivityResult(
        records,
        mode=mode,
        metric_name=metric_name,
        float_metric=float_metric,
        int8_metric=int8_metric,
        samples=len(x),
        seconds=round(time.perf_counter() - start, 2),
        setup_seconds=round(setup_seconds, 2),
    )


def rank(plan, x, y, score, candidates, *, target, mode, float_metric, int8_metric, base=None):
    """Per-layer records, most sensitive first (see `SensitivityResult.records`)."""
    base = base or {"keep_float": [], "int16": []}
    records = []
    for layer in candidates:
        t0 = time.perf_counter()
        record = {"layer": layer, "ops": list(dict.fromkeys(plan.ops[layer]))}
        if mode == "quantize_alone":
            record["precision"] = "int8"
            model = plan.quantize(only=[layer])
        else:
            precision = higher_precision(plan, layer, target)
            if isinstance(precision, dict):
                records.append({**record, **precision})
                continue
            record["precision"] = precision
            islands = {k: list(v) for k, v in base.items()}
            islands["keep_float" if precision == "float" else "int16"].append(layer)
            model = plan.quantize(**islands)
        value = score(y, evaluate(model, x))
        gain = float_metric - value if mode == "quantize_alone" else value - int8_metric
        record.update(
            metric=value,
            drop=round(float_metric - value, 6),
            sensitivity=round(gain, 6),
            seconds=round(time.perf_counter() - t0, 3),
        )
        records.append(record)
    # Stable: equally sensitive layers keep graph order.
    return sorted(records, key=lambda r: -r["sensitivity"] if r["metric"] is not None else 1e9)


def higher_precision(plan, layer, target):
    """`"float"` on phones; `"int16"` on boards, or a skip record when TFLite Micro lacks
    the int16 kernel of one of the layer's ops."""
    if not target.is_micro:
        return "float"
    missing = sorted({op for op in plan.ops[layer] if op not in MICRO_INT16_OPS})
    if missing:
        return {
            "precision": None,
            "metric": None,
            "drop": None,
            "sensitivity": None,
            "seconds": 0.0,
            "skipped": f"no TFLite Micro int16x8 kernel for {', '.join(missing)}",
        }
    return "int16"


# Re-ranking rounds of the accuracy-aware search: one layer can hide the others (while a
# broken layer ruins the output, keeping any other float gains nothing), so after the
# layers that help are kept, the rest are measured again beside them.
_MAX_ROUNDS = 4


def accuracy_aware(plan, validation_data, *, target, max_accuracy_drop, keep_float, int16):
    """Keeps the fewest, most sensitive layers at higher precision until the metric drop
    vs the float model is at most `max_accuracy_drop`; returns the choice and the model.

    Each round ranks the remaining layers by the gain each brings alone at higher
    precision (beside the layers kept so far), then adds them in that order until the
    target is met or the helpful ones run out; a final pass drops every kept layer whose
    removal still meets the target.
    """
    start = time.perf_counter()
    x, y = check_validation(validation_data)
    score, metric_name = _metric(None)
    float_metric = score(y, evaluate(plan.float_model, x))
    int8_model = plan.quantize()
    int8_metric = score(y, evaluate(int8_model, x))
    forced = set(keep_float) | set(int16)
    islands = {"keep_float": list(keep_float), "int16": list(int16)}
    best_model = plan.quantize(**islands) if forced else int8_model
    best_metric = score(y, evaluate(best_model, x)) if forced else int8_metric
    kept, first_ranking, rounds = [], [], 0
    while float_metric - best_metric > max_accuracy_drop and rounds < _MAX_ROUNDS:
        rounds += 1
        taken = forced | {r["layer"] for r in kept}
        records = rank(
            plan,
            x,
            y,
            score,
            [layer for layer in plan.layers if layer not in taken],
            target=target,
            mode="float_alone",
            float_metric=float_metric,
            int8_metric=best_metric,
            base=_islands(islands, kept),
        )
        for r in records:
            r["round"] = rounds
        first_ranking = first_ranking or records
        helpful = [r for r in records if r["metric"] is not None and r["sensitivity"] > 0]
        if not helpful:
            helpful = _costly_alone(plan, x, y, score, records, target, float_metric)
        added, found = _forward(
            plan, x, y, score, helpful, _islands(islands, kept), float_metric, max_accuracy_drop
        )
        if found is None or found[1] <= best_metric:
            break
        kept += added
        best_model, best_metric = found
    if kept and float_metric - best_metric <= max_accuracy_drop:
        # Fewest layers: drop each kept one, least sensitive first, if the target holds.
        for r in sorted(kept, key=lambda r: r["sensitivity"]):
            if len(kept) == 1:
                break
            trial = [s for s in kept if s is not r]
            model = plan.quantize(**_islands(islands, trial))
            value = score(y, evaluate(model, x))
            if float_metric - value <= max_accuracy_drop:
                kept, best_model, best_metric = trial, model, value
    final = _islands(islands, kept)
    size = len(best_model)
    return {
        "model": best_model,
        "keep_float": [name for name in plan.layers if name in final["keep_float"]],
        "int16": [name for name in plan.layers if name in final["int16"]],
        "kept": [
            {
                "layer": r["layer"],
                "precision": r["precision"],
                "ops": r["ops"],
                "sensitivity": r["sensitivity"],
                "round": r["round"],
                "why": (
                    f"its int8 quantization alone costs {r['sensitivity']:.4f} {metric_name} "
                    f"(ranking round {r['round']}: no layer helped alone)"
                    if r.get("cost_alone")
                    else f"at {r['precision']} alone (ranking round {r['round']}) it lifts "
                    f"{metric_name} from {r['metric'] - r['sensitivity']:.4f} to "
                    f"{r['metric']:.4f}"
                ),
            }
            for r in kept
        ],
        "kept_layers": [r["layer"] for r in kept],
        "max_accuracy_drop": max_accuracy_drop,
        "metric": metric_name,
        "float_accuracy": float_metric,
        "int8_accuracy": int8_metric,
        "accuracy": best_metric,
        "accuracy_drop": round(float_metric - best_metric, 6),
        "met": float_metric - best_metric <= max_accuracy_drop,
        "int8_size_bytes": len(int8_model),
        "size_bytes": size,
        "size_cost": round(size / len(int8_model) - 1.0, 6),
        "samples": len(x),
        "rounds": rounds,
        "ranking": [{k: v for k, v in r.items() if k != "ops"} for r in first_ranking],
        "seconds": round(time.perf_counter() - start, 2),
    }


def _costly_alone(plan, x, y, score, records, target, float_metric):
    """When no layer helps alone (the loss is spread thin), the layers whose int8
    quantization alone in a float model costs the most, each at its higher precision."""
    layers = [r["layer"] for r in records if r["metric"] is not None]
    ranked = rank(
        plan,
        x,
        y,
        score,
        layers,
        target=target,
        mode="quantize_alone",
        float_metric=float_metric,
        int8_metric=None,
    )
    by_layer = {r["layer"]: r for r in records}
    costly = []
    for r in ranked:
        if r["sensitivity"] > 0:
            costly.append(
                {
                    **by_layer[r["layer"]],
                    "sensitivity": r["sensitivity"],
                    "metric": float_metric,
                    "cost_alone": True,
                }
            )
    return costly


def _islands(islands, records):
    """`islands` plus the layers of `records`, each at its record's precision."""
    trial = {k: list(v) for k, v in islands.items()}
    for r in records:
        trial["keep_float" if r["precision"] == "float" else "int16"].append(r["layer"])
    return trial


def _forward(plan, x, y, score, helpful, islands, float_metric, max_drop):
    """Adds `helpful` layers in order until the drop is met; returns (the records of the
    best prefix, (its model, its metric)), or ([], None) when nothing helps."""
    best, best_found = [], None
    for k in range(1, len(helpful) + 1):
        model = plan.quantize(**_islands(islands, helpful[:k]))
        found = (model, score(y, evaluate(model, x)))
        if best_found is None or found[1] > best_found[1]:
            best, best_found = helpful[:k], found
        if float_metric - found[1] <= max_drop:
            return helpful[:k], found
    return best, best_found


def make_plan(model, calibration_data, *, calibration_steps=100, input_shape=None):
    """Converts `model` to float once and calibrates it once."""
    from tfslim.litert import converter, export

    keras_model, _ = export.load_model(model)
    base = converter.convert(
        model,
        target="mobile",
        quantization="none",
        sparse=False,
        verify=False,
        input_shape=input_shape,
    )
    shape = tuple(flatbuffer.analyze(base.flatbuffer)["inputs"][0]["shape"][1:])
    check_int("calibration_steps", calibration_steps)
    samples = calibration_samples(calibration_data, [shape], calibration_steps)
    return MixedPrecisionPlan(
        base.flatbuffer,
        samples,
        micro.output_layer_names(keras_model),
        micro.layer_names(keras_model),
    )


def check_validation(validation_data):
    """`(x, y)` as NumPy arrays of the same length."""
    if not (isinstance(validation_data, tuple | list) and len(validation_data) == 2):
        raise ValueError(
            "Invalid value for argument `validation_data`. Expected a tuple `(x, y)` of "
            f"labelled samples. Received: validation_data of type "
            f"{type(validation_data).__name__}"
        )
    x, y = (np.asarray(v) for v in validation_data)
    if len(x) != len(y) or not len(x):
        raise ValueError(
            "Invalid value for argument `validation_data`. Expected `x` and `y` with the same "
            f"non-zero number of samples. Received: len(x)={len(x)}, len(y)={len(y)}"
        )
    return x.astype(np.float32), y


def check_drop(value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(
            "Invalid value for argument `max_accuracy_drop`. Expected a float in [0, 1). "
            f"Received: max_accuracy_drop={value!r}"
        )
    return float(value)


def _metric(metric):
    if metric is None:
        return _default_score, "accuracy"
    if not callable(metric):
        raise TypeError(
            "Invalid value for argument `metric`. Expected a callable "
            f"`metric(y_true, y_pred) -> float` or None. Received: metric={metric!r}"
        )

    def score(y, pred):
        value = metric(y, pred)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(
                "Invalid value returned by argument `metric`. Expected a float. "
                f"Received: {value!r}"
            ) from None

    return score, getattr(metric, "__name__", type(metric).__name__)


def _default_score(y, pred) -> float:
    """Accuracy for classifier outputs (N, C>1), else the negative mean squared error."""
    pred = pred.reshape(len(pred), -1)
    if pred.shape[1] > 1 and (y.ndim == 1 or y.shape[-1] == pred.shape[1]):
        labels = y.argmax(-1) if y.ndim > 1 else y
        return float(np.mean(pred.argmax(1) == labels.astype(np.int64)))
    return -float(np.mean((pred - y.reshape(pred.shape)) ** 2))
