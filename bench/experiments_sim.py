"""Simulated experiments: what the decision rule of cancel_flow/experiments.py does when looked at every day.

`python -m bench.experiments_sim` (full size, a few minutes) or `--quick`. Each simulated experiment
gets sessions day by day (Poisson arrivals, each hashed-like to an arm by a fair coin, saved with
its arm's true rate); from the day every arm has its minimum sample, the rule is checked EVERY day
for a year. A/A: both arms equal; any "arm X is better" in the year is a false winner. A/B: one arm
saves 10 points more; we count runs where the better arm was named, and the worse.
tests/test_experiments.py runs smaller versions of the same functions.
"""

import argparse
import math
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass

from cancel_flow.experiments import (MIN_SESSIONS_PER_ARM, MeanPosterior, RatePosterior, decide, weeks_to_resolve,
                                     winner)

# A session that was saved keeps paying for one or two payments within 60 days, at one of a coach's prices.
PRICES = (1900, 4900, 9900)
PRICE_WEIGHTS = (0.3, 0.5, 0.2)


@dataclass(frozen=True)
class Outcome:
    day: int | None       # first day the rule named a winner (None: not within the run)
    arm: int | None       # the arm it named
    better: int | None    # the truly better arm (None: A/A)


def _poisson(rng: random.Random, mean: float) -> int:
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _value(rng: random.Random) -> int:
    price = rng.choices(PRICES, PRICE_WEIGHTS)[0]
    return price * (2 if rng.random() < 0.7 else 1)


def simulate_run(rng: random.Random, weekly: float, rates: tuple[float, float], *, metric: str = "save_rate",
                 days: int = 365, min_sessions: int = MIN_SESSIONS_PER_ARM,
                 loss_threshold: float | None = None) -> tuple[int | None, int | None]:
    """One experiment, the rule checked daily: (first day a winner is named, that arm) or (None, None)."""
    daily = weekly / 7
    saves, sessions = [0, 0], [0, 0]
    values = [Counter(), Counter()]
    for day in range(1, days + 1):
        for _ in range(_poisson(rng, daily)):
            arm = 0 if rng.random() < 0.5 else 1
            sessions[arm] += 1
            saved = rng.random() < rates[arm]
            saves[arm] += saved
            if metric == "revenue":
                values[arm][_value(rng) if saved else 0] += 1
        if sessions[0] < min_sessions or sessions[1] < min_sessions:
            continue
        if metric == "save_rate":
            posteriors = [RatePosterior(saves[0], sessions[0]), RatePosterior(saves[1], sessions[1])]
        else:
            posteriors = [MeanPosterior(values[0]), MeanPosterior(values[1])]
        threshold = loss_threshold if loss_threshold is not None else type(posteriors[0]).default_threshold(posteriors)
        found = winner(posteriors, loss_threshold=threshold, min_sessions=min_sessions)
        if found is not None:
            return day, found
    return None, None


def simulate_aa(runs: int, *, seed: int = 1, metric: str = "save_rate", days: int = 365,
                weekly: tuple[float, float] = (10, 100), rates: tuple[float, float] = (0.10, 0.40),
                min_sessions: int = MIN_SESSIONS_PER_ARM) -> list[Outcome]:
    """A/A experiments with volumes and save rates drawn uniformly from the given ranges."""
    rng = random.Random(seed)
    outcomes = []
    for _ in range(runs):
        volume, rate = rng.uniform(*weekly), rng.uniform(*rates)
        day, arm = simulate_run(rng, volume, (rate, rate), metric=metric, days=days, min_sessions=min_sessions)
        outcomes.append(Outcome(day, arm, None))
    return outcomes


def simulate_ab(runs: int, *, seed: int = 2, metric: str = "save_rate", days: int = 365, weekly: float = 30,
                control: float = 0.20, lift: float = 0.10) -> list[Outcome]:
    """A/B experiments at `weekly` sessions in all; a random one of the two arms saves `lift` more."""
    rng = random.Random(seed)
    outcomes = []
    for _ in range(runs):
        better = rng.randrange(2)
        rates = (control + lift, control) if better == 0 else (control, control + lift)
        day, arm = simulate_run(rng, weekly, rates, metric=metric, days=days)
        outcomes.append(Outcome(day, arm, better))
    return outcomes


def false_winner_rate(outcomes: list[Outcome], within_days: int = 365) -> float:
    return sum(o.day is not None and o.day <= within_days for o in outcomes) / len(outcomes)


def power(outcomes: list[Outcome], within_days: int = 365) -> float:
    """Share of runs that named the truly better arm within `within_days`."""
    return sum(o.day is not None and o.day <= within_days and o.arm == o.better for o in outcomes) / len(outcomes)


def wrong_rate(outcomes: list[Outcome], within_days: int = 365) -> float:
    return sum(o.day is not None and o.day <= within_days and o.arm != o.better for o in outcomes) / len(outcomes)


def decided_by(outcomes: list[Outcome], week: float) -> float:
    return power(outcomes, within_days=round(week * 7))


def median_weeks(outcomes: list[Outcome]) -> float | None:
    """Median weeks to a winner over all runs (runs without one count as never); None if most had none."""
    days = sorted(o.day if o.day is not None else math.inf for o in outcomes)
    middle = statistics.median(days)
    return None if math.isinf(middle) else middle / 7


