"""Experiments: configuration, stable arms, the posteriors against closed forms, and the decision rule simulated.

The simulations here are the same functions bench/experiments_sim.py runs at full size
(`python -m bench.experiments_sim`): 10,000 A/A runs and 2,000 A/B runs per scenario there.
"""

import json
import math
import os
import subprocess
import sys
import tomllib
from datetime import date

import pytest

from bench.experiments_sim import (decided_by, false_winner_rate, planned_weeks, power, simulate_aa, simulate_ab,
                                   wrong_rate)
from cancel_flow.experiments import (Experiment, MeanPosterior, RatePosterior, SessionResult, analyse,
                                     analyse_experiment, assign_arm, beta_cdf, compare, decide, is_running,
                                     parse_experiments, weeks_to_resolve)
from tests.helpers import arm_tables

OFFERS = {"half-off-3-payments", "pause", "talk"}
REASONS = ["too_expensive", "unused", "other"]
SPEC_EXAMPLE = """
[[experiment]]
id = "pause-vs-discount"
start = "2026-12-01"
reasons = ["unused"]
""" + arm_tables(("discount", ["half-off-3-payments"], 50), ("holdout", [], 50))


class ConfigError(Exception):
    pass


def fail(where, message):
    raise ConfigError(f"{where}: {message}")


def parse(text: str):
    return parse_experiments(tomllib.loads(text).get("experiment"), OFFERS, fail, REASONS)


def experiment(weights=(1, 1), experiment_id="exp") -> Experiment:
    arms = arm_tables(*((f"arm{i}", [], w) for i, w in enumerate(weights)))
    return parse(f'[[experiment]]\nid = "{experiment_id}"\nstart = 2026-12-01\n{arms}')[0]


# ---------------------------------------------------------------- configuration


def test_the_spec_example_parses_with_a_holdout_and_revenue_by_default():
    [parsed] = parse(SPEC_EXAMPLE)
    assert parsed.id == "pause-vs-discount"
    assert parsed.start == date(2026, 12, 1) and parsed.end is None
    assert parsed.optimise == "revenue"
    assert parsed.reasons == ("unused",) and parsed.fits("unused") and not parsed.fits("other")
    assert [(arm.name, arm.offers, arm.weight, arm.is_holdout) for arm in parsed.arms] == [
        ("discount", ("half-off-3-payments",), 50.0, False), ("holdout", (), 50.0, True)]
    assert parsed.min_sessions_per_arm == 100 and parsed.loss_threshold is None


def test_optional_fields_and_targeting_are_kept():
    [parsed] = parse(SPEC_EXAMPLE.replace('reasons = ["unused"]', 'end = 2027-03-01\noptimise = "save_rate"\n'
                                          'loss_threshold = 0.02\nmin_sessions_per_arm = 50\n'
                                          '[experiment.when]\ninterval = ["month"]'))
    assert parsed.end == date(2027, 3, 1) and parsed.optimise == "save_rate"
    assert parsed.loss_threshold == 0.02 and parsed.min_sessions_per_arm == 50
    assert parsed.when == {"interval": ["month"]}
    assert parse("") == ()


def added(line: str) -> tuple[str, str]:
    """The change to the spec's example that adds `line` to the experiment's own fields."""
    return 'reasons = ["unused"]', f'reasons = ["unused"]\n{line}'


@pytest.mark.parametrize("change, where, message", [
    (('offers = ["half-off-3-payments"]', 'offers = ["nope"]'), " arm 'discount'", "field 'offers' names 'nope', which is not an [[offer]] id"),
    (('start = "2026-12-01"', 'start = "1 December"'), "", "field 'start' must be a date"),
    (('weight = 50\n[[experiment.arms]]', 'weight = 0\n[[experiment.arms]]'), " arm 'discount'", "field 'weight' must be a number above 0"),
    (('name = "holdout"', 'name = "discount"'), " arm 'discount'", "arm names must be unique"),
    (('reasons = ["unused"]', 'reasons = ["bored"]'), "", "field 'reasons' must list reasons from: too_expensive, unused, other"),
    (('offers = []', 'offers = "none"'), " arm 'holdout'", "field 'offers' must list offer ids ([] for a no-offer holdout)"),
    (added('optimise = "profit"'), "", "field 'optimise' must be 'revenue' or 'save_rate'"),
    (added('optimize = "revenue"'), "", "unknown field 'optimize'"),
    (added('end = 2026-11-01'), "", "field 'end' (2026-11-01) must not be before 'start'"),
    (added('loss_threshold = 1'), "", None),
    (added('optimise = "save_rate"\nloss_threshold = 1'), "", "0.01 is one percentage point"),
    (added('min_sessions_per_arm = 5'), "", "field 'min_sessions_per_arm' must be a whole number from 20"),
    (added('when = "monthly"'), " [experiment.when]", "must be a table"),
])
def test_a_bad_experiment_is_refused_naming_the_experiment_and_field(change, where, message):
    assert change[0] in SPEC_EXAMPLE
    text = SPEC_EXAMPLE.replace(*change)
    if message is None:
        assert parse(text)  # still valid: a revenue threshold is in minor units, any positive number
        return
    with pytest.raises(ConfigError) as error:
        parse(text)
    assert str(error.value).startswith(f"experiment 'pause-vs-discount'{where}: ")
    assert message in str(error.value)


