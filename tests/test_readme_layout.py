"""README's layout section names every room of the package, and names nothing that isn't there."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Layout"):]
    return section[section.index("```") + 3:section.index("```", section.index("```") + 3)]


def test_every_module_and_package_of_the_tree_is_in_the_layout():
    block = layout_block()
    tracked = subprocess.run(["git", "ls-files", "cancel_flow", "bench"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    rooms = set()
    for path in tracked:
        parts = Path(path).parts
        if parts[0] == "cancel_flow" and len(parts) == 2 and parts[1].endswith(".py") and parts[1] not in ("__init__.py", "__main__.py"):
            rooms.add(parts[1])
        elif parts[0] == "cancel_flow" and len(parts) > 2:
            rooms.add(parts[1] + "/")
        if parts[:2] == ("cancel_flow", "web") and len(parts) == 3 and parts[2].endswith(".py") and parts[2] != "__init__.py":
            rooms.add(parts[2])
    missing = sorted(room for room in rooms if room not in block)
    assert not missing, f"README layout misses {missing}"


def test_every_file_the_layout_names_exists():
    named = set(re.findall(r"[\w]+\.py", layout_block()))
    tracked = {Path(p).name for p in subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                                    check=True).stdout.split()}
    assert not sorted(named - tracked), f"README layout names files that are not in the tree: {sorted(named - tracked)}"


def test_every_top_level_entry_bench_file_and_subpackage_module_is_named():
    """Every top-level file or folder of the tree, every file of bench/, and every module of the
    package's sub-packages is named in the layout (a module by its name without `.py`)."""
    block = layout_block()
    words = set(re.findall(r"[\w.]+", block))
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    missing = set()
    for path in tracked:
        parts = Path(path).parts
        top = parts[0]
        if top in (".gitignore", ".npmrc", "README.md"):
            continue
        if top == ".ci":
            if ".ci/run" not in block:
                missing.add(path)
        elif top not in words and top + "/" not in block:
            missing.add(top)
        if top == "bench" and parts[-1] != "__init__.py" and parts[-1] not in words and Path(path).stem not in words:
            missing.add(path)
        if top == "cancel_flow" and len(parts) == 3 and parts[2].endswith(".py") and parts[2] != "__init__.py":
            if Path(parts[2]).stem not in words and parts[2] not in words:
                missing.add(path)
    assert not missing, f"README layout does not name {sorted(missing)}"
