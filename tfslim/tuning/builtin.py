"""The built-in search behind `tfslim tune`: a small CNN family on scikit-learn digits."""

import os

import keras

__all__ = ["build_digits_search_model", "run_builtin_search"]


def build_digits_search_model(hp) -> keras.Model:
    """A digits CNN whose width multiplier, depth and kernel sizes are hyperparameters."""
    width = hp.Choice("width_multiplier", [0.25, 0.5, 1.0, 2.0])
    depth = hp.Int("depth", 1, 3)
    kernel = hp.Choice("kernel_size", [3, 5])
    dense = hp.Choice("dense_units", [0, 32, 128])
    inputs = keras.Input((8, 8, 1), name="image")
    x = inputs
    for i in range(depth):
        filters = max(4, int(16 * width * (2 if i else 1)))
        x = keras.layers.Conv2D(filters, kernel, padding="same", activation="relu")(x)
        if i == 0:
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x) if dense == 0 else keras.layers.Flatten()(x)
    if dense:
        x = keras.layers.Dense(dense, activation="relu")(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="digits_search")


def run_builtin_search(
    *,
    target: str = "nano33ble",
    max_trials: int = 8,
    out_dir: "str | os.PathLike" = "tfslim_tune",
    max_mcu_latency_estimate_ms: float | None = 2.0,
    max_flash_bytes: int | None = None,
    max_arena_bytes: int | None = None,
    epochs: int = 2,
    distillation: bool = True,
    seed: int = 0,
    overwrite: bool = True,
    verbose: int = 0,
) -> dict:
    """Runs the footprint-aware search on digits and writes its Pareto report.

    The budget is the target's flash and RAM, tightened by the optional limits (the
    default 2 ms estimated MCU latency stands for a real-time requirement).

    Args:
        target: str. Target name. Defaults to `"nano33ble"`.
        max_trials: int. Trials. Defaults to `8`.
        out_dir: str or path-like. Where the tuner state and the report go.
            Defaults to `"tfslim_tune"`.
        max_mcu_latency_estimate_ms: float or None. Cap on the estimated MCU latency
            (`tfslim.Footprint.mcu_latency_estimate_ms`). Defaults to `2.0`.
        max_flash_bytes: int or None. Overrides the target's flash. Defaults to `None`.
        max_arena_bytes: int or None. Overrides the target's RAM (TFLite Micro arena).
            Defaults to `None`.
        epochs: int. Training epochs per trial. Defaults to `2`.
        distillation: bool. Train a float teacher (`tfslim.architectures.build_digits_cnn`,
            3 epochs) and add distillation temperature 4 to the search (temperature 0 = none).
            Defaults to `True`.
        seed: int. Oracle and weight seed. Defaults to `0`.
        overwrite: bool. Start afresh rather than resume. Defaults to `True`.
        verbose: int. KerasTuner verbosity. Defaults to `0`.

    Returns:
        The report dict of `tfslim.tuning.write_report` (trials, front, files).
    """
    from tfslim.datasets import load_digits_data
    from tfslim.litert.targets import require_micro
    from tfslim.tuning.budget import Budget

    require_micro(
        target,
        why="The built-in search fits a model into a microcontroller's flash, RAM and "
        "latency budget. ",
    )
    from tfslim.tuning.report import write_report
    from tfslim.tuning.tuner import FootprintTuner

    overrides = {
        k: v
        for k, v in (
            ("max_mcu_latency_estimate_ms", max_mcu_latency_estimate_ms),
            ("max_flash_bytes", max_flash_bytes),
            ("max_arena_bytes", max_arena_bytes),
        )
        if v is not None
    }
    keras.utils.set_random_seed(seed)
    x_train, y_train, x_test, y_test = load_digits_data(seed)
    teacher = None
    if distillation:
        from tfslim.architectures.digits import build_digits_cnn

        teacher = build_digits_cnn()
        teacher.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        teacher.fit(x_train, y_train, epochs=3, batch_size=32, verbose=0)
    tuner = FootprintTuner(
        build_digits_search_model,
        target=target,
        budget=Budget.from_target(target, **overrides),
        max_trials=max_trials,
        seed=seed,
        epochs=epochs,
        teacher=teacher,
        temperatures=(0.0, 4.0) if distillation else (0.0,),
        directory=os.fspath(out_dir),
        project_name="search",
        overwrite=overwrite,
    )
    tuner.search(x_train, y_train, validation_data=(x_test, y_test), verbose=verbose)
    return write_report(tuner, out_dir)