def test_one_arm_a_bad_id_and_repeated_ids_are_refused():
    one_arm = SPEC_EXAMPLE.split("[[experiment.arms]]\nname = \"holdout\"")[0]
    with pytest.raises(ConfigError, match=r"^experiment 'pause-vs-discount': needs at least two \[\[experiment.arms\]\]"):
        parse(one_arm)
    with pytest.raises(ConfigError, match=r"^experiment #1: field 'id' must be"):  # named by its place until its id is known
        parse(SPEC_EXAMPLE.replace('id = "pause-vs-discount"', 'id = "Pause vs Discount"'))
    with pytest.raises(ConfigError, match=r"^experiment 'pause-vs-discount': field 'id' is used by an earlier experiment"):
        parse(SPEC_EXAMPLE + SPEC_EXAMPLE)


def test_running_from_start_through_end_inclusive():
    [parsed] = parse(SPEC_EXAMPLE.replace('reasons', 'end = "2027-01-31"\nreasons'))
    assert not is_running(parsed, date(2026, 11, 30))
    assert is_running(parsed, date(2026, 12, 1)) and is_running(parsed, date(2027, 1, 31))
    assert not is_running(parsed, date(2027, 2, 1))
    assert is_running(parse(SPEC_EXAMPLE)[0], date(2036, 1, 1))


# ---------------------------------------------------------------- arms


def test_arm_assignment_is_stable_across_processes():
    ids = [f"sub_{i:05d}" for i in range(300)]
    here = [assign_arm(experiment(), sub).name for sub in ids]
    assert here == [assign_arm(experiment(), sub).name for sub in ids]
    script = ("import json,sys; from tests.test_experiments import experiment; from cancel_flow.experiments import "
              "assign_arm; print(json.dumps([assign_arm(experiment(), s).name for s in json.load(sys.stdin)]))")
    for hash_seed in ("1", "2"):
        other = subprocess.run([sys.executable, "-c", script], input=json.dumps(ids), capture_output=True, text=True,
                               check=True, env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert json.loads(other.stdout) == here


def test_arms_follow_their_weights_over_ten_thousand_subscriptions():
    weighted = experiment(weights=(70, 20, 10))
    counts = {arm.name: 0 for arm in weighted.arms}
    for i in range(10_000):
        counts[assign_arm(weighted, f"sub_{i}").name] += 1
    expected = {"arm0": 7000, "arm1": 2000, "arm2": 1000}
    chi_square = sum((counts[name] - expected[name]) ** 2 / expected[name] for name in expected)
    assert chi_square < 13.82, counts  # 99.9th percentile of chi-square with 2 degrees of freedom


def test_two_experiments_split_the_same_subscriptions_independently():
    first, second = experiment(experiment_id="first"), experiment(experiment_id="second")
    ids = [f"sub_{i}" for i in range(4000)]
    together = sum(assign_arm(first, s).name == assign_arm(second, s).name for s in ids)
    assert abs(together / len(ids) - 0.5) < 0.03


# ---------------------------------------------------------------- posteriors


def test_save_rate_posterior_matches_the_beta_closed_forms():
    none_saved = RatePosterior(0, 9)  # Beta(1, 10): CDF 1 - (1 - x)^10
    assert none_saved.mean == pytest.approx(1 / 11)
    low, high = none_saved.interval()
    assert low == pytest.approx(1 - 0.95 ** (1 / 10), abs=1e-9)
    assert high == pytest.approx(1 - 0.05 ** (1 / 10), abs=1e-9)
    all_saved = RatePosterior(9, 9)  # Beta(10, 1): CDF x^10
    assert all_saved.interval() == pytest.approx((0.05 ** 0.1, 0.95 ** 0.1), abs=1e-9)
    one_of_two = RatePosterior(1, 2)  # Beta(2, 2): CDF 3x^2 - 2x^3, mean 1/2, variance 1/20
    assert beta_cdf(0.3, one_of_two.a, one_of_two.b) == pytest.approx(3 * 0.09 - 2 * 0.027)
    assert one_of_two.mean == 0.5 and one_of_two.variance == pytest.approx(1 / 20)
    low, high = one_of_two.interval()
    assert 3 * low ** 2 - 2 * low ** 3 == pytest.approx(0.05) and high == pytest.approx(1 - low)
    assert beta_cdf(0.37, 40.0, 90.0) + beta_cdf(0.63, 90.0, 40.0) == pytest.approx(1.0)


def test_revenue_posterior_is_the_bayesian_bootstrap_of_the_values():
    posterior = MeanPosterior.of([0, 0, 0, 100])
    assert posterior.mean == 25 and posterior.n == 4
    assert posterior.variance == pytest.approx((3 * 25 ** 2 + 75 ** 2) / (4 * 5))
    draws = posterior.draw(__import__("random").Random(1), 20_000)
    assert sum(draws) / len(draws) == pytest.approx(25, abs=0.5)
    assert sum((d - 25) ** 2 for d in draws) / len(draws) == pytest.approx(375, rel=0.05)


def _exact_p_b_beats_a(a: RatePosterior, b: RatePosterior) -> float:
    def lbeta(x, y):
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)
    return sum(math.exp(lbeta(a.a + i, a.b + b.b) - math.log(b.b + i) - lbeta(1 + i, b.b) - lbeta(a.a, a.b))
               for i in range(int(b.a)))


