import json
from pathlib import Path

import pytest

import tfslim
from tfslim.litert import flatbuffer
from tfslim.litert.mcu_latency import COST_MODELS, estimate_ops
from tfslim.litert.targets import Target

_REFERENCE = sorted((Path(__file__).parents[1] / "tflite_models" / "reference").glob("*.tflite"))


def _facts(name: str) -> dict:
    path = next(p for p in _REFERENCE if p.name.startswith(name))
    return flatbuffer.analyze(path.read_bytes(), str(path))


def test_four_reference_models_are_present():
    assert {p.name.split("_int8")[0] for p in _REFERENCE} == {
        "ds_cnn",
        "fc_autoencoder",
        "mobilenet_v1",
        "resnet8",
    }


@pytest.mark.parametrize("path", _REFERENCE, ids=lambda p: p.stem)
def test_per_op_macs_sum_to_the_model_total(path):
    facts = flatbuffer.analyze(path.read_bytes(), str(path))
    ops = facts["op_list"]
    assert sum(o["macs"] for o in ops) == facts["macs"] > 0
    for o in ops:  # The keys that were there before are kept.
        assert {"op", "output", "float", "hybrid"} <= set(o)
        assert o["output_elements"] > 0
        if o["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            assert o["macs"] > 0 and o["weight_bytes"] > 0
        else:
            assert o["macs"] == 0


def test_fc_autoencoder_op_figures_match_its_layers():
    # MLPerf Tiny anomaly detection: 640 -> 128 x4 -> 8 -> 128 x4 -> 640.
    ops = _facts("fc_autoencoder")["op_list"]
    assert [o["macs"] for o in ops] == [640 * 128] + [128 * 128] * 3 + [128 * 8, 8 * 128] + [
        128 * 128
    ] * 3 + [128 * 640]
    first = ops[0]
    assert first["input_elements"] == 640 and first["output_elements"] == 128
    # int8 weights plus int32 biases.
    assert first["weight_bytes"] == 640 * 128 + 128 * 4


def test_depthwise_pooling_and_fc_cost_what_the_table_says():
    model = COST_MODELS["cortex-m4"]
    ops = {o["op"]: o for o in _facts("ds_cnn")["op_list"]}
    for kind in ("DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        cycles, known = model.op_cycles(ops[kind])
        assert known
        assert cycles == pytest.approx(
            model.dispatch_cycles + ops[kind]["macs"] * model.cycles_per_mac[kind]
        )
    pool = ops["AVERAGE_POOL_2D"]  # Global pooling: costed per input element read.
    assert pool["input_elements"] > pool["output_elements"]
    cycles, known = model.op_cycles(pool)
    assert known
    assert cycles == pytest.approx(
        model.dispatch_cycles + pool["input_elements"] * model.cycles_per_element["AVERAGE_POOL_2D"]
    )
    softmax = ops["SOFTMAX"]
    assert model.op_cycles(softmax)[0] == pytest.approx(
        model.dispatch_cycles + softmax["output_elements"] * model.cycles_per_element["SOFTMAX"]
    )
    # A depthwise MAC costs more than a convolution MAC on every class: no channel reuse.
    for m in COST_MODELS.values():
        assert m.cycles_per_mac["DEPTHWISE_CONV_2D"] > m.cycles_per_mac["CONV_2D"]
        assert m.source


@pytest.mark.parametrize("board", ["nucleo-l4r5zi", "stm32f746", "esp32s3", "rp2040"])
@pytest.mark.parametrize("name", ["ds_cnn", "mobilenet_v1", "resnet8", "fc_autoencoder"])
def test_breakdown_sums_to_the_total(board, name):
    facts = _facts(name)
    target = tfslim.get_target(board)
    est = target.estimate_latency_ms(facts["macs"], ops=facts["op_list"])
    assert est["estimate"] is True and est["model"] == target.cost_model
    breakdown = est["breakdown"]
    assert set(breakdown) == set(facts["ops"])
    assert {k: v["count"] for k, v in breakdown.items()} == facts["ops"]
    assert sum(v["macs"] for v in breakdown.values()) == facts["macs"]
    assert sum(v["ms"] for v in breakdown.values()) == pytest.approx(est["value_ms"], abs=2e-3)
    assert sum(v["share"] for v in breakdown.values()) == pytest.approx(1.0, abs=1e-3)
    assert est["value_ms"] == pytest.approx(est["cycles"] / target.clock_hz * 1000, abs=1e-3)
    assert est["fallback_ops"] == []
    assert "sum over ops" in est["formula"] and str(est["cycles"]) in est["formula"]
    assert est["source"] == COST_MODELS[target.cost_model].source


def test_fc_autoencoder_lands_on_the_published_cmsis_nn_latency():
    # Calibration point named in the cortex-m4 source: MLPerf Tiny v1.0 anomaly
    # detection on NUCLEO-L4R5ZI with CMSIS-NN, 116.2 inferences/s = 8.6 ms.
    facts = _facts("fc_autoencoder")
    est = tfslim.get_target("nucleo-l4r5zi").estimate_latency_ms(facts["macs"], facts["op_list"])
    assert est["value_ms"] == pytest.approx(1000 / 116.212, rel=0.1)


def test_depthwise_costs_more_per_mac_than_the_mac_only_model_says():
    facts = _facts("mobilenet_v1")
    target = tfslim.get_target("nucleo-l4r5zi")
    est = target.estimate_latency_ms(facts["macs"], ops=facts["op_list"])
    dw = est["breakdown"]["DEPTHWISE_CONV_2D"]
    conv = est["breakdown"]["CONV_2D"]
    assert dw["ms"] / dw["macs"] > conv["ms"] / conv["macs"]


def test_old_callers_passing_only_macs_keep_the_mac_only_formula():
    target = tfslim.get_target("nucleo-l4r5zi")
    est = target.estimate_latency_ms(120_000_000)
    assert est["estimate"] is True
    assert est["value_ms"] == pytest.approx(2000.0)  # 120M MACs * 2 cycles / 120 MHz
    assert "macs * cycles_per_mac / clock_hz" in est["formula"] and "breakdown" not in est
    assert tfslim.get_target("mobile").estimate_latency_ms(10, ops=[]) is None


def test_missing_op_type_falls_back_to_the_stated_default_and_is_named():
    model = COST_MODELS["cortex-m4"]
    ops = [
        {"op": "CONV_2D", "macs": 1000, "output_elements": 10, "input_elements": 10},
        {"op": "GELU", "macs": 0, "output_elements": 500, "input_elements": 500},
        {"op": "CUSTOM:MyMatMul", "macs": 2000, "output_elements": 4, "input_elements": 8},
    ]
    result = estimate_ops(model, ops, 100_000_000)
    assert result["fallback_ops"] == ["CUSTOM:MyMatMul", "GELU"]
    assert result["breakdown"]["GELU"]["from_table"] is False
    assert result["breakdown"]["CONV_2D"]["from_table"] is True
    expected = (
        3 * model.dispatch_cycles
        + 1000 * model.cycles_per_mac["CONV_2D"]
        + 500 * model.default_cycles_per_element
        + 2000 * model.default_cycles_per_mac
    )
    assert result["cycles"] == round(expected)
    gelu_ms = (model.dispatch_cycles + 500 * model.default_cycles_per_element) / 1e5
    assert result["breakdown"]["GELU"]["ms"] == pytest.approx(gelu_ms, abs=1e-4)


def test_unknown_cost_model_names_the_argument():
    board = Target(
        name="x", description="x", kind="mcu", quantization="int8", clock_hz=10, cost_model="z80"
    )
    with pytest.raises(ValueError, match=r"argument `cost_model`.*Received: cost_model='z80'"):
        board.estimate_latency_ms(10, ops=[])


def test_inspect_json_shows_the_breakdown_and_text_keeps_one_cell(capsys):
    from tfslim import cli

    path = next(p for p in _REFERENCE if p.name.startswith("fc_autoencoder"))
    assert cli.main(["inspect", str(path), "--target", "nucleo-l4r5zi", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    est = report["targets"]["nucleo-l4r5zi"]["latency_estimate"]
    assert est["estimate"] is True and est["model"] == "cortex-m4"
    assert est["breakdown"]["FULLY_CONNECTED"]["count"] == 10
    assert est["breakdown"]["FULLY_CONNECTED"]["share"] == 1.0
    assert cli.main(["inspect", str(path), "--target", "nucleo-l4r5zi"]) == 0
    out = capsys.readouterr().out
    assert out.count(" ms (estimate)") == 1 and f"~{est['value_ms']} ms (estimate)" in out


def test_targets_command_shows_the_per_op_table(capsys):
    from tfslim import cli

    assert cli.main(["targets"]) == 0
    out = capsys.readouterr().out
    m4 = next(line for line in out.splitlines() if line.startswith("cortex-m4 "))
    assert m4.split()[1:4] == ["3", "4.5", "3.8"]
    assert "cortex-m4 cost model: " in out and "MLPerf Tiny v1.0" in out
    assert cli.main(["targets", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["rp2040"]["latency_cost_model"]["name"] == "cortex-m0plus"
    assert "latency_cost_model" not in rows["mobile"]
