"""Experiments (`[[experiment]]` in offers.toml): arms, stable assignment, Bayesian read-out and a peeking-proof rule.

Pure: no I/O, standard library only. The flow asks `assign_arm` which arm a subscription is in; the
dashboard, the API and the CSV give `analyse` one `SessionResult` per counted session and show the
`ExperimentReport` it returns.

The statistics, per arm:
- rates (save rate, still active at 30/60/90 days): Beta(1 + successes, 1 + failures) posterior, i.e. a
  uniform Beta(1, 1) prior; 90 % equal-tailed credible intervals from the exact Beta quantiles;
- revenue kept per session: the Bayesian bootstrap (Rubin 1981): the posterior of the mean is
  sum(w_i * v_i) with Dirichlet(1, ..., 1) weights over the sessions. It assumes nothing about the
  shape of the values (mostly zeros, a few prices), and its mean and variance have closed forms;
- P(arm is best) and the expected loss of choosing each arm, E[max_j theta_j - theta_arm], by Monte
  Carlo from those posteriors with a seeded generator: the same data always give the same figures.

The decision rule (`decide`), for the optimised metric, once every arm has `min_sessions_per_arm`
sessions with a known outcome:
- "arm X is better" when X leads every other arm with a Bayes factor of at least pairs / alpha
  (alpha = 5 %), against a normal prior on the difference whose sd is 0.25 per-session standard
  deviations, AND the expected loss of choosing X is below `loss_threshold`;
- "no meaningful difference" when choosing any arm has an expected loss below `loss_threshold`;
- otherwise "keep running".
Under no true difference that Bayes factor (a mixture likelihood ratio, Robbins 1970; the
mixture sequential test of Johari et al. 2017) is a martingale, so by Ville's inequality the chance
that it EVER reaches 1 / alpha is at most alpha, however often it is looked at: checking every day
does not raise the false-winner rate. The normal approximation of the posteriors it relies on is
why a minimum sample is asked for; bench/experiments_sim.py measures the rates actually reached.
"""

import hashlib
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Callable, Iterable, Mapping, NoReturn, Sequence

OPTIMISE = ("revenue", "save_rate")
ALPHA = 0.05
# Prior sd of a true difference, in per-session standard deviations (a 10-point save-rate
# difference at 25 % is 0.23 of them); the boundary is flat around this choice (z of 3.0-3.2).
PRIOR_EFFECT_SD = 0.25
MIN_SESSIONS_PER_ARM = 100
# One save in a hundred sessions. For revenue the default is the same in money: a hundredth of the
# mean value of a session that kept any.
RATE_LOSS_THRESHOLD = 0.01
DRAWS = 4000
SEED = 20261125
# Beyond this many distinct values per arm the Bayesian bootstrap is drawn from its normal limit
# (same mean and variance): by then there are hundreds of sessions and the draws would cost seconds.
EXACT_BOOTSTRAP_GROUPS = 64
PLAN_HORIZON_WEEKS = 104
PLAN_POWER = 0.8
REVENUE_DELAY_WEEKS = 60 / 7
ACTIVE_DAYS = (30, 60, 90)

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Arm:
    name: str
    offers: tuple[str, ...]
    weight: float = 1.0

    @property
    def is_holdout(self) -> bool:
        return not self.offers


@dataclass(frozen=True)
class Experiment:
    id: str
    start: date
    arms: tuple[Arm, ...]
    end: date | None = None
    optimise: str = "revenue"
    reasons: tuple[str, ...] = ()
    when: Mapping = field(default_factory=dict, hash=False, compare=False)
    loss_threshold: float | None = None
    min_sessions_per_arm: int = MIN_SESSIONS_PER_ARM

    def arm(self, name: str) -> Arm | None:
        return next((arm for arm in self.arms if arm.name == name), None)

    def fits(self, reason: str) -> bool:
        return not self.reasons or reason in self.reasons


Fail = Callable[[str, str], NoReturn]