def _exact_loss_of_a(a: RatePosterior, b: RatePosterior, steps: int = 4000) -> float:
    """E[max(0, B - A)] = integral of f_A(x) E[(B - x)+] dx, by Simpson's rule."""
    def density(x):
        return math.exp(math.lgamma(a.a + a.b) - math.lgamma(a.a) - math.lgamma(a.b)
                        + (a.a - 1) * math.log(x) + (a.b - 1) * math.log1p(-x)) if 0 < x < 1 else 0.0
    def above(x):
        return b.mean * (1 - beta_cdf(x, b.a + 1, b.b)) - x * (1 - beta_cdf(x, b.a, b.b))
    h = 1 / steps
    return h / 3 * sum((1 if i in (0, steps) else 4 if i % 2 else 2) * density(i * h) * above(i * h)
                       for i in range(steps + 1))


def test_probability_best_and_expected_loss_match_exact_integrals_and_repeat():
    a, b = RatePosterior(3, 10), RatePosterior(6, 10)
    result = compare([a, b])
    assert result.p_best[1] == pytest.approx(_exact_p_b_beats_a(a, b), abs=0.02)
    assert sum(result.p_best) == pytest.approx(1)
    assert result.expected_loss[0] == pytest.approx(_exact_loss_of_a(a, b), rel=0.05)
    assert result.expected_loss[0] - result.expected_loss[1] == pytest.approx(b.mean - a.mean, abs=0.01)
    assert compare([a, b]) == result


# ---------------------------------------------------------------- the rule on given data


def _results(arm: str, saves: int, sessions: int, value: int = 5000) -> list[SessionResult]:
    return [SessionResult(arm, i < saves, value if i < saves else 0, i < saves, i < saves, None)
            for i in range(sessions)]


def test_too_few_sessions_keeps_running_and_says_which_arm_waits():
    report = analyse(_results("discount", 40, 120) + _results("holdout", 5, 60), arms=["discount", "holdout"],
                     optimise="save_rate")
    assert report.verdict.kind == "keep_running" and report.verdict.text == "keep running"
    assert "holdout has 60" in report.verdict.reason


def test_a_clear_difference_names_the_better_arm():
    report = analyse(_results("discount", 80, 200) + _results("holdout", 30, 200), arms=["discount", "holdout"],
                     optimise="save_rate")
    assert report.verdict.kind == "better" and report.verdict.text == "arm discount is better"
    assert report.verdict.evidence >= report.verdict.evidence_needed == 20
    discount, holdout = report.arms
    assert (discount.sessions, discount.saves, discount.save_rate.observed) == (200, 80, 0.4)
    assert discount.save_rate.mean == pytest.approx(81 / 202)
    assert discount.save_rate.low < 0.4 < discount.save_rate.high
    assert discount.save_rate.p_best > 0.99 and holdout.save_rate.expected_loss == pytest.approx(0.25, abs=0.02)
    assert discount.revenue_per_session.observed == 80 * 5000 / 200
    assert discount.active[30].observed == 0.4 and discount.active[90].n == 0


