"""Callbacks for the usual QAT schedule: freeze range observers and batch-norm statistics.

Freezing flips a non-trainable flag variable, saved with the model (training resumes
frozen). The compiled training step reads range flags as it runs; batch-norm flags choose
the step's arithmetic when it is traced, so freezing batch norm retraces `fit`'s step.
"""

import keras

from tfslim import _keras_graph
from tfslim.quantization.quantize_wrapper import QuantizeWrapper
from tfslim.quantization.quantizers import ActivationQuantizer


def _layers(model):
    return _keras_graph.sublayers(model)


def set_quantizers_frozen(model, frozen: bool = True) -> None:
    """Freezes (or unfreezes) every activation range observer of a QAT `model`."""
    for layer in _layers(model):
        if isinstance(layer, ActivationQuantizer) and layer.built:
            layer.frozen.assign(1.0 if frozen else 0.0)


def set_batch_norm_frozen(model, frozen: bool = True) -> None:
    """Freezes (or unfreezes) the folded batch-norm statistics of a QAT `model`.

    Frozen, a folded layer trains with its moving statistics, i.e. exactly the arithmetic of
    the deployed int8 kernel. The flag is read when a training step is traced, so a change
    retraces `model.fit`'s step (also mid-`fit`); a step of your own (`tf.function`) must be
    retraced too, and fails with a clear error if it is not.
    """
    changed = False
    for layer in _layers(model):
        if not (isinstance(layer, QuantizeWrapper) and layer.batch_norm is not None):
            continue
        if layer.built and bool(layer.bn_frozen.numpy() > 0.5) != bool(frozen):
            layer.bn_frozen.assign(1.0 if frozen else 0.0)
            changed = True
    if changed and getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)


def activation_ranges(model) -> dict[str, tuple[float, float]]:
    """Returns `{quantizer path: (min, max)}` for every activation quantizer of `model`."""
    ranges = {}
    for layer in _layers(model):
        if isinstance(layer, ActivationQuantizer) and layer.built:
            ranges[layer.range_min.path.rsplit("/", 1)[0]] = layer.get_range()
    return ranges


class FreezeQuantization(keras.callbacks.Callback):
    """Freezes activation ranges and batch-norm statistics of a QAT model during `fit`.

    Freezing ranges a few epochs before the end lets the weights adapt to the final int8
    grid; freezing batch-norm statistics makes training use the folded kernels that deploy.
    Epochs count from 0 (`freeze_ranges_epoch=2` freezes at the start of the third epoch);
    steps count optimizer iterations, so they continue across `fit` calls. Freezing batch
    norm retraces the training step once (the flag picks the step's arithmetic when it is
    traced, which keeps a per-layer `tf.cond` out of every step).

    Args:
        freeze_ranges_epoch: int or `None`. Epoch at whose start ranges freeze. Defaults to
            `None`.
        freeze_batch_norm_epoch: int or `None`. Epoch at whose start batch-norm statistics
            freeze. Defaults to `None`.
        freeze_ranges_step: int or `None`. Training step at which ranges freeze. Defaults
            to `None`.
        freeze_batch_norm_step: int or `None`. Training step at which batch-norm statistics
            freeze. Defaults to `None`.
        log_ranges: bool. Add each activation range to the epoch logs as
            `"<quantizer>/min"` and `"<quantizer>/max"`. Defaults to `False`.

    Example:

    >>> callback = FreezeQuantization(freeze_batch_norm_epoch=2, freeze_ranges_epoch=3)
    >>> callback.freeze_ranges_epoch
    3
    """

    def __init__(
        self,
        *,
        freeze_ranges_epoch: int | None = None,
        freeze_batch_norm_epoch: int | None = None,
        freeze_ranges_step: int | None = None,
        freeze_batch_norm_step: int | None = None,
        log_ranges: bool = False,
    ):
        super().__init__()
        for name, value in (
            ("freeze_ranges_epoch", freeze_ranges_epoch),
            ("freeze_batch_norm_epoch", freeze_batch_norm_epoch),
            ("freeze_ranges_step", freeze_ranges_step),
            ("freeze_batch_norm_step", freeze_batch_norm_step),
        ):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(
                    f"Invalid value for argument `{name}`. Expected a non-negative int or "
                    f"None. Received: {name}={value!r}"
                )
        self.freeze_ranges_epoch = freeze_ranges_epoch
        self.freeze_batch_norm_epoch = freeze_batch_norm_epoch
        self.freeze_ranges_step = freeze_ranges_step
        self.freeze_batch_norm_step = freeze_batch_norm_step
        self.log_ranges = log_ranges

    def on_train_begin(self, logs=None):
        # Read the step once and count in Python, so batches need no device sync.
        self._step = int(self.model.optimizer.iterations.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        if self.freeze_ranges_epoch is not None and epoch >= self.freeze_ranges_epoch:
            set_quantizers_frozen(self.model)
        if self.freeze_batch_norm_epoch is not None and epoch >= self.freeze_batch_norm_epoch:
            set_batch_norm_frozen(self.model)

    # Steps are counted at the start of each batch: a callback with an `on_train_batch_end`
    # makes Keras wait for every step's logs before it starts the next one.
    def on_train_batch_begin(self, batch, logs=None):
        step = self._step
        self._step += 1
        if self.freeze_ranges_step is None and self.freeze_batch_norm_step is None:
            return
        if self.freeze_ranges_step is not None and step >= self.freeze_ranges_step:
            set_quantizers_frozen(self.model)
            self.freeze_ranges_step = None
        if self.freeze_batch_norm_step is not None and step >= self.freeze_batch_norm_step:
            set_batch_norm_frozen(self.model)
            self.freeze_batch_norm_step = None

    def on_epoch_end(self, epoch, logs=None):
        if self.log_ranges and logs is not None:
            for name, (low, high) in activation_ranges(self.model).items():
                logs[f"{name}/min"] = low
                logs[f"{name}/max"] = high

    def get_config(self):
        return {
            "freeze_ranges_epoch": self.freeze_ranges_epoch,
            "freeze_batch_norm_epoch": self.freeze_batch_norm_epoch,
            "freeze_ranges_step": self.freeze_ranges_step,
            "freeze_batch_norm_step": self.freeze_batch_norm_step,
            "log_ranges": self.log_ranges,
        }
