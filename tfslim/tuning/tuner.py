"""`FootprintTuner`: KerasTuner trials that train, convert for a target and pay the bill.

Each trial builds a float model from the hypermodel, applies the compression the trial
draws (QAT, pruning sparsity, distillation temperature), converts it with
`tfslim.convert` for the target, and records its `tfslim.Footprint` (`tfslim.measure`): the
int8 model's quality beside its flash, TFLite Micro arena, host LiteRT latency and the
labelled MCU latency estimate. A trial over budget is *completed* as infeasible (its figures
kept), never failed, so KerasTuner's consecutive-failure stop is not triggered and the search
goes on.
"""

import json
import os

import keras
import keras_tuner

from tfslim import _io
from tfslim._checks import check_int
from tfslim.benchmarking.footprint import Footprint
from tfslim.tuning.budget import BUDGET_FIGURES, Budget, limited_figures
from tfslim.tuning.pareto import pareto_front

__all__ = ["FOOTPRINT_METRICS", "FootprintTuner", "front_records"]

# Footprint figures that the front trades against quality (all minimized).
FOOTPRINT_METRICS = tuple(BUDGET_FIGURES.values())
_OBJECTIVE = "score"


class FootprintTuner(keras_tuner.Tuner):
    """Searches architecture and compression together under a deployment budget.

    The oracle maximizes `score`: the converted model's validation quality when the trial
    fits the budget, and `quality - 1 - overshoot` (always below any feasible trial) when
    it does not, so the search is steered back under budget.

    Args:
        hypermodel: callable `hp -> keras.Model` or `keras_tuner.HyperModel`. Builds the
            float architecture (width, depth, kernel sizes are its hyperparameters).
        target: str or Target. Where the model will run. Defaults to `"nano33ble"`.
        budget: Budget or None. Hard limits; None uses the target's flash and RAM.
            Defaults to `None`.
        oracle: keras_tuner.Oracle or None. None makes a `RandomSearchOracle` with
            `max_trials` and `seed`. A given oracle must use the objective `"score"`
            (max). Defaults to `None`.
        max_trials: int. Trials of the default oracle. Defaults to `10`.
        seed: int or None. Seed of the default oracle. Defaults to `None`.
        qat: sequence of bool. Choices for quantization-aware training. Defaults to
            `(False, True)`.
        sparsities: sequence of float in [0, 1). Pruning sparsity choices, 0 = dense.
            Defaults to `(0.0, 0.5, 0.8)`.
        temperatures: sequence of float >= 0. Distillation temperature choices, 0 = no
            distillation; needs `teacher` when any is > 0. Defaults to `(0.0,)`.
        teacher: keras.Model or None. Trained teacher for distillation. Defaults to `None`.
        epochs: int. Training epochs per trial. Defaults to `2`.
        batch_size: int. Defaults to `32`.
        learning_rate: float. Adam learning rate. Defaults to `3e-3`.
        calibration_samples: int. Inputs used to calibrate non-QAT int8 conversion.
            Defaults to `100`.
        latency_runs: int. LiteRT timed runs per trial (XNNPACK). Defaults to `20`.
        **kwargs: `directory`, `project_name`, `overwrite`, ... of `keras_tuner.Tuner`.

    Example:

    >>> def build(hp):
    ...     return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
    ...         keras.layers.Dense(hp.Choice("units", [8, 16]), activation="relu"),
    ...         keras.layers.Dense(10, activation="softmax")])
    >>> tuner = FootprintTuner(build, target="nano33ble", max_trials=2,
    ...                        directory="/tmp/t")  # doctest: +SKIP
    >>> tuner.search(x, y, validation_data=(xv, yv))  # doctest: +SKIP
    >>> models = tuner.pareto_front()  # doctest: +SKIP
    """

    def __init__(
        self,
        hypermodel,
        *,
        target="nano33ble",
        budget: Budget | None = None,
        oracle: keras_tuner.Oracle | None = None,
        max_trials: int = 10,
        seed: int | None = None,
        qat=(False, True),
        sparsities=(0.0, 0.5, 0.8),
        temperatures=(0.0,),
        teacher: keras.Model | None = None,
        epochs: int = 2,
        batch_size: int = 32,
        learning_rate: float = 3e-3,
        calibration_samples: int = 100,
        latency_runs: int = 20,
        **kwargs,
    ):
        from tfslim.litert.targets import get_target

        self.target = get_target(target)
        if budget is not None and not isinstance(budget, Budget):
            raise TypeError(
                "Invalid type for argument `budget`. Expected a tfslim.tuning.Budget or None. "
                f"Received: budget={budget!r}"
            )
        self.budget = budget if budget is not None else Budget.from_target(self.target)
        self.qat_choices = _check_choices("qat", qat, lambda v: isinstance(v, bool), "bools")
        self.sparsities = _check_choices(
            "sparsities", sparsities, lambda v: _is_number(v) and 0 <= v < 1, "floats in [0, 1)"
        )
        self.temperatures = _check_choices(
            "temperatures", temperatures, lambda v: _is_number(v) and v >= 0, "floats >= 0"
        )
        if any(t > 0 for t in self.temperatures) and teacher is None:
            raise ValueError(
                "Invalid value for argument `teacher`. Expected a trained keras.Model when a "
                f"distillation temperature is > 0. Received: teacher=None, "
                f"temperatures={list(self.temperatures)}"
            )
        for name, value in (
            ("max_trials", max_trials),
            ("epochs", epochs),
            ("batch_size", batch_size),
            ("calibration_samples", calibration_samples),
            ("latency_runs", latency_runs),
        ):
            check_int(name, value)
        self.teacher = teacher
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.calibration_samples = calibration_samples
        self.latency_runs = latency_runs
        if oracle is None:
            from tfslim.tuning.oracle import BudgetAwareRandomSearchOracle

            oracle = BudgetAwareRandomSearchOracle(
                objective=keras_tuner.Objective(_OBJECTIVE, "max"),
                max_trials=max_trials,
                seed=seed,
            )
        elif oracle.objective.name != _OBJECTIVE or oracle.objective.direction != "max":
            raise ValueError(
                "Invalid value for argument `oracle`. Expected an oracle with objective "
                f"keras_tuner.Objective('{_OBJECTIVE}', 'max'). "
                f"Received: objective={oracle.objective}"
            )
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)
        if getattr(self.oracle, "precheck", False) is None:
            self.oracle.precheck = self.predicted_feasible

    def predicted_feasible(self, values: dict, *, margin: float = 0.05) -> bool:
        """Whether an untrained model of these values is predicted to fit the budget.

        Flash is predicted as one byte per parameter and MCU latency with the target's
        `macs * cycles_per_mac / clock_hz`; a limit counts as broken only beyond `margin`.
        """
        from tfslim.tuning.oracle import estimate_footprint

        hp = self.oracle.get_space()
        hp.values.update(values)
        estimate = estimate_footprint(self.hypermodel.build(hp))
        predicted = {"flash_bytes": estimate["params"]}
        latency = self.target.estimate_latency_ms(estimate["macs"])
        if latency is not None:
            predicted["mcu_latency_estimate_ms"] = latency["value_ms"]
        # Figures that cannot be predicted (RAM, host latency) do not count against it.
        return self.budget.overshoot(predicted, missing=0.0) <= margin

    # ----------------------------------------------------------------- one trial
    def run_trial(self, trial, x, y, *, validation_data, **kwargs):
        """Trains, compresses, converts and measures one trial; returns its metrics."""
        hp = trial.hyperparameters
        if len(set(self.qat_choices)) == 2:
            qat = hp.Boolean("qat")
        else:
            qat = hp.Fixed("qat", self.qat_choices[0])
        sparsity = hp.Choice("sparsity", list(self.sparsities))
        temperature = hp.Choice("temperature", list(self.temperatures))
        model = self._train(self.hypermodel.build(hp), x, y, qat, sparsity, temperature)
        result, footprint = self._measure(model, x, validation_data, qat)
        # The target's own verdict also catches ops TFLite Micro cannot run.
        violations = self.budget.violations(footprint) + footprint.board_reasons.get(
            self.target.name, []
        )
        feasible = not violations
        os.makedirs(self.get_trial_dir(trial.trial_id), exist_ok=True)
        # A resumed or rerun trial replaces its own files; each write is atomic, so a
        # killed trial never leaves a half-written model beside its figures.
        _io.save_keras_model(model, self._trial_file(trial.trial_id, "model.keras"), overwrite=True)
        _io.atomic_write(self.tflite_path(trial.trial_id), result.flatbuffer, overwrite=True)
        _io.atomic_write(
            self._trial_file(trial.trial_id, "figures.json"),
            json.dumps(
                {**footprint.to_dict(), "feasible": feasible, "violations": violations}, indent=1
            ),
            overwrite=True,
        )
        quality = footprint.quality
        overshoot = self.budget.overshoot(footprint) if not feasible else 0.0
        score = quality if feasible else quality - 1.0 - min(overshoot, 1.0)
        metrics = {
            k: float(v)
            for k, v in {
                **limited_figures(footprint),
                "quality": quality,
                "params": footprint.params,
                "macs": footprint.macs,
            }.items()
            if v is not None
        }
        metrics.update({_OBJECTIVE: float(score), "feasible": float(feasible)})
        return metrics

    def _train(self, model, x, y, qat, sparsity, temperature):
        from tfslim import pruning, quantization

        if temperature > 0:
            from tfslim.distillation import distill

            return distill(
                self.teacher,
                model,
                x,
                y,
                epochs=self.epochs,
                batch_size=self.batch_size,
                temperature=temperature,
                quantize=qat,
                pruning=sparsity or None,
                optimizer=keras.optimizers.Adam(self.learning_rate),
            )
        if qat:
            model = quantization.quantize_model(model)
        model.compile(
            keras.optimizers.Adam(self.learning_rate),
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        callbacks = [pruning.Pruning(sparsity)] if sparsity else []
        model.fit(
            x, y, epochs=self.epochs, batch_size=self.batch_size, callbacks=callbacks, verbose=0
        )
        return pruning.strip_pruning(model) if sparsity else model

    def _measure(self, model, x, validation_data, qat):
        """The conversion result and its `Footprint` on the validation data."""
        import tfslim
        from tfslim.benchmarking.measure import measure

        calibration = None if qat else x[: self.calibration_samples]
        result = tfslim.convert(model, target=self.target, calibration_data=calibration)
        footprint = measure(
            result,
            target=self.target,
            data=tuple(validation_data),
            latency_runs=self.latency_runs,
            warmup=2,
        )
        return result, footprint

    # ----------------------------------------------------------------- results
    def save_model(self, trial_id, model, step=0):
        """Models are saved by `run_trial` (`model.keras` and `model.tflite`)."""

    def load_model(self, trial):
        """The trained (compressed, float-graph) Keras model of a trial."""
        return keras.saving.load_model(self._trial_file(trial.trial_id, "model.keras"))

    def trial_records(self) -> list[dict]:
        """One dict per completed trial: `trial_id`, `hyperparameters`, every
        `tfslim.Footprint` field (same names), `score`, `feasible` and `violations`."""
        records = []
        trials = self.oracle.get_best_trials(num_trials=10**6)
        for trial in trials:
            if not trial.metrics.exists("quality"):
                continue
            record = {"trial_id": trial.trial_id, "hyperparameters": trial.hyperparameters.values}
            record.update(self._recorded_figures(trial))
            record["score"] = float(trial.metrics.get_last_value(_OBJECTIVE))
            record["feasible"] = bool(trial.metrics.get_last_value("feasible"))
            records.append(record)
        return sorted(records, key=lambda r: r["trial_id"])

    def _recorded_figures(self, trial) -> dict:
        """The footprint and violations `run_trial` wrote; rebuilt from the oracle's
        metrics when the trial's figures file is not on this machine."""
        try:
            with open(self._trial_file(trial.trial_id, "figures.json")) as f:
                saved = json.load(f)
            return {**Footprint.from_dict(saved).to_dict(), "violations": saved["violations"]}
        except (OSError, KeyError, TypeError, ValueError):
            pass

        def metric(name):
            if not trial.metrics.exists(name):
                return None
            value = float(trial.metrics.get_last_value(name))
            return int(value) if name.endswith("bytes") or name in ("params", "macs") else value

        estimate = metric("mcu_latency_estimate_ms")
        figures = {
            "flash_bytes": metric("flash_bytes"),
            "arena_bytes": metric("arena_bytes"),
            "latency_ms": metric("latency_ms"),
            "mcu_latency_estimate_ms": {} if estimate is None else {self.target.name: estimate},
            "quality": metric("quality"),
            "params": metric("params"),
            "macs": metric("macs"),
            "target": self.target.name,
        }
        return {**figures, "violations": self.budget.violations(figures)}

    def pareto_records(
        self, *, objectives=FOOTPRINT_METRICS, min_quality: float | None = None
    ) -> list[dict]:
        """The feasible trials on the front of quality against every figure in `objectives`.

        Args:
            objectives: footprint figures to minimize. Defaults to all of them.
            min_quality: float or None. Leave out trials below this quality first, so a
                tiny model too poor to use cannot sit on the front just for being tiny.
                Defaults to `None`.
        """
        if min_quality is not None and not _is_number(min_quality):
            raise ValueError(
                "Invalid value for argument `min_quality`. Expected a number or None. "
                f"Received: min_quality={min_quality!r}"
            )
        return front_records(self.trial_records(), objectives=objectives, min_quality=min_quality)

    def pareto_front(
        self, *, objectives=FOOTPRINT_METRICS, min_quality: float | None = None
    ) -> list[keras.Model]:
        """The trained models on the Pareto front, best quality first (see `pareto_records`)."""
        return [
            keras.saving.load_model(self._trial_file(r["trial_id"], "model.keras"))
            for r in self.pareto_records(objectives=objectives, min_quality=min_quality)
        ]

    def tflite_path(self, trial_id: str) -> str:
        """Path of the converted model of a trial."""
        return self._trial_file(trial_id, "model.tflite")

    def _trial_file(self, trial_id: str, name: str) -> str:
        return os.path.join(self.get_trial_dir(trial_id), name)


def front_records(
    records: list[dict], *, objectives=FOOTPRINT_METRICS, min_quality: float | None = None
) -> list[dict]:
    """The feasible trial records on the front of quality against `objectives`, best first.

    A per-board figure (`mcu_latency_estimate_ms`) counts with its slowest board.

    Args:
        records: list of dict. `FootprintTuner.trial_records()`.
        objectives: footprint figures to minimize. Defaults to `FOOTPRINT_METRICS`.
        min_quality: float or None. Leave out trials below this quality first.
            Defaults to `None`.
    """
    objectives = list(objectives)

    def point(record):
        values = {"quality": record.get("quality")}
        for name in objectives:
            value = record.get(name)
            values[name] = max(value.values(), default=None) if isinstance(value, dict) else value
        return values

    usable = [(r, point(r)) for r in records if r["feasible"]]
    usable = [(r, p) for r, p in usable if all(v is not None for v in p.values())]
    if min_quality is not None:
        usable = [(r, p) for r, p in usable if p["quality"] >= min_quality]
    front = pareto_front([p for _, p in usable], maximize=["quality"], minimize=objectives)
    return sorted((usable[i][0] for i in front), key=lambda r: -r["quality"])


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_choices(name, values, ok, expected):
    values = tuple(values) if isinstance(values, list | tuple) else None
    if not values or not all(ok(v) for v in values):
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a non-empty list of {expected}. "
            f"Received: {name}={values!r}"
        )
    return values
