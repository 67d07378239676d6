import re
from pathlib import Path

import pytest

import tfslim
from tfslim.errors import InvalidModelError


def test_c_array_round_trips_and_is_aligned(mcu_tflite, tmp_path):
    source, header = tfslim.export_c(mcu_tflite, tmp_path / "model_data.cc")
    text = Path(source).read_text()
    assert "alignas(16) const unsigned char model_data[]" in text
    assert f"const unsigned int model_data_len = {len(mcu_tflite)};" in text
    body = text[text.index("{") + 1 : text.index("};")]
    data = bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", body))
    assert data == mcu_tflite
    h = Path(header).read_text()
    assert "extern const unsigned char model_data[];" in h and "#ifndef MODEL_DATA_H" in h


def test_c_source_compiles(mcu_tflite, tmp_path):
    import shutil
    import subprocess

    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler on this machine")
    source, _ = tfslim.export_c(mcu_tflite, tmp_path / "model_data.cc", variable_name="g_model")
    main = tmp_path / "main.cc"
    main.write_text(
        '#include "model_data.h"\n#include <cstdint>\n'
        "int main() { return (reinterpret_cast<std::uintptr_t>(g_model) % 16 == 0 && "
        f"g_model_len == {len(mcu_tflite)} && g_model[4] == 'T') ? 0 : 1; }}\n"
    )
    exe = tmp_path / "check"
    subprocess.run([compiler, "-std=c++17", str(main), source, "-o", str(exe)], check=True)
    assert subprocess.run([str(exe)]).returncode == 0


def test_export_c_refusals(mcu_tflite, tmp_path):
    with pytest.raises(InvalidModelError):
        tfslim.export_c(b"garbage!", tmp_path / "m.cc")
    with pytest.raises(ValueError, match=r"argument `output_path`.*\.cc"):
        tfslim.export_c(mcu_tflite, tmp_path / "m.txt")
    with pytest.raises(ValueError, match="argument `variable_name`"):
        tfslim.export_c(mcu_tflite, tmp_path / "m.cc", variable_name="9bad")
    tfslim.export_c(mcu_tflite, tmp_path / "m.cc")
    with pytest.raises(FileExistsError):
        tfslim.export_c(mcu_tflite, tmp_path / "m.cc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.cc", "m.h"]


def test_export_c_refuses_what_litert_refuses(tmp_path):
    from pathlib import Path

    model = bytearray(
        (Path(__file__).parents[1] / "tflite_models/reference/ds_cnn_int8.tflite").read_bytes()
    )
    model[36:44] = bytes(8)  # Our reader still parses this; LiteRT's verifier does not.
    with pytest.raises(InvalidModelError, match="LiteRT's flatbuffer verifier refused it"):
        tfslim.export_c(bytes(model), tmp_path / "m.cc")
    assert list(tmp_path.iterdir()) == []