def planned_weeks(weekly: float, control: float, lift: float, metric: str = "save_rate") -> int | None:
    """The planner's answer at the start of an experiment of `weekly` sessions split in two."""
    rate = control + lift / 2
    if metric == "save_rate":
        sd, difference, delay = math.sqrt(rate * (1 - rate)), lift, 0.0
    else:
        mean_value = sum(p * w for p, w in zip(PRICES, PRICE_WEIGHTS)) * 1.7
        second = sum(p * p * w for p, w in zip(PRICES, PRICE_WEIGHTS)) * (0.7 * 4 + 0.3)
        sd = math.sqrt(rate * second - (rate * mean_value) ** 2)
        difference, delay = lift * mean_value, 0.0  # values known at once in this simulation
    return weeks_to_resolve([0, 0], [weekly / 2, weekly / 2], sd, difference, delay_weeks=delay)


def simulate_aa_verdicts(runs: int, *, seed: int = 3, weeks: int = 104, weekly: tuple[float, float] = (10, 100),
                         rates: tuple[float, float] = (0.10, 0.40)) -> list[tuple[str, int | None]]:
    """A/A runs read WEEKLY with the full rule (Monte Carlo losses): first verdict and its week."""
    rng = random.Random(seed)
    verdicts = []
    for _ in range(runs):
        volume, rate = rng.uniform(*weekly), rng.uniform(*rates)
        saves, sessions = [0, 0], [0, 0]
        verdict = ("keep_running", None)
        for week in range(1, weeks + 1):
            for _ in range(_poisson(rng, volume)):
                arm = 0 if rng.random() < 0.5 else 1
                sessions[arm] += 1
                saves[arm] += rng.random() < rate
            if min(sessions) < MIN_SESSIONS_PER_ARM:
                continue
            posteriors = [RatePosterior(saves[0], sessions[0]), RatePosterior(saves[1], sessions[1])]
            found = decide(posteriors, ["a", "b"], loss_threshold=RatePosterior.default_threshold(posteriors))
            if found.kind != "keep_running":
                verdict = (found.kind, week)
                break
        verdicts.append(verdict)
    return verdicts


def _percentile_week(outcomes: list[Outcome], share: float) -> int | str:
    days = sorted(o.day for o in outcomes if o.day is not None and o.arm == o.better)
    index = math.ceil(share * len(outcomes)) - 1
    return math.ceil(days[index] / 7) if index < len(days) else "over 2 years"


def _wilson(rate: float, n: int) -> tuple[float, float]:
    z = 1.96
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _line(name: str, value: float, n: int, goal: str | None, passed: bool = True) -> None:
    low, high = _wilson(value, n)
    verdict = f"goal {goal:<8} {'PASS' if passed else 'FAIL'}" if goal else "(no goal: for information)"
    print(f"{name:<72} {value:7.2%}  (95% {low:.1%}-{high:.1%}, n={n})  {verdict}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the runs")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    aa_runs, ab_runs, verdict_runs = 10_000 // scale, 2_000 // scale, 200 // scale
    ok = True
    started = time.perf_counter()
    print("Experiments: the decision rule checked every day for a year (Poisson arrivals, two arms 50/50)")
    for metric in ("save_rate", "revenue"):
        outcomes = simulate_aa(aa_runs, seed=11, metric=metric)
        rate = false_winner_rate(outcomes)
        ok &= rate <= 0.05
        _line(f"A/A false-winner rate, {metric}, 10-100 sessions/week, rates 10-40%", rate, aa_runs, "<= 5%",
              rate <= 0.05)
    outcomes = simulate_aa(aa_runs // 5, seed=14, min_sessions=20)
    rate = false_winner_rate(outcomes)
    ok &= rate <= 0.05
    _line("A/A false-winner rate, save_rate, as above with min_sessions_per_arm = 20", rate, len(outcomes), "<= 5%",
          rate <= 0.05)
    for metric in ("save_rate", "revenue"):
        for control in (0.10, 0.20, 0.30, 0.40):
            outcomes = simulate_ab(ab_runs, seed=12, metric=metric, control=control, days=2 * 364)
            found, wrong = power(outcomes), wrong_rate(outcomes)
            # The power goal is stated for a 10-point save-rate difference; revenue is shown for information.
            goal = ">= 80%" if metric == "save_rate" else None
            ok &= wrong <= 0.01 and (goal is None or found >= 0.80)
            _line(f"A/B {metric}, 30 sessions/week, {control:.0%} vs {control + 0.1:.0%}: better arm named in a year",
                  found, ab_runs, goal, found >= 0.80)
            _line(f"A/B {metric}, 30 sessions/week, {control:.0%} vs {control + 0.1:.0%}: worse arm named in a year",
                  wrong, ab_runs, "<= 1%", wrong <= 0.01)
            weeks = median_weeks(outcomes)
            plan = planned_weeks(30, control, 0.10, metric)
            by_plan = f"by which {decided_by(outcomes, plan):.0%} had named it" if plan is not None and plan <= 104 else ""
            print(f"    median weeks to naming it {'-' if weeks is None else round(weeks, 1)}; 80% had by week "
                  f"{_percentile_week(outcomes, 0.8)}; the planner said {plan} weeks at the start, {by_plan}",
                  flush=True)
    verdicts = simulate_aa_verdicts(verdict_runs, seed=13)
    kinds = Counter(kind for kind, _ in verdicts)
    weeks = sorted(week for kind, week in verdicts if kind == "no_difference")
    print(f"A/A read weekly with the full rule, 2 years ({verdict_runs} runs): "
          f"no meaningful difference {kinds['no_difference'] / verdict_runs:.0%} "
          f"(median week {statistics.median(weeks) if weeks else '-'}), "
          f"winner {kinds['better'] / verdict_runs:.1%}, still running {kinds['keep_running'] / verdict_runs:.0%}",
          flush=True)
    print(f"{'PASS' if ok else 'FAIL'} in {time.perf_counter() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
