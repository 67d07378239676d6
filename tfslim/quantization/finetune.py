"""`quantize_and_finetune`: the usual QAT recipe in one call (used by `tfslim demo`)."""

import keras

from tfslim._checks import check_int
from tfslim.quantization.callbacks import FreezeQuantization
from tfslim.quantization.quantize import quantize_model


def quantize_and_finetune(
    model,
    x,
    y,
    *,
    epochs: int = 3,
    learning_rate: float = 1e-3,
    batch_size: int = 32,
    loss="sparse_categorical_crossentropy",
    verbose: int = 0,
    callbacks=None,
):
    """Quantizes a trained float `model` and fine-tunes it with the usual QAT schedule.

    Batch-norm statistics freeze after the first epoch and activation ranges before the last
    one, so the final epoch trains exactly the arithmetic that deploys.

    Args:
        model: keras.Model. A trained float Sequential or Functional model.
        x: Training inputs.
        y: Training targets.
        epochs: int. Fine-tuning epochs. Defaults to `3`.
        learning_rate: float. Adam learning rate. Defaults to `1e-3`.
        batch_size: int. Defaults to `32`.
        loss: A Keras loss. Defaults to `"sparse_categorical_crossentropy"`.
        verbose: int. `fit` verbosity. Defaults to `0`.
        callbacks: list or None. More callbacks for `fit`, e.g.
            `tfslim.callbacks.Pruning(schedule="keep")` to keep a pruned model's zeros
            through QAT. Defaults to `None`.

    Returns:
        The compiled, fine-tuned QAT model (convert it with `tfslim.convert`).
    """
    check_int("epochs", epochs)
    qat = quantize_model(model)
    qat.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
    schedule = FreezeQuantization(
        freeze_batch_norm_epoch=min(1, epochs - 1), freeze_ranges_epoch=epochs - 1
    )
    qat.fit(
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        verbose=verbose,
        callbacks=[schedule, *(callbacks or [])],
    )
    return qat
