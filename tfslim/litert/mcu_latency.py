"""A per-op-type cost model for the microcontroller latency ESTIMATE.

Every op of a .tflite file (`flatbuffer.analyze`'s `op_list`) costs

    cycles = dispatch + macs * cycles_per_mac[op]          (ops with MACs)
    cycles = dispatch + elements * cycles_per_element[op]  (ops without)

on one board *class*; the latency is the sum over ops divided by the board clock. The
figures describe int8 kernels of TensorFlow Lite Micro with the vendor-optimized
libraries (CMSIS-NN on Cortex-M, ESP-NN on the ESP32-S3) and carry their source: the
few published per-layer or per-model figures they are calibrated against, or the word
"assumption". It is an estimate, never a measurement: flash wait states, memory
placement and the compiler move real figures by tens of percent.

Pooling and MEAN read each input element once, so they are costed per *input* element;
every other op without MACs per *output* element. Float and hybrid ops are costed as
their int8 kernels would be (the breakdown flags them): the model is for int8 files,
the files a microcontroller runs.
"""

import dataclasses

__all__ = ["COST_MODELS", "CostModel", "estimate_ops"]

_POOL_OPS = ("AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D", "MEAN", "SUM", "REDUCE_MAX")

_M4_SOURCE = (
    "FULLY_CONNECTED calibrated against MLPerf Tiny v1.0 anomaly detection (fc_autoencoder, "
    "264,192 MACs) on NUCLEO-L4R5ZI @ 120 MHz, OctoML CMSIS-NN submission: 116.2 inf/s = "
    "8.6 ms -> 3.9 cycles/MAC all in; CONV_2D set so ds_cnn lands near MLPerf Tiny v1.0 "
    "keyword spotting on the same board (STMicroelectronics, 13.32 inf/s = 75.1 ms; a "
    "different runtime, so a lower bound for TFLite Micro + CMSIS-NN); DEPTHWISE_CONV_2D "
    "1.5x CONV_2D (no input-channel reuse in the SMLAD inner loop: assumption); "
    "per-element and dispatch figures: assumptions."
)
_M7_SOURCE = (
    "Lai, Suda, Chandra 2018, 'CMSIS-NN: Efficient Neural Network Kernels for Arm Cortex-M "
    "CPUs' (arXiv 1801.06601): its per-layer runtimes of a CIFAR-10 CNN on a Cortex-M7 @ "
    "216 MHz read as ~1.4-1.5 cycles/MAC for the 5x5x32 convolutions and ~2 for the "
    "fully-connected layer (q7 kernels of 2018; today's int8 kernels requantize per channel, "
    "so CONV_2D is set to 1.5); DEPTHWISE_CONV_2D 1.5x CONV_2D, per-element and dispatch "
    "figures: assumptions."
)
_M0_SOURCE = (
    "Assumption: Cortex-M0+ (RP2040) has no DSP/SIMD instructions, so CMSIS-NN runs its "
    "portable C loops: one 1-cycle MULS plus two 2-cycle loads per MAC and loop overhead "
    "(ARMv6-M instruction timings, Cortex-M0+ Technical Reference Manual), ~8 cycles per "
    "MAC; weights fetched over XIP QSPI flash make fully-connected layers slower, and code "
    "run from it through the 16 KB XIP cache (RP2040 datasheet) makes per-op dispatch costly."
)
_LX7_SOURCE = (
    "Assumption: ESP-NN's ESP32-S3 kernels use the 128-bit PIE vector instructions (16 int8 "
    "MACs per instruction at peak, Espressif ESP32-S3 Technical Reference Manual); "
    "effective ~1 cycle/MAC for convolutions, more for depthwise and memory-bound "
    "fully-connected layers whose weights stream from flash through the cache."
)


