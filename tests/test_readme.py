"""The README stays true: its Quickstart is a sequence of verbatim commands, CI runs the last one, and every
registered dataset says where it comes from."""

import re
from pathlib import Path

from zoo import registry

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "README.md").read_text()


def quickstart_commands():
    section = TEXT.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_quickstart_steps_each_stand_alone_and_ci_runs_the_last():
    commands = quickstart_commands()
    assert len(commands) >= 2
    assert commands[0].startswith("python3 -m venv .venv") and "[train]" in commands[0]
    assert all(c.startswith((". .venv/bin/activate", "python3 -m venv .venv")) for c in commands)
    assert commands[-1] in (ROOT / ".ci" / "run").read_text()


def test_every_dataset_has_a_row_saying_where_it_comes_from():
    table = TEXT.split("| dataset | folder | formats read | source | models |", 1)[1].split("\n\n", 1)[0]
    rows = {line.split("|")[1].strip().strip("`"): line for line in table.splitlines() if line.startswith("| `")}
    for dataset in registry.datasets():
        assert dataset.name in rows, dataset.name
        assert dataset.source in rows[dataset.name]