def parse_experiments(raw, offer_ids: Iterable[str], fail: Fail,
                      reasons: Iterable[str] | None = None) -> tuple[Experiment, ...]:
    """The `[[experiment]]` list of offers.toml (None when absent), checked field by field; errors go to `fail(where, message)`."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        _stop(fail, "[[experiment]]", "experiments are written as [[experiment]] tables")
    known_offers = set(offer_ids)
    known_reasons = None if reasons is None else list(reasons)
    experiments, seen = [], set()
    for index, entry in enumerate(raw, start=1):
        experiment = _experiment(entry, index, known_offers, known_reasons, fail)
        if experiment.id in seen:
            _stop(fail, f"experiment '{experiment.id}'", "field 'id' is used by an earlier experiment; ids must be unique")
        seen.add(experiment.id)
        experiments.append(experiment)
    return tuple(experiments)


def _stop(fail: Fail, where: str, message: str) -> NoReturn:
    fail(where, message)
    raise ValueError(f"{where}: {message}")  # in case the callback returned


def _named_table(raw, where: str, field: str, fail: Fail) -> str:
    """The table's name in `field`; until it is known, `where` names the table by its place."""
    if not isinstance(raw, dict):
        _stop(fail, where, "must be a table")
    name = raw.get(field)
    if not isinstance(name, str) or not _NAME.match(name):
        _stop(fail, where, f"field '{field}' must be 1-64 lowercase letters, digits, '-' or '_'")
    return name


def _experiment(raw, index: int, known_offers: set[str], known_reasons, fail: Fail) -> Experiment:
    experiment_id = _named_table(raw, f"experiment #{index}", "id", fail)
    where = f"experiment '{experiment_id}'"
    allowed = {"id", "start", "end", "optimise", "reasons", "when", "arms",
               "loss_threshold", "min_sessions_per_arm"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        _stop(fail, where, f"unknown field '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")
    start = _date(raw, "start", where, fail, required=True)
    end = _date(raw, "end", where, fail, required=False)
    if end is not None and end < start:
        _stop(fail, where, f"field 'end' ({end}) must not be before 'start' ({start})")
    optimise = raw.get("optimise", "revenue")
    if optimise not in OPTIMISE:
        _stop(fail, where, f"field 'optimise' must be 'revenue' or 'save_rate', not {optimise!r}")
    reasons = raw.get("reasons", [])
    if (not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons)
            or (known_reasons is not None and any(r not in known_reasons for r in reasons))):
        choices = f" from: {', '.join(known_reasons)}" if known_reasons is not None else ""
        _stop(fail, where, f"field 'reasons' must list reasons{choices}")
    when = raw.get("when", {})
    if not isinstance(when, dict):
        _stop(fail, f"{where} [experiment.when]", "must be a table")
    arms = _arms(raw.get("arms"), where, known_offers, fail)
    threshold = raw.get("loss_threshold")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or threshold <= 0:
            _stop(fail, where, "field 'loss_threshold' must be a number above 0")
        if optimise == "save_rate" and threshold >= 1:
            _stop(fail, where, "field 'loss_threshold' is a fraction of sessions when optimising save_rate "
                               f"(0.01 is one percentage point), so it must be below 1, not {threshold!r}")
        threshold = float(threshold)
    min_sessions = raw.get("min_sessions_per_arm", MIN_SESSIONS_PER_ARM)
    if isinstance(min_sessions, bool) or not isinstance(min_sessions, int) or not 20 <= min_sessions <= 1_000_000:
        _stop(fail, where, "field 'min_sessions_per_arm' must be a whole number from 20 to 1000000 "
                           "(the rule's normal approximation needs a few dozen sessions per arm)")
    return Experiment(id=experiment_id, start=start, end=end, optimise=optimise, reasons=tuple(reasons),
                      when=dict(when), arms=arms, loss_threshold=threshold, min_sessions_per_arm=min_sessions)


def _date(raw: dict, key: str, where: str, fail: Fail, required: bool) -> date | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    elif isinstance(value, date) and not isinstance(value, datetime):
        return value
    _stop(fail, where, f"field '{key}' must be a date like \"2026-12-01\", not {value!r}")


