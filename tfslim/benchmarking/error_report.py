"""The per-layer quantization error report: `LayerRecord` (one Keras layer's figures) and
`QuantizationReport` (all of them, ranked worst first, as a table, JSON or a PNG chart).

`tfslim.quantization_report` (in `quantization_report`) runs the models and fills these;
this module only holds, ranks, formats and reads back the figures.
"""

import dataclasses
import io
import json
import math
import os

import numpy as np

from tfslim import _io
from tfslim._checks import check_bool, check_int, invalid_value
from tfslim.benchmarking.report import Column, format_table

__all__ = ["LayerRecord", "QuantizationReport"]


@dataclasses.dataclass
class LayerRecord:
    """The quantization error of one Keras layer's output tensor.

    Attributes:
        name: str. The Keras layer (or `keras.ops` operation) name.
        class_name: str. Its class.
        index: int. Its position in the Keras graph (topological order).
        tensor: str. The TFLite tensor compared.
        op: str. The TFLite op producing it.
        match: str. How the tensor was found: `"name"`, `"model output"`, `"model input"`
            or `"shape+order"`.
        fused: list of str. Keras layers whose computation the same TFLite op performs.
        shape: list of int. The output shape of one sample.
        scale: float or None. The tensor's quantization step (None for a float tensor).
        float_range: float. The largest magnitude of the float output.
        snr_db, channel_snr_db, rel_error, cosine: float. Accumulated error (int8 graph
            against the float model): signal-to-noise ratio in dB over the whole tensor (inf
            when exact), the mean of the per-channel SNRs in dB (last axis, each capped at
            120 dB; a channel with a range far wider than the others leaves the whole-tensor
            SNR high while the rest of the channels drown in its quantization step),
            relative L2 error, mean cosine similarity per sample.
        flipped: float or None. Accumulated: the share (0..1) of the tensor's integers
            that differ from the float model's output rounded onto the tensor's grid (for a
            QAT model, from the value QAT trained); None for a tensor without a per-tensor
            integer grid.
        alone_snr_db, alone_channel_snr_db, alone_rel_error, alone_cosine, alone_flipped:
            float or None. The layer's own error (its Keras computation fed the int8 graph's
            input to it); None when it could not be isolated. On a QAT model,
            `alone_flipped` is the share of outputs on which the int8 kernel and the QAT
            layer disagree at all.
    """

    name: str
    class_name: str
    index: int
    tensor: str
    op: str
    match: str
    fused: list
    shape: list
    scale: "float | None"
    float_range: float
    snr_db: float
    channel_snr_db: float
    rel_error: float
    cosine: float
    flipped: "float | None" = None
    alone_snr_db: "float | None" = None
    alone_channel_snr_db: "float | None" = None
    alone_rel_error: "float | None" = None
    alone_cosine: "float | None" = None
    alone_flipped: "float | None" = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class QuantizationReport:
    """Per-layer quantization error of a converted model, ranked worst first.

    Made by `tfslim.quantization_report` (or read back with `QuantizationReport.from_json`).

    Args:
        layers: sequence of LayerRecord. The compared layers, in any order.
        unmatched: sequence of dict. Layers without a tensor of their own.
        model: str. The Keras model's name.
        quantization: str. The converted model's mode.
        target: str. The target's name.
        samples: int. Samples compared.
        seconds: float. Wall time of the report.
        kernels: str. The LiteRT kernels that ran the int8 model. Defaults to `"builtin"`.
        timings: dict or None. Seconds per stage. Defaults to `None`.
        notes: sequence of str. Remarks on the figures. Defaults to `()`.

    Attributes:
        layers: list of LayerRecord. Ranked by the error a layer adds alone (lowest SNR
            first; accumulated SNR where a layer could not be isolated).
        unmatched: list of dict. Keras layers without a tensor of their own (`name`,
            `class_name`, `reason`).
        model: str. The Keras model's name.
        quantization: str. The converted model's mode.
        target: str. The target it was converted for.
        kernels: str. The LiteRT kernels that ran it (`"builtin"`, `"xnnpack"` or
            `"reference"`).
        samples: int. Samples compared.
        seconds: float. Wall time of the report, conversion included.
        timings: dict. Seconds spent converting (`convert_s`, 0 when `converted` was
            given), running the TFLite model (`tflite_s`) and the Keras model (`keras_s`).
        notes: list of str. How the figures were obtained, where it matters.
    """

    def __init__(
        self,
        layers,
        *,
        unmatched,
        model,
        quantization,
        target,
        samples,
        seconds,
        kernels="builtin",
        timings=None,
        notes=(),
    ):
        self.layers = sorted(layers, key=_rank_key("alone"))
        self.unmatched = list(unmatched)
        self.model = model
        self.quantization = quantization
        self.target = target
        self.kernels = kernels
        self.samples = samples
        self.seconds = seconds
        self.timings = dict(timings or {})
        self.notes = list(notes)

    def ranked(self, by: str = "alone") -> list:
        """The records ranked worst first by `"alone"` or `"accumulated"` SNR."""
        if by not in ("alone", "accumulated"):
            raise invalid_value("by", "'alone' or 'accumulated'", by)
        return sorted(self.layers, key=_rank_key(by))

    def get(self, name: str) -> LayerRecord:
        """The record of the Keras layer `name`.

        Raises:
            KeyError: naming the compared layers, when `name` is not one of them.
        """
        for record in self.layers:
            if record.name == name:
                return record
        raise KeyError(
            f"{name!r} is not a compared layer; compared: {sorted(r.name for r in self.layers)}"
        )

    def worst(self, by: str = "alone") -> "LayerRecord | None":
        """The record with the lowest SNR (None for a report without layers)."""
        ranked = self.ranked(by)
        return ranked[0] if ranked else None

    def table(self, *, top: "int | None" = None, by: str = "alone", markdown: bool = False) -> str:
        """The ranking as text, with the unmatched layers listed after it.

        Args:
            top: int or None. Show only the worst `top` layers. Defaults to `None` (all).
            by: str. `"alone"` or `"accumulated"`. Defaults to `"alone"`.
            markdown: bool. A Markdown table instead of aligned text. Defaults to `False`.
        """
        if top is not None:
            top = check_int("top", top)
        rows = [
            {"rank": i + 1, **r.to_dict(), "fused": ", ".join(r.fused) or "-"}
            for i, r in enumerate(self.ranked(by)[:top])
        ]
        columns = [
            Column("#", "rank"),
            Column("layer", "name", str, "left"),
            Column("class", "class_name", str, "left"),
            Column("TFLite op", "op", str, "left"),
            Column("alone ch-SNR dB", "alone_channel_snr_db", _format_db),
            Column("alone SNR dB", "alone_snr_db", _format_db),
            Column("alone flipped", "alone_flipped", _format_share),
            Column("ch-SNR dB", "channel_snr_db", _format_db),
            Column("SNR dB", "snr_db", _format_db),
            Column("rel err", "rel_error"),
            Column("cosine", "cosine"),
            Column("flipped", "flipped", _format_share),
            Column("max |float|", "float_range"),
            Column("scale", "scale"),
            Column("match", "match", str, "left"),
            Column("fused", "fused", str, "left"),
        ]
        lines = [
            f"{self.model}: {self.quantization} for {self.target} on {self.kernels} kernels, "
            f"{self.samples} samples, "
            f"{len(self.layers)} layers compared in {self.seconds:.1f} s "
            f"(ranked by {'the error each layer adds alone' if by == 'alone' else by + ' SNR'})",
            format_table(rows, columns, markdown=markdown),
        ]
        if self.unmatched:
            lines.append(f"\nNot compared on their own ({len(self.unmatched)}):")
            lines += [f"  {u['name']} ({u['class_name']}): {u['reason']}" for u in self.unmatched]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-safe contents: an SNR of inf (an exact tensor) becomes null."""
        return {
            "model": self.model,
            "quantization": self.quantization,
            "target": self.target,
            "kernels": self.kernels,
            "samples": self.samples,
            "seconds": self.seconds,
            "timings": self.timings,
            "layers": [_json_safe(r.to_dict()) for r in self.layers],
            "unmatched": self.unmatched,
            "notes": self.notes,
        }

    def to_json(self, path: "str | os.PathLike", *, overwrite: bool = False) -> str:
        """Writes `to_dict()` as JSON, atomically; returns the path written."""
        overwrite = check_bool("overwrite", overwrite)
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"
        return _io.atomic_write(path, text, overwrite=overwrite)

    @classmethod
    def from_json(cls, path: "str | os.PathLike") -> "QuantizationReport":
        """Reads a report written by `to_json`."""
        with open(path) as f:
            data = json.load(f)
        layers = [LayerRecord(**_from_json_safe(r)) for r in data["layers"]]
        return cls(
            layers,
            unmatched=data["unmatched"],
            model=data["model"],
            quantization=data["quantization"],
            target=data["target"],
            kernels=data.get("kernels", "builtin"),
            samples=data["samples"],
            seconds=data["seconds"],
            timings=data.get("timings"),
            notes=data.get("notes", ()),
        )

    def plot(
        self, path: "str | os.PathLike", *, top: "int | None" = None, overwrite: bool = False
    ) -> str:
        """Writes a PNG bar chart of the per-channel SNR per layer, worst first, atomically.

        Args:
            path: str or path-like. The .png file; its directory must exist.
            top: int or None. Plot only the worst `top` layers. Defaults to `None` (all).
            overwrite: bool. Replace an existing file. Defaults to `False`.

        Returns:
            The path written.
        """
        overwrite = check_bool("overwrite", overwrite)
        if top is not None:
            top = check_int("top", top)
        _io.check_output_path(path, overwrite=overwrite, argument="path")
        from matplotlib.figure import Figure

        ranked = self.ranked("alone")[:top]
        names = [r.name for r in ranked][::-1]  # Worst at the top of the chart.
        finite = [
            v
            for r in ranked
            for v in (r.channel_snr_db, r.alone_channel_snr_db)
            if v is not None and math.isfinite(v)
        ]
        cap = max(finite, default=60.0) + 5  # Exact tensors drawn to the edge.

        def bar(value):
            return 0.0 if value is None else (cap if value == math.inf else max(value, 0.0))

        figure = Figure(figsize=(9, 1.2 + 0.22 * max(len(ranked), 1)))
        ax = figure.add_subplot()
        y = np.arange(len(names))
        alone = [bar(r.alone_channel_snr_db) for r in ranked][::-1]
        ax.barh(y + 0.2, alone, 0.4, label="alone")
        ax.barh(y - 0.2, [bar(r.channel_snr_db) for r in ranked][::-1], 0.4, label="accumulated")
        ax.set_yticks(y, names, fontsize=7)
        ax.set_xlabel("per-channel SNR of the layer's output, dB (lower is worse)")
        ax.set_title(
            f"{self.model}: {self.quantization} vs float, {self.samples} samples", fontsize=9
        )
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
        ax.grid(axis="x", alpha=0.3)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90)
        return _io.atomic_write(path, buffer.getvalue(), overwrite=overwrite)

    def __repr__(self) -> str:
        worst = self.worst()
        return (
            f"<QuantizationReport model={self.model} layers={len(self.layers)} "
            f"unmatched={len(self.unmatched)} worst={worst.name if worst else None}>"
        )


def _rank_key(by):
    """Per-channel SNR first (it sees what the whole-tensor SNR averages away), then SNR."""

    def key(r):
        if by == "alone" and r.alone_snr_db is not None:
            return (r.alone_channel_snr_db, r.alone_snr_db, r.index)
        return (r.channel_snr_db, r.snr_db, r.index)

    return key


def _format_db(value) -> str:
    if value is None:
        return "-"
    return "exact" if value == math.inf else f"{value:.1f}"


def _format_share(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _json_safe(record: dict) -> dict:
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()
    }


def _from_json_safe(record: dict) -> dict:
    record = dict(record)
    for prefix in ("", "alone_"):
        if record.get(f"{prefix}rel_error") == 0:  # Written as null: an exact tensor.
            for snr in (f"{prefix}snr_db", f"{prefix}channel_snr_db"):
                if record.get(snr) is None:
                    record[snr] = math.inf
    return record