@dataclasses.dataclass(frozen=True)
class CostModel:
    """Cycle costs of TFLite Micro int8 kernels on one class of microcontroller.

    Args:
        name: str. Board class, e.g. `"cortex-m4"`.
        description: str. CPU and kernel library.
        cycles_per_mac: dict. Op type -> cycles per multiply-accumulate.
        cycles_per_element: dict. Op type -> cycles per element (input elements for
            pooling and reductions, output elements otherwise).
        dispatch_cycles: float. Fixed cost per op (TFLite Micro's invoke loop, the kernel's
            parameter setup).
        default_cycles_per_mac: float. For an op with MACs that is missing from the table.
        default_cycles_per_element: float. For an op without MACs missing from the table.
        source: str. Where the figures come from, and which are assumptions.
    """

    name: str
    description: str
    cycles_per_mac: dict
    cycles_per_element: dict
    dispatch_cycles: float
    default_cycles_per_mac: float
    default_cycles_per_element: float
    source: str

    def op_cycles(self, op: dict) -> tuple[float, bool]:
        """Returns (cycles, from the table) for one `op_list` entry."""
        kind, macs = op["op"], int(op.get("macs") or 0)
        if macs or kind in self.cycles_per_mac:
            rate = self.cycles_per_mac.get(kind)
            known = rate is not None
            return self.dispatch_cycles + macs * (
                rate if known else self.default_cycles_per_mac
            ), known
        elements = op.get("input_elements" if kind in _POOL_OPS else "output_elements") or 0
        rate = self.cycles_per_element.get(kind)
        known = rate is not None
        return self.dispatch_cycles + elements * (
            rate if known else self.default_cycles_per_element
        ), known

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Ops that only move or relabel bytes cost about a copy; TFLite Micro's RESHAPE copies
# only when the input and output buffers differ.
_COPY_OPS = {
    "RESHAPE": 0.5,
    "SQUEEZE": 0.5,
    "EXPAND_DIMS": 0.5,
    "CONCATENATION": 1.0,
    "PAD": 1.0,
    "STRIDED_SLICE": 1.5,
    "SLICE": 1.5,
    "TRANSPOSE": 3.0,
    "SPLIT": 1.0,
    "PACK": 1.0,
    "UNPACK": 1.0,
}


def _elementwise(scale: float) -> dict:
    """Cycles per element of the non-MAC ops on a DSP-less baseline, scaled per class."""
    base = {
        "AVERAGE_POOL_2D": 2.0,
        "MAX_POOL_2D": 1.5,
        "MEAN": 3.0,
        "SUM": 3.0,
        "REDUCE_MAX": 2.0,
        "ADD": 6.0,  # Two input rescales and one output requantization per element.
        "SUB": 6.0,
        "MUL": 5.0,
        "RELU": 1.5,
        "RELU6": 1.5,
        "LEAKY_RELU": 4.0,
        "HARD_SWISH": 8.0,
        "LOGISTIC": 15.0,  # int8 LOGISTIC/TANH: fixed-point polynomial per element.
        "TANH": 15.0,
        "SOFTMAX": 60.0,  # Max pass, exp(x - max) in fixed point, sum, reciprocal, scale.
        "QUANTIZE": 8.0,
        "DEQUANTIZE": 8.0,
        **_COPY_OPS,
    }
    return {k: round(v * scale, 3) for k, v in base.items()}