def _arms(raw, where: str, known_offers: set[str], fail: Fail) -> tuple[Arm, ...]:
    if not isinstance(raw, list) or len(raw) < 2:
        _stop(fail, where, "needs at least two [[experiment.arms]] tables")
    arms, names = [], set()
    for index, entry in enumerate(raw, start=1):
        name = _named_table(entry, f"{where} arm #{index}", "name", fail)
        arm_where = f"{where} arm '{name}'"
        if name in names:
            _stop(fail, arm_where, "field 'name' is used by an earlier arm; arm names must be unique")
        names.add(name)
        unknown = sorted(set(entry) - {"name", "offers", "weight"})
        if unknown:
            _stop(fail, arm_where, f"unknown field '{unknown[0]}' (allowed: name, offers, weight)")
        offers = entry.get("offers")
        if not isinstance(offers, list) or not all(isinstance(offer, str) for offer in offers):
            _stop(fail, arm_where, "field 'offers' must list offer ids ([] for a no-offer holdout)")
        missing = [offer for offer in offers if offer not in known_offers]
        if missing:
            _stop(fail, arm_where, f"field 'offers' names '{missing[0]}', which is not an [[offer]] id")
        if len(set(offers)) != len(offers):
            _stop(fail, arm_where, "field 'offers' lists an offer twice")
        weight = entry.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            _stop(fail, arm_where, "field 'weight' must be a number above 0")
        arms.append(Arm(name=name, offers=tuple(offers), weight=float(weight)))
    return tuple(arms)