def test_equal_arms_with_plenty_of_data_show_no_meaningful_difference():
    report = analyse(_results("a", 600, 3000) + _results("b", 603, 3000), arms=["a", "b"], optimise="save_rate")
    assert report.verdict.kind == "no_difference" and report.verdict.text == "no meaningful difference"
    assert max(arm.save_rate.expected_loss for arm in report.arms) < 0.01


def test_revenue_verdict_threshold_and_report_are_deterministic_and_json_ready():
    results = _results("discount", 60, 150, value=4000) + _results("holdout", 60, 150, value=9000)
    first = analyse(results, arms=["discount", "holdout"], weekly_sessions={"discount": 10, "holdout": 10})
    second = analyse(results, arms=["discount", "holdout"], weekly_sessions={"discount": 10, "holdout": 10})
    assert json.dumps(first.to_dict()) == json.dumps(second.to_dict())
    assert first.loss_threshold == pytest.approx(0.01 * (60 * 4000 + 60 * 9000) / 120)
    assert first.verdict.kind == "better" and first.verdict.arm == "holdout"
    assert first.plan is not None and first.plan.difference == pytest.approx(10 * first.loss_threshold)


def test_an_arm_dropped_from_the_file_stays_readable_but_is_not_compared():
    results = _results("discount", 80, 200) + _results("holdout", 30, 200) + _results("old", 10, 30)
    report = analyse(results, arms=["discount", "holdout"], optimise="save_rate")
    assert [(arm.name, arm.retired) for arm in report.arms] == [("discount", False), ("holdout", False), ("old", True)]
    assert report.arms[2].save_rate.p_best is None and report.verdict.arm == "discount"
    without_file = analyse(results, optimise="save_rate")
    assert [arm.name for arm in without_file.arms] == ["discount", "holdout", "old"]
    assert without_file.verdict.kind == "keep_running"  # "old" has 30 sessions, fewer than the minimum


def test_analyse_experiment_uses_the_files_settings():
    [parsed] = parse(SPEC_EXAMPLE.replace('reasons', 'optimise = "save_rate"\nmin_sessions_per_arm = 300\nreasons'))
    report = analyse_experiment(parsed, _results("discount", 80, 200) + _results("holdout", 30, 200))
    assert report.experiment_id == "pause-vs-discount" and report.min_sessions_per_arm == 300
    assert report.verdict.kind == "keep_running" and "300 sessions" in report.verdict.reason


def test_verdicts_with_three_arms_need_the_evidence_against_each_other_arm():
    posteriors = [RatePosterior(80, 200), RatePosterior(30, 200), RatePosterior(70, 200)]
    verdict = decide(posteriors, ["a", "b", "c"], loss_threshold=0.01)
    assert verdict.evidence_needed == 60 and verdict.kind == "keep_running" and verdict.leader == "a"
    posteriors[2] = RatePosterior(20, 200)
    assert decide(posteriors, ["a", "b", "c"], loss_threshold=0.01).arm == "a"


# ---------------------------------------------------------------- the planner


def test_planner_needs_fewer_weeks_at_more_volume_and_gives_up_past_two_years():
    slow = weeks_to_resolve([0, 0], [15, 15], 0.45, 0.10)
    fast = weeks_to_resolve([0, 0], [50, 50], 0.45, 0.10)
    assert fast < slow <= 104
    assert weeks_to_resolve([400, 400], [15, 15], 0.45, 0.10) < slow
    assert weeks_to_resolve([0, 0], [1, 1], 0.45, 0.10) is None
    report = analyse(_results("a", 2, 10) + _results("b", 3, 10), arms=["a", "b"], optimise="save_rate",
                     weekly_sessions={"a": 0.5, "b": 0.5})
    assert report.plan.weeks is None and report.plan.text == "more than 2 years at the current volume"


# ---------------------------------------------------------------- the rule simulated, checked every day


def test_aa_experiments_checked_daily_for_a_year_rarely_name_a_winner():
    outcomes = simulate_aa(1000, seed=101)  # 10-100 sessions a week, save rates 10-40 %
    assert false_winner_rate(outcomes) <= 0.05


def test_aa_experiments_on_revenue_rarely_name_a_winner():
    outcomes = simulate_aa(300, seed=102, metric="revenue")
    assert false_winner_rate(outcomes) <= 0.05


def test_ab_ten_points_apart_at_30_sessions_a_week_finds_the_better_arm_within_a_year():
    outcomes = simulate_ab(400, seed=103, weekly=30, control=0.30, lift=0.10)
    assert power(outcomes) >= 0.80
    assert wrong_rate(outcomes) <= 0.005
    planned = planned_weeks(30, 0.30, 0.10)
    assert planned is not None and decided_by(outcomes, planned) >= 0.75
