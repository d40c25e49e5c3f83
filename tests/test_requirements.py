"""requirements.txt (what the container image installs) pins every dependency pyproject.toml asks for, at a
version it allows, with hashes: a dependency added or moved without `make lock` fails here, not in an image."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def pins() -> dict[str, str]:
    text = (ROOT / "requirements.txt").read_text()
    return {canonicalize_name(name): version
            for name, version in re.findall(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", text, flags=re.MULTILINE)}


def test_every_dependency_and_the_build_backend_is_pinned_at_an_allowed_version():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [Requirement(raw) for raw in pyproject["project"]["dependencies"] + pyproject["build-system"]["requires"]]
    pinned = pins()
    missing = [str(req) for req in wanted if canonicalize_name(req.name) not in pinned]
    assert not missing, f"requirements.txt lacks {missing}: run `make lock`"
    outside = [f"{req} (pinned {pinned[canonicalize_name(req.name)]})" for req in wanted
               if not req.specifier.contains(pinned[canonicalize_name(req.name)], prereleases=True)]
    assert not outside, f"requirements.txt pins versions pyproject.toml no longer allows: {outside}; run `make lock`"


def test_every_pin_carries_hashes():
    blocks = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / "requirements.txt").read_text())
    unhashed = [block.split()[0] for block in blocks if "==" in block.split("\n")[0] and "--hash=sha256:" not in block]
    assert len(pins()) > 20 and not unhashed, f"pins without hashes: {unhashed}"
