"""``laser compare``'s bootstrap on synthetic data: coverage on a known distribution, the paired test's
p-values with and without a real difference, joint prompt resampling, Holm by hand, seeds-only units."""

from __future__ import annotations

import numpy as np
import pytest

from laser_app.compare.bootstrap import bootstrap_mean, holm, paired_bootstrap, same_prompts, tasks_of

TASK_SHAPES = {"a": (4.0, 2.0), "b": (2.0, 4.0)}  # per-prompt accuracy ~ Beta: means 2/3 and 1/3


def experiment(rng: np.random.Generator, *, units: int = 6, worlds: int = 1, prompts: int = 150,
               seed_sd: float = 0.04, shift: float = 0.0) -> tuple[list[dict[str, np.ndarray]], list[int]]:
    """Runs of one method: each world seed draws its prompts (a difficulty each), each run seed shifts every
    prompt's chance of a right answer, and each answer is a coin flip with that chance."""
    out, groups = [], []
    for w in range(worlds):
        difficulty = {t: rng.beta(a, b, prompts) for t, (a, b) in TASK_SHAPES.items()}
        for _ in range(units // worlds):
            d = rng.normal(shift, seed_sd)
            out.append({t: (rng.random(prompts) < np.clip(p + d, 0, 1)).astype(int) for t, p in difficulty.items()})
            groups.append(w)
    return out, groups


def true_mean(seed_sd: float = 0.04) -> float:
    """The expected accuracy over prompts and seeds, by a large Monte Carlo sum."""
    rng = np.random.default_rng(123)
    shift = rng.normal(0, seed_sd, 1_000_000)
    return float(np.mean([np.clip(rng.beta(a, b, shift.size) + shift, 0, 1).mean()
                          for a, b in TASK_SHAPES.values()]))


@pytest.mark.parametrize("worlds", [1, 2])
def test_interval_covers_the_true_mean_about_95_percent_of_the_time(worlds: int) -> None:
    truth = true_mean()
    rng = np.random.default_rng(7)
    n, covered = 300, 0
    for k in range(n):
        units, groups = experiment(rng, worlds=worlds)
        iv = bootstrap_mean(units, groups, resamples=400, seed=k)
        covered += iv["low"]["mean"] <= truth <= iv["high"]["mean"]
    assert 0.91 <= covered / n <= 0.99, covered / n


def test_one_run_on_many_prompts_gives_the_binomial_interval() -> None:
    rng = np.random.default_rng(0)
    hits = (rng.random(2000) < 0.3).astype(int)
    iv = bootstrap_mean([{"t": hits}], [0], resamples=4000)
    p = hits.mean()
    half = 1.96 * np.sqrt(p * (1 - p) / hits.size)
    assert iv["estimate"]["t"] == pytest.approx(p)
    assert iv["low"]["t"] == pytest.approx(p - half, abs=0.004)
    assert iv["high"]["t"] == pytest.approx(p + half, abs=0.004)


def test_seed_only_units_stay_within_the_seeds_range_and_results_are_reproducible() -> None:
    units = [{"a": [0.60], "b": [0.20]}, {"a": [0.70], "b": [0.30]}, {"a": [0.65], "b": [0.40]}]
    iv = bootstrap_mean(units, [0, 0, 1])
    assert iv["estimate"] == pytest.approx({"a": 0.65, "b": 0.3, "mean": 0.475})
    assert 0.6 - 1e-9 <= iv["low"]["a"] < iv["high"]["a"] <= 0.7 + 1e-9
    runs, groups = experiment(np.random.default_rng(1), units=3)
    first = bootstrap_mean(runs, groups)
    assert bootstrap_mean(runs, groups) == first  # a fixed seed: the same interval every time
    assert bootstrap_mean(runs, groups, seed=1)["low"] != first["low"]


def test_paired_p_value_is_small_for_a_real_difference_and_not_for_none() -> None:
    rng = np.random.default_rng(3)
    # a real difference: the same prompts, method a right more often on each
    worse, groups = experiment(rng, units=4, prompts=200)
    better = [{t: np.maximum(h, (rng.random(h.size) < 0.15).astype(int)) for t, h in u.items()} for u in worse]
    res = paired_bootstrap(better, worse, groups)
    assert res["diff"] > 0.05 and res["low"] > 0 and res["p"] < 0.01

    # no difference: both methods draw their answers from the same chances; p is about uniform
    small = 0
    n = 200
    for k in range(n):
        difficulty = {t: rng.beta(a, b, 100) for t, (a, b) in TASK_SHAPES.items()}
        a, b = ([{t: (rng.random(p.size) < p).astype(int) for t, p in difficulty.items()} for _ in range(3)]
                for _ in range(2))
        res = paired_bootstrap(a, b, [0, 0, 0], resamples=300, seed=k)
        small += res["p"] < 0.05
        assert (res["low"] <= 0 <= res["high"]) == (res["p"] >= 0.05) or abs(res["p"] - 0.05) < 0.01
    assert small / n <= 0.1, small / n
    same = paired_bootstrap(a, a, [0, 0, 0])
    assert (same["diff"], same["low"], same["high"], same["p"]) == (0.0, 0.0, 0.0, 1.0)


def test_paired_resampling_draws_the_same_prompts_for_both_methods() -> None:
    rng = np.random.default_rng(5)
    m = 400
    a = [{"t": (rng.random(m) < 0.5).astype(int)} for _ in range(3)]
    b = [{"t": u["t"].copy()} for u in a]
    for u in b:
        u["t"][0] = 1 - u["t"][0]  # one prompt differs per run
    res = paired_bootstrap(a, b, [0, 0, 0])
    # jointly resampled, the difference moves only with how often prompt 0 is drawn: a few in m
    assert res["high"] - res["low"] <= 5 / m
    assert abs(res["diff"]) <= 1 / m


def test_holm_against_a_hand_computation() -> None:
    # m = 4 tests; sorted: 0.01 x4 = 0.04; 0.03 x3 = 0.09; 0.04 x2 = 0.08 -> 0.09 (monotone); 0.20 x1 = 0.20
    assert holm([0.04, 0.01, 0.03, None, 0.20]) == pytest.approx([0.09, 0.04, 0.09, None, 0.20])
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    assert holm([]) == [] and holm([None]) == [None] and holm([0.3]) == [0.3]
    with pytest.raises(ValueError, match="p-values must be in"):
        holm([1.5])


def test_units_must_share_tasks_and_prompts_within_a_world_seed() -> None:
    assert tasks_of([[{"b": [1], "a": [0, 1]}]], [0]) == ["a", "b"]
    with pytest.raises(ValueError, match="were not evaluated on the same prompts: task 'a' has 2 and 3"):
        tasks_of([[{"a": [1, 0]}, {"a": [1, 0, 1]}]], [0, 0])
    assert same_prompts([[{"a": [1, 0]}, {"a": [1, 0, 1]}]], [0, 1])  # other world seeds, other prompts
    with pytest.raises(ValueError, match=r"unit 1 has tasks \['b'\], expected \['a'\]"):
        tasks_of([[{"a": [1]}, {"b": [1]}]], [0, 0])
    with pytest.raises(ValueError, match="one unit per group entry"):
        paired_bootstrap([{"a": [1]}], [], [0])
    with pytest.raises(ValueError, match="resamples must be an integer >= 1, got 0"):
        bootstrap_mean([{"a": [1]}], [0], resamples=0)
    with pytest.raises(ValueError, match="level must be in"):
        bootstrap_mean([{"a": [1]}], [0], level=95)