COST_MODELS = {
    m.name: m
    for m in (
        CostModel(
            name="cortex-m4",
            description="Cortex-M4F with DSP extension, TFLite Micro + CMSIS-NN",
            cycles_per_mac={
                "CONV_2D": 3.0,
                "DEPTHWISE_CONV_2D": 4.5,
                "FULLY_CONNECTED": 3.8,
                "TRANSPOSE_CONV": 4.0,
                "BATCH_MATMUL": 4.0,
            },
            cycles_per_element=_elementwise(1.0),
            dispatch_cycles=2000.0,
            default_cycles_per_mac=4.0,
            default_cycles_per_element=10.0,
            source=_M4_SOURCE,
        ),
        CostModel(
            name="cortex-m7",
            description="Cortex-M7 (dual issue, DSP extension), TFLite Micro + CMSIS-NN",
            cycles_per_mac={
                "CONV_2D": 1.5,
                "DEPTHWISE_CONV_2D": 2.25,
                "FULLY_CONNECTED": 2.1,
                "TRANSPOSE_CONV": 2.0,
                "BATCH_MATMUL": 2.0,
            },
            cycles_per_element=_elementwise(0.7),
            dispatch_cycles=1500.0,
            default_cycles_per_mac=2.25,
            default_cycles_per_element=7.0,
            source=_M7_SOURCE,
        ),
        CostModel(
            name="cortex-m0plus",
            description="Cortex-M0+ without DSP/SIMD, TFLite Micro + CMSIS-NN's C loops",
            cycles_per_mac={
                "CONV_2D": 8.0,
                "DEPTHWISE_CONV_2D": 10.0,
                "FULLY_CONNECTED": 10.0,
                "TRANSPOSE_CONV": 10.0,
                "BATCH_MATMUL": 10.0,
            },
            cycles_per_element=_elementwise(1.5),
            # Thumb-1 code run from QSPI flash through a 16 KB XIP cache that the
            # interpreter and kernels overflow: dispatch costs over twice the Cortex-M4's.
            dispatch_cycles=5000.0,
            default_cycles_per_mac=10.0,
            default_cycles_per_element=15.0,
            source=_M0_SOURCE,
        ),
        CostModel(
            name="xtensa-lx7",
            description="Xtensa LX7 with PIE vector unit (ESP32-S3), TFLite Micro + ESP-NN",
            cycles_per_mac={
                "CONV_2D": 1.0,
                "DEPTHWISE_CONV_2D": 2.0,
                "FULLY_CONNECTED": 2.0,
                "TRANSPOSE_CONV": 2.0,
                "BATCH_MATMUL": 2.0,
            },
            cycles_per_element=_elementwise(0.8),
            dispatch_cycles=2000.0,
            default_cycles_per_mac=2.0,
            default_cycles_per_element=8.0,
            source=_LX7_SOURCE,
        ),
    )
}


def estimate_ops(model: CostModel, ops: list, clock_hz: int) -> dict:
    """Per-op-type latency ESTIMATE of an op list on a board of `model`'s class.

    Args:
        model: CostModel. The board class.
        ops: list of dict. `flatbuffer.analyze(...)["op_list"]` entries (`op`, `macs`,
            `output_elements`, `input_elements`).
        clock_hz: int. CPU clock.

    Returns:
        A dict with `value_ms`, `cycles`, `breakdown` (op type -> `count`, `macs`, `ms`,
        `share`, `from_table`) and `fallback_ops` (op types costed with the defaults).
    """
    per_type: dict[str, dict] = {}
    total = 0.0
    for op in ops:
        cycles, known = model.op_cycles(op)
        total += cycles
        row = per_type.setdefault(
            op["op"], {"count": 0, "macs": 0, "cycles": 0.0, "from_table": known}
        )
        row["count"] += 1
        row["macs"] += int(op.get("macs") or 0)
        row["cycles"] += cycles
    breakdown = {}
    for kind, row in sorted(per_type.items(), key=lambda kv: -kv[1]["cycles"]):
        breakdown[kind] = {
            "count": row["count"],
            "macs": row["macs"],
            "ms": round(row["cycles"] / clock_hz * 1000.0, 4),
            "share": round(row["cycles"] / total, 4) if total else 0.0,
            "from_table": row["from_table"],
        }
    return {
        "value_ms": round(total / clock_hz * 1000.0, 3),
        "cycles": int(round(total)),
        "breakdown": breakdown,
        "fallback_ops": sorted(k for k, r in per_type.items() if not r["from_table"]),
    }
