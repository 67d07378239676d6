"""A random-search oracle that skips candidates predicted to be over budget.

Before a trial is handed out, the hypermodel is built (not trained) and its int8 flash
and microcontroller latency are *predicted* from the Keras graph: flash ~ parameter
count (one byte per int8 weight) and latency ~ MACs * cycles_per_mac / clock_hz, the
target's own formula. Candidates predicted more than `margin` over a limit are skipped
without spending a trial; the measured figures of the trials that do run still decide
feasibility. Skipped candidates are marked as tried so they are not drawn again.
"""

import keras_tuner

__all__ = ["BudgetAwareRandomSearchOracle", "estimate_footprint"]


def estimate_footprint(model) -> dict:
    """Parameter count and multiply-accumulates of a built Keras model (Conv/Dense layers)."""
    macs = 0
    for layer in _leaf_layers(model):
        name = type(layer).__name__
        try:
            out = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if name == "Conv2D":
            kh, kw = layer.kernel_size
            in_c = layer.kernel.shape[2]
            macs += out[1] * out[2] * out[3] * kh * kw * in_c
        elif name == "DepthwiseConv2D":
            kh, kw = layer.kernel_size
            macs += out[1] * out[2] * out[3] * kh * kw
        elif name == "Dense":
            macs += layer.kernel.shape[0] * layer.kernel.shape[1]
    return {"params": int(model.count_params()), "macs": int(macs)}


def _leaf_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _leaf_layers(layer)
        else:
            yield layer


class BudgetAwareRandomSearchOracle(keras_tuner.oracles.RandomSearchOracle):
    """`RandomSearchOracle` whose candidates pass `precheck(values) -> bool` first.

    Args:
        precheck: callable or None. Returns False for hyperparameter values predicted to
            be over budget; set by `FootprintTuner`. Defaults to `None` (no check).
        max_draws: int. Candidates drawn per trial before giving up and running the last
            one anyway. Defaults to `50`.
        **kwargs: arguments of `keras_tuner.oracles.RandomSearchOracle`.
    """

    def __init__(self, *, precheck=None, max_draws: int = 50, **kwargs):
        super().__init__(**kwargs)
        self.precheck = precheck
        self.max_draws = max_draws
        self.skipped = 0

    def populate_space(self, trial_id):
        for _ in range(self.max_draws):
            result = super().populate_space(trial_id)
            if result["values"] is None or self.precheck is None:
                return result
            if self.precheck(result["values"]):
                return result
            self.skipped += 1
            self._tried_so_far.add(self._compute_values_hash(result["values"]))
        return result
