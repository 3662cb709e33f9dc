import math

import numpy as np
import pytest

from lab.compare import (
    collect,
    csv_table,
    first_step_reaching,
    log_comparison,
    markdown_table,
    mean_and_spread,
)
from lab.tracking import Tracker


def test_first_step_reaching():
    assert first_step_reaching([(30, 5.0), (10, 1.0), (20, 4.0)], 4.0) == 20
    assert first_step_reaching([(10, 1.0)], 4.0) is None
    # a moving average over 3: (1+5+6)/3 = 4 at step 30
    assert first_step_reaching([(10, 1.0), (20, 5.0), (30, 6.0), (40, 9.0)], 4.0, window=3) == 30
    assert first_step_reaching([(10, 9.0), (20, 9.0)], 4.0, window=3) is None


def test_mean_and_spread_by_hand():
    a = [(0, 0.0), (10, 10.0)]
    b = [(0, 2.0), (5, 4.0), (10, 6.0)]
    grid, mean, low, high = mean_and_spread([a, b], points=3)
    assert grid.tolist() == [0.0, 5.0, 10.0]
    # a holds 0 until step 10; b is 2, 4, 6
    assert mean.tolist() == [1.0, 2.0, 8.0]
    assert low.tolist() == [0.0, 0.0, 6.0] and high.tolist() == [2.0, 4.0, 10.0]


def synthetic_store(store):
    tracker = Tracker(store, "exp")
    finals = {"ours": [500.0, 480.0, 460.0], "sb3": [300.0, 500.0]}
    for agent, values in finals.items():
        for seed, final in enumerate(values):
            t = Tracker(store, "exp")
            t.start({}, {"agent": agent, "env": "CartPole-v1", "seed": str(seed), "group": "g"})
            for step in range(0, 10_001, 250):
                # episodes return 0 until step 5,000, then the seed's final value
                t.logger.log({"train/episode_return": final if step >= 5000 else 0.0}, step)
                if step % 1000 == 0:
                    t.logger.log({"eval/return_mean": final * step / 10_000,
                                  "time/steps_per_sec": 1000.0 * (2 if agent == "ours" else 1)},
                                 step)
            t.finish()
    other = Tracker(store, "exp")
    other.start({}, {"agent": "ours", "env": "CartPole-v1", "group": "elsewhere"})
    other.finish()
    return tracker


def test_collect_summarises_each_agent_over_seeds(store, tmp_path):
    tracker = synthetic_store(store)
    rows, curves = collect(tracker.client, tracker.experiment_id, "g", "eval/return_mean",
                           "train/episode_return", None)
    by_agent = {r.agent: r for r in rows}
    assert set(by_agent) == {"ours", "sb3"}
    ours, sb3 = by_agent["ours"], by_agent["sb3"]
    assert ours.seeds == 3 and ours.final_mean == pytest.approx(480.0)
    assert ours.final_std == pytest.approx(np.std([500, 480, 460]))
    # CartPole-v1's reward_threshold is 475, over a moving average of 20 episodes. Seed 500:
    # 19 x 500 / 20 = 475 at step 5,000 + 18 * 250 = 9,500; seed 480 needs all 20 values
    # (step 9,750); 460 never. Median of 9,500 and 9,750:
    assert ours.reached == 2 and ours.steps_to_threshold == 9_625
    assert sb3.reached == 1 and sb3.steps_per_sec == 1000.0 and ours.steps_per_sec == 2000.0
    assert len(curves[("ours", "CartPole-v1")]) == 3
    assert not math.isnan(ours.wall_s)

    run_id = log_comparison(Tracker(store, "exp"), rows, curves, "eval/return_mean",
                            "train/episode_return", "g")
    names = {f.path for f in tracker.client.list_artifacts(run_id)}
    assert names == {"comparison.md", "curves.png"}
    # 3 seeds: every bootstrap resample's mean lies in [460, 500] and the all-460 and
    # all-500 resamples each have probability 1/27 > 2.5%, so the 95% interval is the range;
    # IQM of 3 values cuts int(0.75) = 0, so it is the mean; the median of (9,500, 9,750)
    # resamples to 9,500, 9,625 or 9,750.
    assert ("| ours | CartPole-v1 | 3 | 480.0 [460.0, 500.0] | 480.0 [460.0, 500.0] | "
            "9,625 [9,500, 9,750] (2/3) |") in markdown_table(rows)
    table = csv_table(rows).splitlines()
    assert table[0].startswith("agent,env,seeds,final_mean,final_mean_low95")
    assert table[1].startswith("ours,CartPole-v1,3,480.0,460.0,500.0,")
    # the comparison run itself is never compared
    rows_again, _ = collect(tracker.client, tracker.experiment_id, None, "eval/return_mean",
                            "train/episode_return", None)
    assert {r.seeds for r in rows_again if r.agent == "ours"} == {4}


def test_iqm_and_bootstrap_by_hand():
    from lab.stats import bootstrap_band, bootstrap_ci, iqm

    assert iqm([8, 1, 7, 2, 6, 3, 5, 4]) == 4.5  # drops 1, 2 and 7, 8
    assert iqm([100, 1, 2, 3, -50]) == 2.0  # drops the outliers
    assert bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0, 3.0)
    assert bootstrap_ci([7.0]) == (7.0, 7.0, 7.0)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    # a large normal sample: the interval is close to mean +- 1.96 sigma / sqrt(n)
    x = np.random.default_rng(1).normal(10.0, 2.0, size=400)
    mean, low, high = bootstrap_ci(x)
    half = 1.96 * x.std() / math.sqrt(x.size)
    assert mean == pytest.approx(x.mean())
    assert low == pytest.approx(mean - half, abs=0.1 * half)
    assert high == pytest.approx(mean + half, abs=0.1 * half)
    data = np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]])
    m, lo, hi = bootstrap_band(data)
    assert np.allclose(m, [1.0, 2.0, 3.0])
    assert np.allclose(lo, [0.0, 1.0, 2.0]) and np.allclose(hi, [2.0, 3.0, 4.0])
