"""How often int8 average kernels round differently from the fake-quant emulation QAT trains.

Run: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/pooling_kernels_benchmark.py [--sizes 2,4,8]

A global average (Keras `GlobalAveragePooling2D`, `keras.ops.mean` over the spatial axes)
between two fake-quant ops converts to an int8 MEAN; written as a full-window average pool it
converts to AVERAGE_POOL_2D. Per spatial size and op, with the output on its own range (as
tfslim quantizes a global average) or on the input's range, the table gives the share of
int8 outputs that differ from TensorFlow's fake-quant computation of the same graph, on
LiteRT's XNNPACK delegate, its optimized builtin kernels and its reference kernels (which
TFLite Micro's kernels compute). Differences are one step of the output grid; in a
squeeze-and-excite block each one scales a whole channel of the feature map.

Inputs: 200 samples of 64 channels, gamma-distributed, on the input's int8 grid.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

INPUT_RANGE = (-1.5, 4.0)
OWN_RANGE = (-0.5, 1.5)
KERNELS = ("xnnpack", "builtin", "reference")


def graph(size, op, output_range):
    """A tf.function: input fake-quant, the average, output fake-quant."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((1, size, size, 64), tf.float32)])
    def average(x):
        x = tf.quantization.fake_quant_with_min_max_vars(x, *INPUT_RANGE)
        if op == "MEAN":
            y = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        else:
            y = tf.nn.avg_pool2d(x, (size, size), (size, size), "VALID")
        return tf.quantization.fake_quant_with_min_max_vars(y, *output_range)

    return average


def convert(function):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], function
    )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def interpreter(flatbuffer, kernels):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = {
        "xnnpack": OpResolverType.AUTO,
        "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        "reference": OpResolverType.BUILTIN_REF,
    }[kernels]
    result = Interpreter(model_content=flatbuffer, experimental_op_resolver_type=resolver)
    result.allocate_tensors()
    return result


def differing_share(function, flatbuffer, samples, kernels):
    """Share of int8 outputs that differ from the fake-quant graph's, on `kernels`."""
    interp = interpreter(flatbuffer, kernels)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    differ = total = 0
    for x in samples:
        q = np.clip(np.round(x / in_scale + in_zero), -128, 127).astype(np.int8)
        interp.set_tensor(inp["index"], q)
        interp.invoke()
        got = interp.get_tensor(out["index"]).astype(np.int32)
        emulated = function((q.astype(np.float32) - in_zero) * in_scale).numpy()
        want = np.round(emulated / out_scale + out_zero).astype(np.int32)
        differ += int(np.sum(got != want.reshape(got.shape)))
        total += got.size
    return differ / total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2,4,8", help="spatial sizes, comma-separated")
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        if not sizes or min(sizes) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--sizes takes positive integers like 2,4,8; received {args.sizes!r}")
    if args.samples < 1:
        parser.error(f"--samples takes a positive integer; received {args.samples}")
    rng = np.random.default_rng(0)
    print("| size | op | output range | " + " | ".join(KERNELS) + " | ops |")
    print("|---|---|---|" + "---|" * len(KERNELS) + "---|")
    for size in sizes:
        samples = (rng.gamma(1.0, 0.7, (args.samples, 1, size, size, 64)) - 0.5).astype("float32")
        for op in ("MEAN", "AVERAGE_POOL_2D"):
            for label, output_range in (("own", OWN_RANGE), ("input's", INPUT_RANGE)):
                function = graph(size, op, output_range)
                flatbuffer = convert(function)
                ops = [d["op_name"] for d in interpreter(flatbuffer, "builtin")._get_ops_details()]
                shares = [differing_share(function, flatbuffer, samples, k) for k in KERNELS]
                cells = " | ".join(f"{100 * s:.1f}%" for s in shares)
                print(f"| {size}x{size} | {op} | {label} | {cells} | {'+'.join(ops)} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
