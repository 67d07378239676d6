"""Mutated copies of the shipped .tflite files through inspect, benchmark and the CLI.

Bounded: 40 seeded mutants, every interpreter call under a timeout. Checked: no call takes
the test process or the CLI down with a signal or prints a traceback; what is refused is
refused with one line naming the file; and no file LiteRT's flatbuffer verifier refuses
gets an inspection report.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tfslim
from tfslim.errors import InvalidModelError

ROOT = Path(__file__).parents[1]
SOURCES = sorted((ROOT / "tflite_models").rglob("*.tflite"))
N_MUTANTS = 40
KINDS = ("swap_words", "zero_head", "zero_region", "flip_bytes", "truncate")

# Independent of tfslim: what LiteRT itself says when it builds each file.
_ORACLE = """
import json, sys
from ai_edge_litert.interpreter import Interpreter, OpResolverType
verdicts = []
for path in sys.argv[1:]:
    try:
        Interpreter(model_path=path,
                    experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        verdicts.append(None)
    except Exception as e:
        verdicts.append(" ".join(str(e).split())[:200])
print(json.dumps(verdicts))
"""


def _mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    b = np.frombuffer(data, np.uint8).copy()
    n = len(b)
    if kind == "swap_words":  # Offsets and lengths live in the first tables.
        i, j = rng.integers(2, min(n, 4096) // 4, size=2) * 4
        b[[*range(i, i + 4), *range(j, j + 4)]] = b[[*range(j, j + 4), *range(i, i + 4)]]
    elif kind == "zero_head":
        start = int(rng.integers(8, 600))
        b[start : start + int(rng.integers(4, 64))] = 0
    elif kind == "zero_region":
        start = int(rng.integers(8, n - 64))
        b[start : start + int(rng.integers(16, 512))] = 0
    elif kind == "flip_bytes":
        b[rng.integers(8, n, size=16)] = rng.integers(0, 256, size=16, dtype=np.uint8)
    else:
        b = b[: int(rng.integers(8, n))]
    return b.tobytes()


@pytest.fixture(scope="module")
def mutants(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mutants")
    # LiteRT is the oracle only for files it builds intact: a board file with TFLite Micro's
    # LUT compression (DECODE ops) is refused by LiteRT as it is.
    sources = [s for s, e in zip(SOURCES, _litert_verdicts(SOURCES), strict=True) if e is None]
    rng = np.random.default_rng(12)
    paths = []
    for i in range(N_MUTANTS):
        source, kind = sources[i % len(sources)], KINDS[i % len(KINDS)]
        path = folder / f"{i:02d}_{kind}_{source.name}"
        path.write_bytes(_mutate(source.read_bytes(), kind, rng))
        paths.append(path)
    return list(zip(paths, _litert_verdicts(paths), strict=True))


def _litert_verdicts(paths) -> list:
    """LiteRT's error building each file (None: it builds), from a fresh interpreter."""
    oracle = subprocess.run(
        [sys.executable, "-c", _ORACLE, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(oracle.stdout)


def _refusal(error: InvalidModelError, path: Path) -> str:
    message = str(error)
    assert "\n" not in message and message.startswith(str(path)), message
    return message


@pytest.mark.slow
def test_inspect_and_benchmark_refuse_what_litert_refuses(mutants):
    refused = 0
    for path, litert_error in mutants:
        # A file whose ops LiteRT cannot resolve is not damaged; every other refusal is.
        corrupt = litert_error is not None and not any(
            m in litert_error.lower() for m in ("didn't find op", "custom op", "out of range:")
        )
        try:
            report = tfslim.inspect(path, target="mcu")
        except InvalidModelError as e:
            _refusal(e, path)
            refused += 1
        else:
            assert not corrupt, f"{path.name}: inspected although LiteRT says {litert_error}"
            micro = report["micro"]
            assert micro["arena_bytes"] is None or micro["arena_bytes"] % 16 == 0
            verdict = report["targets"]["mcu"]
            assert verdict["fits"] is not bool(verdict["reasons"])
            assert all(not r.endswith("cannot run: ") for r in verdict["reasons"])
        try:
            result = tfslim.benchmark(path, runs=1, warmup=0, xnnpack=False, max_seconds=1)
        except InvalidModelError as e:
            _refusal(e, path)
        else:
            assert not corrupt
            assert result["latency"]["builtin"]["runs"] == 1
    assert 0 < refused < N_MUTANTS  # Both outcomes occur: the mutants are not all trivial.


@pytest.mark.slow
def test_cli_inspect_never_crashes_or_prints_a_traceback(mutants):
    for path, litert_error in mutants[::4]:
        proc = subprocess.run(
            [sys.executable, "-m", "tfslim.cli", "inspect", str(path), "--target", "mcu"],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
        )
        assert proc.returncode in (0, 2), (path.name, proc.returncode, proc.stderr[-500:])
        assert "Traceback" not in proc.stderr
        if proc.returncode == 2:
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and str(path) in lines[0], proc.stderr
        else:
            assert litert_error is None
            assert "TFLite Micro" in proc.stdout