def assign_arm(experiment: Experiment, subscription_id: str) -> Arm:
    """The subscription's arm: sha256 of experiment and subscription, read as a uniform number, cut by the weights."""
    digest = hashlib.sha256(f"{experiment.id}\x00{subscription_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(arm.weight for arm in experiment.arms)
    for arm in experiment.arms:
        point -= arm.weight
        if point < 0:
            return arm
    return experiment.arms[-1]


def is_running(experiment: Experiment, day: date) -> bool:
    """From `start` through `end` (both days included)."""
    return experiment.start <= day and (experiment.end is None or day <= experiment.end)


# ---------------------------------------------------------------- posteriors


def beta_cdf(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function I_x(a, b) (continued fraction, Numerical Recipes 6.4)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((a - 1 + m2) * (a + m2)),
                          -(a + m) * (a + b + m) * x / ((a + m2) * (a + 1 + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def beta_quantile(q: float, a: float, b: float) -> float:
    low, high = 0.0, 1.0
    for _ in range(100):
        middle = (low + high) / 2
        if beta_cdf(middle, a, b) < q:
            low = middle
        else:
            high = middle
        if high - low < 1e-12:
            break
    return (low + high) / 2


class RatePosterior:
    """Beta(1 + successes, 1 + trials - successes): a rate after a uniform prior."""

    def __init__(self, successes: int, trials: int):
        if not 0 <= successes <= trials:
            raise ValueError("successes must be between 0 and trials")
        self.successes, self.n = successes, trials
        self.a, self.b = 1.0 + successes, 1.0 + trials - successes
        total = self.a + self.b
        self.mean = self.a / total
        self.variance = self.a * self.b / (total * total * (total + 1))

    @property
    def observed(self) -> float | None:
        return self.successes / self.n if self.n else None

    def interval(self, mass: float = 0.9, draws: list[float] | None = None) -> tuple[float, float]:
        tail = (1 - mass) / 2
        return beta_quantile(tail, self.a, self.b), beta_quantile(1 - tail, self.a, self.b)

    def draw(self, rng: random.Random, size: int) -> list[float]:
        return [rng.betavariate(self.a, self.b) for _ in range(size)]

    @staticmethod
    def pooled_sd(posteriors: Sequence["RatePosterior"]) -> float:
        rate = (1 + sum(p.successes for p in posteriors)) / (2 + sum(p.n for p in posteriors))
        return math.sqrt(rate * (1 - rate))

    @staticmethod
    def default_threshold(posteriors: Sequence["RatePosterior"]) -> float:
        return RATE_LOSS_THRESHOLD


class MeanPosterior:
    """The Bayesian bootstrap posterior of a mean per session, from the values' counts ({value: sessions})."""

    def __init__(self, counts: Mapping[float, int]):
        self.counts = {value: count for value, count in counts.items() if count > 0}
        self.n = sum(self.counts.values())
        self.total = sum(value * count for value, count in self.counts.items())
        self.mean = self.total / self.n if self.n else 0.0
        squares = sum(count * (value - self.mean) ** 2 for value, count in self.counts.items())
        self.squares = squares
        # Var(sum w_i v_i) for Dirichlet(1, ..., 1) weights: sum (v_i - mean)^2 / (n (n + 1)).
        self.variance = squares / (self.n * (self.n + 1)) if self.n else math.inf
        self.nonzero = sum(count for value, count in self.counts.items() if value != 0)
        self.nonzero_abs = sum(abs(value) * count for value, count in self.counts.items())

    @classmethod
    def of(cls, values: Iterable[float]) -> "MeanPosterior":
        return cls(Counter(values))

    @property
    def observed(self) -> float | None:
        return self.mean if self.n else None

    def draw(self, rng: random.Random, size: int) -> list[float]:
        if self.n == 0:
            raise ValueError("no sessions to draw from")
        if len(self.counts) > EXACT_BOOTSTRAP_GROUPS:
            sd = math.sqrt(self.variance)
            return [rng.gauss(self.mean, sd) for _ in range(size)]
        # Dirichlet weights summed over a group of c equal values are Gamma(c) / total.
        values, counts = list(self.counts), list(self.counts.values())
        gamma = rng.gammavariate
        out = []
        for _ in range(size):
            weights = [gamma(count, 1.0) for count in counts]
            out.append(sum(w * v for w, v in zip(weights, values)) / sum(weights))
        return out

    def interval(self, mass: float = 0.9, draws: list[float] | None = None) -> tuple[float, float]:
        if self.n == 0:
            return (math.nan, math.nan)
        tail = (1 - mass) / 2
        if draws is None:
            draws = self.draw(random.Random(SEED), DRAWS)
        ordered = sorted(draws)
        return _quantile(ordered, tail), _quantile(ordered, 1 - tail)

    @staticmethod
    def pooled_sd(posteriors: Sequence["MeanPosterior"]) -> float:
        n = sum(p.n for p in posteriors)
        if n == 0:
            return 0.0
        mean = sum(p.total for p in posteriors) / n
        squares = sum(p.squares + p.n * (p.mean - mean) ** 2 for p in posteriors)
        return math.sqrt(squares / n)

    @staticmethod
    def default_threshold(posteriors: Sequence["MeanPosterior"]) -> float:
        nonzero = sum(p.nonzero for p in posteriors)
        if not nonzero:
            return 0.0
        return RATE_LOSS_THRESHOLD * sum(p.nonzero_abs for p in posteriors) / nonzero


Posterior = RatePosterior | MeanPosterior


def _quantile(ordered: list[float], q: float) -> float:
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Comparison:
    p_best: tuple[float, ...]
    expected_loss: tuple[float, ...]
    draws: tuple[tuple[float, ...], ...]


def compare(posteriors: Sequence[Posterior], *, draws: int = DRAWS, seed: int | str = SEED) -> Comparison:
    """P(each arm is best) and the expected loss of choosing it, by seeded Monte Carlo: same data, same figures."""
    rng = random.Random(seed)
    samples = [p.draw(rng, draws) for p in posteriors]
    wins = [0.0] * len(posteriors)
    losses = [0.0] * len(posteriors)
    for row in zip(*samples):
        best = max(row)
        leaders = [i for i, value in enumerate(row) if value == best]
        for i in leaders:
            wins[i] += 1 / len(leaders)
        for i, value in enumerate(row):
            losses[i] += best - value
    return Comparison(p_best=tuple(w / draws for w in wins), expected_loss=tuple(l / draws for l in losses),
                      draws=tuple(tuple(s) for s in samples))


# ---------------------------------------------------------------- the decision rule


def log_bayes_factor(difference: float, variance: float, prior_sd: float) -> float:
    """log of the mixture likelihood ratio for a difference ~ N(delta, variance) with delta ~ N(0, prior_sd^2), against delta = 0."""
    if variance <= 0:
        return math.inf if difference != 0 else 0.0
    ratio = prior_sd * prior_sd / variance
    return -0.5 * math.log1p(ratio) + 0.5 * (difference * difference / variance) * ratio / (1 + ratio)


def evidence_needed(arms: int, alpha: float = ALPHA) -> float:
    """The Bayes factor a leader needs against each other arm: 1 / alpha, split over every pair of arms."""
    return arms * (arms - 1) / 2 / alpha


@dataclass(frozen=True)
class Verdict:
    kind: str               # "keep_running" | "better" | "no_difference"
    text: str               # "keep running" | "arm X is better" | "no meaningful difference"
    reason: str
    arm: str | None = None  # the better arm
    leader: str | None = None
    evidence: float | None = None  # the leader's smallest Bayes factor against another arm
    evidence_needed: float | None = None


def _leader_evidence(posteriors: Sequence[Posterior]) -> tuple[int, float, float]:
    """The arm with the highest posterior mean, its smallest log Bayes factor against the others, and a bound on its expected loss."""
    lead = max(range(len(posteriors)), key=lambda i: posteriors[i].mean)
    prior_sd = PRIOR_EFFECT_SD * type(posteriors[0]).pooled_sd(posteriors)
    weakest, bound = math.inf, 0.0
    for j, other in enumerate(posteriors):
        if j == lead:
            continue
        difference = posteriors[lead].mean - other.mean
        variance = posteriors[lead].variance + other.variance
        weakest = min(weakest, log_bayes_factor(difference, variance, prior_sd) if difference > 0 else -math.inf)
        # E[max(0, D)] <= (sqrt(E[D]^2 + Var D) + E[D]) / 2 for any D; here D = other - lead.
        bound += (math.sqrt(difference * difference + variance) - difference) / 2
    return lead, weakest, bound


def winner(posteriors: Sequence[Posterior], *, loss_threshold: float, min_sessions: int = MIN_SESSIONS_PER_ARM,
           alpha: float = ALPHA, comparison: Comparison | Callable[[], Comparison] | None = None) -> int | None:
    """The index of the arm the rule calls better, or None. Cheap unless the evidence is already there."""
    if len(posteriors) < 2 or any(p.n < max(min_sessions, 1) for p in posteriors):
        return None
    lead, weakest, bound = _leader_evidence(posteriors)
    if weakest < math.log(evidence_needed(len(posteriors), alpha)):
        return None
    if bound < loss_threshold:
        return lead
    if comparison is None:
        comparison = compare(posteriors)
    elif callable(comparison):
        comparison = comparison()
    return lead if comparison.expected_loss[lead] < loss_threshold else None


def decide(posteriors: Sequence[Posterior], names: Sequence[str], *, loss_threshold: float,
           min_sessions: int = MIN_SESSIONS_PER_ARM, alpha: float = ALPHA, unit: str = "rate",
           comparison: Comparison | Callable[[], Comparison] | None = None) -> Verdict:
    """"keep running", "arm X is better" or "no meaningful difference" for the optimised metric."""
    needed = evidence_needed(len(posteriors), alpha)
    if len(posteriors) < 2:
        return Verdict("keep_running", "keep running", "an experiment needs at least two arms")
    fewest = min(range(len(posteriors)), key=lambda i: posteriors[i].n)
    if posteriors[fewest].n < max(min_sessions, 1):
        return Verdict("keep_running", "keep running",
                       f"waiting for {min_sessions} sessions with a known outcome in every arm "
                       f"({names[fewest]} has {posteriors[fewest].n})", evidence_needed=needed)
    cached: list[Comparison] = []

    def comparison_now() -> Comparison:
        if not cached:
            cached.append(comparison() if callable(comparison) else comparison or compare(posteriors))
        return cached[0]

    lead, weakest, _ = _leader_evidence(posteriors)
    evidence = math.exp(min(weakest, 700.0))
    found = winner(posteriors, loss_threshold=loss_threshold, min_sessions=min_sessions, alpha=alpha,
                   comparison=comparison_now)
    show = _percentage_points if unit == "rate" else _amount
    if found is not None:
        loss = comparison_now().expected_loss[found]
        return Verdict("better", f"arm {names[found]} is better",
                       f"{names[found]} leads every other arm with a Bayes factor of {_factor(evidence)} "
                       f"(at least {needed:g} needed) and choosing it loses {show(loss)} in expectation, "
                       f"below the threshold of {show(loss_threshold)}",
                       arm=names[found], leader=names[lead], evidence=evidence, evidence_needed=needed)
    losses = comparison_now().expected_loss
    if max(losses) < loss_threshold:
        return Verdict("no_difference", "no meaningful difference",
                       f"whichever arm is kept, the expected loss is below {show(loss_threshold)} "
                       f"(largest: {show(max(losses))})",
                       leader=names[lead], evidence=evidence, evidence_needed=needed)
    return Verdict("keep_running", "keep running",
                   f"{names[lead]} leads with a Bayes factor of {_factor(evidence)} (at least {needed:g} needed); "
                   f"smallest expected loss {show(min(losses))}, threshold {show(loss_threshold)}",
                   leader=names[lead], evidence=evidence, evidence_needed=needed)


def _percentage_points(value: float) -> str:
    points = f"{value * 100:.2g}"
    return f"{points} percentage point{'' if points == '1' else 's'}"


def _amount(value: float) -> str:
    return f"{value:.4g} (minor units per session)"


def _factor(value: float) -> str:
    return f"{value:.3g}" if value < 1e6 else "over a million"


# ---------------------------------------------------------------- the planner


def weeks_to_resolve(sessions: Sequence[float], weekly: Sequence[float], per_session_sd: float, difference: float, *,
                     min_sessions: int = MIN_SESSIONS_PER_ARM, alpha: float = ALPHA, power: float = PLAN_POWER,
                     pending: Sequence[float] | None = None, delay_weeks: float = 0.0,
                     horizon_weeks: int = PLAN_HORIZON_WEEKS, paths: int = 1000, seed: int = SEED) -> int | None:
    """Whole weeks from now until the rule would name the better arm with probability `power`, were the arms `difference` apart.

    A quick seeded simulation of what the rule sees: the estimated difference between the two arms
    with the least information, as a Brownian motion with that drift in information time (the
    normal approximation the rule itself relies on), against the same Bayes-factor boundary, from the
    sessions already in to those `weekly` volumes add. It steps a week at a time; the rule looks
    daily, which Siegmund's correction for discrete monitoring (1985: a boundary looked at every
    step of information d behaves like a continuous one raised by 0.5826 * sqrt(d)) turns into a
    lower boundary for the weekly steps. `pending` sessions
    (outcome not known yet) become known over `delay_weeks` (revenue: 60 days), and new sessions
    count `delay_weeks` after they arrive. None: not within `horizon_weeks` at this volume.
    """
    arms = len(sessions)
    if arms < 2 or difference <= 0 or per_session_sd <= 0:
        return None
    pending = pending or [0.0] * arms
    variance = per_session_sd ** 2
    prior_variance = (PRIOR_EFFECT_SD * per_session_sd) ** 2
    needed = 2 * math.log(evidence_needed(arms, alpha))

    def known(i: int, week: float) -> float:
        matured = 1.0 if delay_weeks <= 0 else min(1.0, week / delay_weeks)
        return sessions[i] + pending[i] * matured + weekly[i] * max(0.0, week - delay_weeks)

    information, boundary = [], []
    def pair_information(counts: list[float]) -> float:
        return min(1 / (variance / counts[i] + variance / counts[j]) for i in range(arms) for j in range(i + 1, arms))

    information, boundary = [], []
    for week in range(horizon_weeks + 1):
        counts = [known(i, week) for i in range(arms)]
        if min(counts) <= 0:
            information.append(0.0)
            boundary.append(math.inf)
            continue
        now = pair_information(counts)
        ratio = now * prior_variance
        limit = math.inf
        if min(counts) >= min_sessions:
            limit = math.sqrt((1 + 1 / ratio) * (math.log1p(ratio) + needed)) * math.sqrt(now)
            step = now - (information[-1] if information else 0.0)
            day = pair_information([c + w / 7 for c, w in zip(counts, weekly)]) - now
            limit -= 0.5826 * (math.sqrt(max(step, 0.0)) - math.sqrt(max(day, 0.0)))
        information.append(now)
        boundary.append(limit)
    rng = random.Random(seed)
    crossings = []
    for _ in range(paths):
        total, before = 0.0, 0.0
        for week, (now, limit) in enumerate(zip(information, boundary)):
            step = now - before
            if step > 0:
                total += difference * step + math.sqrt(step) * rng.gauss(0.0, 1.0)
                before = now
            if total >= limit:
                crossings.append(week)
                break
    needed_paths = math.ceil(power * paths)
    if len(crossings) < needed_paths:
        return None
    return sorted(crossings)[needed_paths - 1]


# ---------------------------------------------------------------- the report


@dataclass(frozen=True)
class SessionResult:
    """One counted session of an experiment (per subscription: its last decision), as the dashboard knows it.

    saved: True saved, False canceled, None no decision yet (left out of the save rate);
    value: revenue kept at 60 days net of the offer's cost, in minor units; None until 60 days have passed;
    active_30/60/90: the subscription was still active that many days after the session; None until then.
    """

    arm: str
    saved: bool | None = None
    value: float | None = None
    active_30: bool | None = None
    active_60: bool | None = None
    active_90: bool | None = None


@dataclass(frozen=True)
class Estimate:
    n: int                    # sessions the figure is measured on
    observed: float | None    # the plain ratio or average
    mean: float | None        # posterior mean
    low: float | None         # 90 % credible interval
    high: float | None
    p_best: float | None = None
    expected_loss: float | None = None


@dataclass(frozen=True)
class ArmReport:
    name: str
    retired: bool             # in the history but no longer in the offers file: shown, not compared
    sessions: int
    saves: int
    save_rate: Estimate
    revenue_per_session: Estimate
    active: Mapping[int, Estimate] = field(hash=False, compare=False)  # {30: …, 60: …, 90: …}


@dataclass(frozen=True)
class Plan:
    difference: float
    weeks: int | None         # None: more than PLAN_HORIZON_WEEKS at the current volume

    @property
    def text(self) -> str:
        if self.weeks is None:
            return "more than 2 years at the current volume"
        return "enough data already" if self.weeks == 0 else f"about {self.weeks} more week{'s' * (self.weeks != 1)}"


@dataclass(frozen=True)
class ExperimentReport:
    experiment_id: str
    optimise: str
    loss_threshold: float
    min_sessions_per_arm: int
    arms: tuple[ArmReport, ...]
    verdict: Verdict
    plan: Plan | None
    rule: str

    def to_dict(self) -> dict:
        def estimate(e: Estimate) -> dict:
            return {key: _finite(getattr(e, key)) for key in
                    ("n", "observed", "mean", "low", "high", "p_best", "expected_loss")}
        return {
            "experiment": self.experiment_id,
            "optimise": self.optimise,
            "loss_threshold": self.loss_threshold,
            "min_sessions_per_arm": self.min_sessions_per_arm,
            "rule": self.rule,
            "verdict": {"kind": self.verdict.kind, "text": self.verdict.text, "reason": self.verdict.reason,
                        "arm": self.verdict.arm, "leader": self.verdict.leader,
                        "evidence": _finite(self.verdict.evidence), "evidence_needed": self.verdict.evidence_needed},
            "plan": None if self.plan is None else {"difference": self.plan.difference, "weeks": self.plan.weeks,
                                                    "text": self.plan.text},
            "arms": [{"name": arm.name, "retired": arm.retired, "sessions": arm.sessions, "saves": arm.saves,
                      "save_rate": estimate(arm.save_rate), "revenue_per_session": estimate(arm.revenue_per_session),
                      **{f"active_{days}": estimate(arm.active[days]) for days in ACTIVE_DAYS}}
                     for arm in self.arms],
        }


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def rule_text(optimise: str, loss_threshold: float, min_sessions: int, arms: int, alpha: float = ALPHA) -> str:
    unit = _percentage_points(loss_threshold) if optimise == "save_rate" else _amount(loss_threshold)
    metric = "save rate" if optimise == "save_rate" else "revenue kept per session at 60 days"
    return (f"On {metric}, once every arm has {min_sessions} sessions with a known outcome: an arm is better when it "
            f"leads every other arm with a Bayes factor of at least {evidence_needed(arms, alpha):g} and choosing it "
            f"loses less than {unit} in expectation; no meaningful difference when choosing any arm loses less than "
            f"that. The Bayes factor keeps the chance of ever naming a winner among equal arms under "
            f"{alpha:.0%}, however often this page is looked at.")


def analyse(results: Iterable[SessionResult], *, arms: Sequence[str] = (), experiment_id: str = "",
            optimise: str = "revenue", loss_threshold: float | None = None,
            min_sessions_per_arm: int = MIN_SESSIONS_PER_ARM, weekly_sessions: Mapping[str, float] | None = None,
            plan_difference: float | None = None, draws: int = DRAWS, seed: int = SEED) -> ExperimentReport:
    """Per-arm figures, posteriors, P(best), expected losses, the verdict and (given weekly volumes) the planner line.

    `arms`: the experiment's arm names in file order; arms seen only in `results` are listed after
    them as retired. `weekly_sessions`: new sessions per arm per week lately (e.g. the last 4 weeks / 4).
    `plan_difference`: in the optimised unit; default 10 percentage points, or for revenue the same
    in money (a tenth of the mean value of a session that kept any).
    """
    if optimise not in OPTIMISE:
        raise ValueError(f"optimise must be one of {OPTIMISE}")
    by_arm: dict[str, list[SessionResult]] = {name: [] for name in arms}
    for result in results:
        by_arm.setdefault(result.arm, []).append(result)
    names = list(by_arm)
    live = [name for name in names if not arms or name in arms]
    rates = {name: RatePosterior(sum(r.saved is True for r in rs), sum(r.saved is not None for r in rs))
             for name, rs in by_arm.items()}
    values = {name: MeanPosterior.of(r.value for r in rs if r.value is not None) for name, rs in by_arm.items()}
    live_rates = [rates[name] for name in live]
    live_values = [values[name] for name in live]
    rate_comparison = compare(live_rates, draws=draws, seed=f"{seed}:save_rate") if len(live) >= 2 else None
    value_comparison = (compare(live_values, draws=draws, seed=f"{seed}:revenue")
                        if len(live) >= 2 and all(v.n for v in live_values) else None)

    posteriors = live_rates if optimise == "save_rate" else live_values
    kind = RatePosterior if optimise == "save_rate" else MeanPosterior
    threshold = loss_threshold if loss_threshold is not None else kind.default_threshold(posteriors)
    comparison = rate_comparison if optimise == "save_rate" else value_comparison
    verdict = decide(posteriors, live, loss_threshold=threshold, min_sessions=min_sessions_per_arm,
                     unit="rate" if optimise == "save_rate" else "amount", comparison=comparison)

    reports = []
    for name in names:
        index = live.index(name) if name in live else None
        rs = by_arm[name]

        def pick(c: Comparison | None, attribute: str):
            return None if c is None or index is None else getattr(c, attribute)[index]

        rate = rates[name]
        low, high = rate.interval()
        save_rate = Estimate(rate.n, rate.observed, rate.mean, low, high,
                             pick(rate_comparison, "p_best"), pick(rate_comparison, "expected_loss"))
        value = values[name]
        if value.n:
            sample = pick(value_comparison, "draws")
            v_low, v_high = value.interval(draws=list(sample) if sample else value.draw(random.Random(seed), draws))
            revenue = Estimate(value.n, value.observed, value.mean, v_low, v_high,
                               pick(value_comparison, "p_best"), pick(value_comparison, "expected_loss"))
        else:
            revenue = Estimate(0, None, None, None, None)
        active = {}
        for days in ACTIVE_DAYS:
            flags = [getattr(r, f"active_{days}") for r in rs]
            posterior = RatePosterior(sum(f is True for f in flags), sum(f is not None for f in flags))
            a_low, a_high = posterior.interval()
            active[days] = Estimate(posterior.n, posterior.observed, posterior.mean, a_low, a_high)
        reports.append(ArmReport(name=name, retired=index is None, sessions=len(rs),
                                 saves=sum(r.saved is True for r in rs), save_rate=save_rate,
                                 revenue_per_session=revenue, active=active))

    plan = None
    if weekly_sessions is not None and len(live) >= 2:
        if optimise == "save_rate":
            difference = plan_difference if plan_difference is not None else 0.10
            sd, delay = RatePosterior.pooled_sd(live_rates), 0.0
        else:
            difference = plan_difference if plan_difference is not None else 10 * MeanPosterior.default_threshold(live_values)
            sd, delay = MeanPosterior.pooled_sd(live_values), REVENUE_DELAY_WEEKS
        counts = [p.n for p in posteriors]
        pending = [max(0, len(by_arm[name]) - p.n) for name, p in zip(live, posteriors)]
        weeks = weeks_to_resolve(counts, [weekly_sessions.get(name, 0.0) for name in live], sd, difference,
                                 min_sessions=min_sessions_per_arm, pending=pending, delay_weeks=delay)
        plan = Plan(difference=difference, weeks=weeks)
    return ExperimentReport(experiment_id=experiment_id, optimise=optimise, loss_threshold=threshold,
                            min_sessions_per_arm=min_sessions_per_arm, arms=tuple(reports), verdict=verdict, plan=plan,
                            rule=rule_text(optimise, threshold, min_sessions_per_arm, max(len(live), 2)))


def analyse_experiment(experiment: Experiment, results: Iterable[SessionResult], **options) -> ExperimentReport:
    """`analyse` with the experiment's own arms, metric, threshold and minimum sample."""
    return analyse(results, arms=[arm.name for arm in experiment.arms], experiment_id=experiment.id,
                   optimise=experiment.optimise, loss_threshold=experiment.loss_threshold,
                   min_sessions_per_arm=experiment.min_sessions_per_arm, **options)
