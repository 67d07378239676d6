import itertools
import random

import pytest

from tfslim.tuning import Budget, pareto_front


def _brute_force(points, maximize, minimize):
    def better_or_equal(a, b):
        return all(a[m] >= b[m] for m in maximize) and all(a[m] <= b[m] for m in minimize)

    def strictly_better_somewhere(a, b):
        return any(a[m] > b[m] for m in maximize) or any(a[m] < b[m] for m in minimize)

    def dominates(a, b):
        return better_or_equal(a, b) and strictly_better_somewhere(a, b)

    return [
        i
        for i, p in enumerate(points)
        if not any(dominates(q, p) for j, q in enumerate(points) if j != i)
    ]


@pytest.mark.parametrize("seed", range(20))
def test_front_matches_brute_force(seed):
    rng = random.Random(seed)
    # Small integer ranges force ties and duplicate points.
    points = [
        {"quality": rng.randint(0, 4), "flash": rng.randint(0, 4), "ram": rng.randint(0, 4)}
        for _ in range(rng.randint(1, 25))
    ]
    for minimize in (["flash"], ["flash", "ram"]):
        assert pareto_front(points, maximize=["quality"], minimize=minimize) == _brute_force(
            points, ["quality"], minimize
        )


def test_front_keeps_duplicates_and_drops_dominated():
    points = [
        {"quality": 0.9, "flash": 10},
        {"quality": 0.9, "flash": 10},
        {"quality": 0.9, "flash": 11},
        {"quality": 0.5, "flash": 5},
    ]
    assert pareto_front(points, maximize=["quality"], minimize=["flash"]) == [0, 1, 3]


def test_every_front_point_is_undominated_by_construction():
    points = [{"q": q, "f": f} for q, f in itertools.product(range(3), range(3))]
    assert pareto_front(points, maximize=["q"], minimize=["f"]) == [6]  # (q=2, f=0)
    assert pareto_front([], maximize=["q"]) == []


def test_front_errors():
    with pytest.raises(ValueError, match="Expected at least one objective"):
        pareto_front([{"q": 1}], maximize=[], minimize=[])
    with pytest.raises(ValueError, match=r"points\[1\].*missing \['f'\]"):
        pareto_front([{"q": 1, "f": 2}, {"q": 1}], maximize=["q"], minimize=["f"])


def test_budget_violations_and_overshoot():
    budget = Budget(max_flash_bytes=1000, max_arena_bytes=500, max_mcu_latency_estimate_ms=2.0)
    ok = {"flash_bytes": 1000, "arena_bytes": 10, "mcu_latency_estimate_ms": 1.0}
    assert budget.violations(ok) == []
    assert budget.overshoot(ok) == 0.0
    bad = {"flash_bytes": 1500, "arena_bytes": 10, "mcu_latency_estimate_ms": {"rp2040": 3.0}}
    assert budget.violations(bad) == [
        "flash_bytes 1500 > max_flash_bytes 1000",
        "mcu_latency_estimate_ms 3.0 > max_mcu_latency_estimate_ms 2.0",
    ]
    assert budget.overshoot(bad) == pytest.approx(0.5)
    assert budget.violations({"flash_bytes": 1}) == [
        "arena_bytes not measured, max_arena_bytes 500",
        "mcu_latency_estimate_ms not measured, max_mcu_latency_estimate_ms 2.0",
    ]
    assert budget.limits() == {
        "flash_bytes": 1000,
        "arena_bytes": 500,
        "mcu_latency_estimate_ms": 2.0,
    }


def test_budget_from_target():
    budget = Budget.from_target("nano33ble", max_latency_ms=5.0)
    assert budget.max_flash_bytes == 1024 * 1024
    assert budget.max_arena_bytes == 256 * 1024
    assert budget.max_latency_ms == 5.0
    assert Budget.from_target("nano33ble", max_flash_bytes=100).max_flash_bytes == 100
    with pytest.raises(TypeError, match="Invalid keyword arguments \\['max_ram_bytes'\\]"):
        Budget.from_target("nano33ble", max_ram_bytes=1)


@pytest.mark.parametrize("value", [0, -1, float("nan"), "1", True])
def test_budget_rejects_bad_limits(value):
    with pytest.raises(ValueError, match="argument `max_latency_ms`.*Received: max_latency_ms="):
        Budget(max_latency_ms=value)


def test_public_names_and_docstring_examples():
    import doctest

    import tfslim.tuning
    from tfslim.tuning import budget, pareto, tuner

    assert set(tfslim.tuning.__all__) <= set(dir(tfslim.tuning))
    for module in (budget, pareto, tuner):
        result = doctest.testmod(module, extraglobs={"keras": __import__("keras")})
        assert result.failed == 0
    assert doctest.testmod(pareto).attempted == 2
