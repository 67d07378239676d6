"""The Keras-internals module: the node behind a tensor and Keras's own classes."""

import subprocess
import sys

from tfslim import _keras_graph


def test_producing_node_is_the_call_that_made_the_tensor():
    import keras

    dense = keras.layers.Dense(2, name="fc")
    first, second = keras.Input((3,)), keras.Input((3,))
    dense(first)
    out = dense(second)  # A layer called twice has two nodes; this tensor is the second's.
    operation, node = _keras_graph.producing_node(out)
    assert operation is dense
    assert node.input_tensors[0] is second and node.output_tensors[0] is out
    assert _keras_graph.producer(out) is dense


def test_is_keras_operation_tells_keras_classes_from_custom_ones():
    import keras

    class Custom(keras.layers.Layer):
        def call(self, x):
            return x

    x = keras.Input((3,))
    assert _keras_graph.is_keras_operation(keras.layers.Dense(2))
    assert _keras_graph.is_keras_operation(_keras_graph.producer(x + 1.0))  # A keras.ops call.
    assert not _keras_graph.is_keras_operation(Custom())


def test_importing_it_loads_no_keras():
    code = "import sys, tfslim._keras_graph; print('keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sublayers_reach_nested_models_and_wrapped_layers():
    import keras

    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="inner_fc")])
    wrapped = keras.layers.TimeDistributed(keras.layers.Dense(2, name="wrapped_fc"), name="td")
    x = keras.Input((4, 3))
    model = keras.Model(x, wrapped(x) + keras.layers.TimeDistributed(inner, name="seq")(x))
    names = [layer.name for layer in _keras_graph.sublayers(model)]
    assert {"td", "wrapped_fc", "seq", inner.name, "inner_fc"} <= set(names)
    assert model.name not in names and len(names) == len(set(names))
    assert _keras_graph.sublayers(model, include_self=True)[0] is model


def test_stateless_scope_is_the_enclosing_one():
    import keras

    assert _keras_graph.stateless_scope() is None
    with keras.StatelessScope() as scope:
        assert _keras_graph.stateless_scope() is scope
