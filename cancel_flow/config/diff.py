"""What changed between two configuration documents, one line per change in words the coach reads on the
history page: "offer 'pause': max_payments 3 → 2", "brand: color #1f6feb → #0b5cd5", "offer 'free-month'
added". Works on the stored documents (the TOML tables as JSON), so any two versions can be compared."""

from cancel_flow.config.validate import UPLOAD_PREFIX

NOTHING = "(not set)"
LONGEST = 80  # characters of a text value shown before it is cut


def show(value) -> str:
    """A value as the history writes it."""
    if value is None:
        return NOTHING
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ", ".join(show(item) for item in value) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{key} = {show(item)}" for key, item in value.items()) if value else "none"
    text = str(value)
    if text.startswith(UPLOAD_PREFIX):
        return f"an uploaded logo ({text[len(UPLOAD_PREFIX):][:8]}…)"
    return text if len(text) <= LONGEST else text[:LONGEST - 1] + "…"


def _flat(table: dict, prefix: str = "") -> dict:
    """A table's values by dotted key (`when.interval`), so nested tables compare field by field."""
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict) and value and key != "metadata":
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _fields(label: str, old: dict, new: dict) -> list[str]:
    old, new = _flat(old), _flat(new)
    lines = []
    for key in [*old, *(k for k in new if k not in old)]:
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        lines.append(f"{label}: {key} {show(before)} → {show(after)}")
    return lines


def _section(document: dict, name: str) -> dict:
    value = document.get(name)
    return value if isinstance(value, dict) else {}


def _by_id(document: dict, name: str, key: str = "id") -> dict[str, dict]:
    items = document.get(name)
    return {item[key]: item for item in items if isinstance(item, dict) and key in item} if isinstance(items, list) else {}


def _offer_lines(old: dict, new: dict) -> list[str]:
    before, after = _by_id(old, "offer"), _by_id(new, "offer")
    lines = []
    for offer_id, offer in after.items():
        if offer_id not in before:
            lines.append(f"offer '{offer_id}' added ({offer.get('kind', '?')}: {show(offer.get('title'))})")
            continue
        old_offer = dict(before[offer_id])
        new_offer = dict(offer)
        was_on, is_on = old_offer.pop("enabled", True), new_offer.pop("enabled", True)
        if was_on != is_on:
            lines.append(f"offer '{offer_id}' turned {'on' if is_on else 'off'}")
        lines += _fields(f"offer '{offer_id}'", old_offer, new_offer)
    lines += [f"offer '{offer_id}' deleted" for offer_id in before if offer_id not in after]
    kept_before = [offer_id for offer_id in before if offer_id in after]
    kept_after = [offer_id for offer_id in after if offer_id in before]
    if kept_before != kept_after:
        lines.append(f"offers' order: {', '.join(kept_before)} → {', '.join(kept_after)}")
    return lines


def _arms(experiment: dict) -> str:
    arms = experiment.get("arms") if isinstance(experiment.get("arms"), list) else []
    return "; ".join(f"{arm.get('name')} ({show(arm.get('offers')) if arm.get('offers') else 'no offer'}, "
                     f"weight {show(arm.get('weight', 1))})" for arm in arms if isinstance(arm, dict))


def _experiment_lines(old: dict, new: dict) -> list[str]:
    before, after = _by_id(old, "experiment"), _by_id(new, "experiment")
    lines = []
    for experiment_id, experiment in after.items():
        if experiment_id not in before:
            lines.append(f"experiment '{experiment_id}' added (arms: {_arms(experiment)})")
            continue
        old_experiment = {k: v for k, v in before[experiment_id].items() if k != "arms"}
        new_experiment = {k: v for k, v in experiment.items() if k != "arms"}
        if "end" in new_experiment and "end" not in old_experiment:
            lines.append(f"experiment '{experiment_id}' ended on {show(new_experiment['end'])}")
            new_experiment.pop("end")
        lines += _fields(f"experiment '{experiment_id}'", old_experiment, new_experiment)
        if _arms(before[experiment_id]) != _arms(experiment):
            lines.append(f"experiment '{experiment_id}': arms {_arms(before[experiment_id])} → {_arms(experiment)}")
    lines += [f"experiment '{experiment_id}' removed" for experiment_id in before if experiment_id not in after]
    return lines


def _step_words(step: dict) -> str:
    reasons = step.get("reasons")
    return (f"{show(step.get('days_after'))} days after, for {show(reasons) if reasons else 'every reason'}, "
            f"{'offer ' + show(step.get('offer')) if step.get('offer') else 'no offer'}")


def _steps(winback: dict) -> list[dict]:
    steps = winback.get("step")
    return [step for step in steps if isinstance(step, dict)] if isinstance(steps, list) else []


def _winback_lines(old: dict, new: dict) -> list[str]:
    """`[winback]`: its own fields, then each `[[winback.step]]` by its place in the list (what names a step)."""
    before, after = _section(old, "winback"), _section(new, "winback")
    lines = _fields("winback", {k: v for k, v in before.items() if k != "step"},
                    {k: v for k, v in after.items() if k != "step"})
    steps_before, steps_after = _steps(before), _steps(after)
    for number, step in enumerate(steps_after, start=1):
        if number > len(steps_before):
            lines.append(f"winback step {number} added ({_step_words(step)})")
        else:
            lines += _fields(f"winback step {number}", steps_before[number - 1], step)
    lines += [f"winback step {number} removed ({_step_words(step)})"
              for number, step in enumerate(steps_before, start=1) if number > len(steps_after)]
    return lines


def changes(old: dict, new: dict) -> list[str]:
    """Every difference from `old` to `new`, section by section, in the order the settings pages list them."""
    lines = []
    for name in ("brand", "rules"):
        lines += _fields(name, _section(old, name), _section(new, name))
    lines += _offer_lines(old, new)
    lines += _experiment_lines(old, new)
    for name in ("emails", "alerts"):
        lines += _fields(name, _section(old, name), _section(new, name))
    lines += _winback_lines(old, new)
    lines += _fields("compliance", _section(old, "compliance"), _section(new, "compliance"))
    known = {"brand", "rules", "offer", "experiment", "emails", "alerts", "winback", "compliance"}
    for name in sorted((set(old) | set(new)) - known):
        if old.get(name) != new.get(name):
            lines.append(f"{name}: {show(old.get(name))} → {show(new.get(name))}")
    return lines
