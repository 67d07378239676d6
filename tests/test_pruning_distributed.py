"""Pruning under tf.distribute.MirroredStrategy with two logical CPU devices.

Logical devices must be configured before TensorFlow initialises, so the check runs in a
fresh interpreter.
"""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from tfslim.pruning import ConstantSparsity, PolynomialDecay, Pruning, PruneLowMagnitude
from tfslim.pruning import prune_low_magnitude

keras.utils.set_random_seed(0)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
x = np.random.default_rng(0).random((256, 8, 8, 1), dtype=np.float32)
y = np.random.default_rng(1).integers(0, 10, 256)
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def build():
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3),
                             keras.layers.Flatten(), keras.layers.Dense(32),
                             keras.layers.Dense(10)])


def replicas(variable):
    return [v.numpy() for v in strategy.experimental_local_results(variable.value)]


def report(constraints):
    rows = []
    for c in constraints:
        masks, weights = replicas(c.mask), replicas(c.variable)
        rows.append({
            "replicas": len(masks),
            "masks_equal": all(np.array_equal(masks[0], m) for m in masks),
            "weights_equal": all(np.array_equal(weights[0], w) for w in weights),
            "zeros_masked": all(np.all(w[m == 0] == 0) for w, m in zip(weights, masks)),
            "sparsity": float((weights[0] == 0).mean()),
        })
    return rows


callback = Pruning(schedule=PolynomialDecay(0.0, 0.8, 0, 12, frequency=3))
seen = {}


class Probe(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        seen["callback"] = report(callback._constraints)
        seen["logged"] = logs["sparsity"]


with strategy.scope():
    model = build()
    model.compile("adam", loss)
model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[callback, Probe()])

with strategy.scope():
    pruned = prune_low_magnitude(build(), pruning_schedule=ConstantSparsity(0.5, frequency=2))
    pruned.compile("adam", loss)
pruned.fit(x, y, batch_size=32, epochs=1, verbose=0)
wrappers = [layer for layer in pruned.layers if isinstance(layer, PruneLowMagnitude)]
seen["wrapper"] = report([c for layer in wrappers for c in layer.constraints])
print("RESULT" + json.dumps(seen))
"""


@pytest.mark.slow
def test_masks_identical_on_every_replica():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    result = json.loads(line[len("RESULT") :])
    for form, target in (("callback", 0.8), ("wrapper", 0.5)):
        rows = result[form]
        assert len(rows) == 3
        for row in rows:
            assert row["replicas"] == 2
            assert row["masks_equal"] and row["weights_equal"] and row["zeros_masked"], row
        assert abs(rows[1]["sparsity"] - target) < 1e-3
    assert abs(result["logged"] - 0.8) < 5e-3
