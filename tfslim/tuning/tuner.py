"""`FootprintTuner`: KerasTuner trials that train, convert for a target and pay the bill.

Each trial builds a float model from the hypermodel, applies the compression the trial
draws (QAT, pruning sparsity, distillation temperature), converts it with
`tfslim.convert` for the target, and records the int8 model's quality beside its measured
footprint: file size, TFLite Micro arena, LiteRT latency and the labelled MCU latency
estimate. A trial over budget is *completed* as infeasible (its figures kept), never failed,
so KerasTuner's consecutive-failure stop is not triggered and the search goes on.
"""

import json
import os

import keras
import keras_tuner

from tfslim._checks import check_int
from tfslim.tuning.budget import Budget
from tfslim.tuning.pareto import pareto_front

__all__ = ["FOOTPRINT_METRICS", "FootprintTuner"]

# Trial figures that the front trades against quality (all minimized).
FOOTPRINT_METRICS = ("flash_bytes", "ram_bytes", "latency_ms", "mcu_latency_ms")
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
            predicted["mcu_latency_ms"] = latency["value_ms"]
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
        figures = self._measure(model, x, validation_data, qat)
        violations = self.budget.violations(figures) + figures.pop("target_reasons")
        feasible = not violations
        os.makedirs(self.get_trial_dir(trial.trial_id), exist_ok=True)
        model.save(self._trial_file(trial.trial_id, "model.keras"))
        with open(self.tflite_path(trial.trial_id), "wb") as f:
            f.write(figures.pop("flatbuffer"))
        with open(self._trial_file(trial.trial_id, "figures.json"), "w") as f:
            json.dump({**figures, "feasible": feasible, "violations": violations}, f, indent=1)
        overshoot = self.budget.overshoot(figures) if feasible is False else 0.0
        score = figures["quality"] if feasible else figures["quality"] - 1.0 - min(overshoot, 1.0)
        metrics = {k: float(v) for k, v in figures.items() if v is not None}
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

    def _measure(self, model, x, validation_data, qat) -> dict:
        import tfslim

        calibration = None if qat else x[: self.calibration_samples]
        result = tfslim.convert(model, target=self.target, calibration_data=calibration)
        report = tfslim.inspect(result.flatbuffer, target=self.target)
        verdict = report["targets"][self.target.name]
        bench = tfslim.benchmark(result.flatbuffer, runs=self.latency_runs, warmup=2, xnnpack=True)
        quality = tfslim.evaluate(result.flatbuffer, tuple(validation_data))["tflite"]
        estimate = verdict["latency_estimate"]
        return {
            "quality": quality,
            "flash_bytes": report["size_bytes"],
            "ram_bytes": report.get("micro", {}).get("arena_bytes"),
            "latency_ms": bench["latency"]["xnnpack"]["latency_ms"]["median"],
            "mcu_latency_ms": None if estimate is None else estimate["value_ms"],
            "params": report["params"],
            "macs": report["macs"],
            # The target's own verdict also catches ops TFLite Micro cannot run.
            "target_reasons": list(verdict["reasons"]),
            "flatbuffer": result.flatbuffer,
        }

    # ----------------------------------------------------------------- results
    def save_model(self, trial_id, model, step=0):
        """Models are saved by `run_trial` (`model.keras` and `model.tflite`)."""

    def load_model(self, trial):
        """The trained (compressed, float-graph) Keras model of a trial."""
        return keras.saving.load_model(self._trial_file(trial.trial_id, "model.keras"))

    def trial_records(self) -> list[dict]:
        """One dict per completed trial: id, hyperparameters, quality, footprint, feasible."""
        records = []
        trials = self.oracle.get_best_trials(num_trials=10**6)
        for trial in trials:
            if not trial.metrics.exists("quality"):
                continue
            record = {"trial_id": trial.trial_id, "hyperparameters": trial.hyperparameters.values}
            for name in ("quality", "score", *FOOTPRINT_METRICS, "params", "macs"):
                if trial.metrics.exists(name):
                    record[name] = float(trial.metrics.get_last_value(name))
                else:
                    record[name] = None
            record["feasible"] = bool(trial.metrics.get_last_value("feasible"))
            record["violations"] = self._recorded_violations(trial.trial_id, record)
            records.append(record)
        return sorted(records, key=lambda r: r["trial_id"])

    def _recorded_violations(self, trial_id, record) -> list[str]:
        """The violations `run_trial` wrote (budget and target verdict), or the budget's
        own when the trial's figures file is not there."""
        try:
            with open(self._trial_file(trial_id, "figures.json")) as f:
                return list(json.load(f)["violations"])
        except (OSError, KeyError, ValueError):
            return self.budget.violations(record)

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
        return _front_of(self.trial_records(), objectives, min_quality)

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


def _front_of(records, objectives, min_quality) -> list[dict]:
    """The feasible records on the front of quality against `objectives`, best first."""
    usable = [r for r in records if r["feasible"] and all(r[m] is not None for m in objectives)]
    if min_quality is not None:
        usable = [r for r in usable if r["quality"] >= min_quality]
    front = pareto_front(usable, maximize=["quality"], minimize=list(objectives))
    return sorted((usable[i] for i in front), key=lambda r: -r["quality"])


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
