"""Every implemented pattern's README shows what the code does: its Try it commands, run
against the pattern in local mode, print what it shows (shared.readme). A new pattern is
covered on arrival. (The /docs examples are checked with the API contract: test_contract.py.)
"""

import re
from pathlib import Path
from typing import TypedDict

import pytest

from shared.catalogue import Entry
from shared.readme import difference, run_try_it
from tests.conftest import implemented


class PrivateFiles(TypedDict, total=False):
    """run_try_it's arguments that point a pattern's files elsewhere."""

    variables: dict[str, str]
    replace: dict[str, str]


# A compose variable naming a scheduler's cron schedule or its heartbeat file.
SCHEDULER_VARIABLE = re.compile(r"\$\{(\w+_(?:SCHEDULE|HEARTBEAT_FILE))\b")


def _private_files(entry: Entry, tmp_path: Path) -> PrivateFiles:
    """What a pattern's README run needs so as not to touch the checkout's own files, and so that
    no scheduler's tick (every 5 minutes for batch, 03:00 for the training jobs) adds a run to
    what the README shows: every schedule is set to midnight on 1 January, every heartbeat file
    to one of the test's own."""
    variables = {
        name: f"{tmp_path}/{name.lower()}" if name.endswith("_FILE") else "0 0 1 1 *"
        for name in SCHEDULER_VARIABLE.findall((entry.path / "compose.yaml").read_text())
    }
    if entry.path.name == "asynchronous":  # the sink's SQLite file
        database = f"{tmp_path}/inferences.db"
        variables["ASYNCHRONOUS_SINK_DATABASE_URL"] = f"sqlite:///{database}"
        return {"variables": variables, "replace": {".local/asynchronous/inferences.db": database}}
    return {"variables": variables}


@pytest.mark.e2e
@pytest.mark.parametrize("entry", implemented(), ids=lambda e: e.slug)
def test_readme_try_it_prints_what_it_shows(entry: Entry, tmp_path: Path) -> None:
    assert run_try_it(entry.path, **_private_files(entry, tmp_path)) > 0


@pytest.mark.parametrize(
    ("shown", "printed", "same"),
    [
        # a float's last bits, as onnxruntime's kernels on another CPU give them
        ('{"0": 3.606e-08, "7": 0.9993}', '{"0": 3.605472542744792e-08, "7": 0.99927502}', True),
        ("took 1.003179s at 2026-12-03T20:10:49Z", "took 2.5s at 2026-12-04T01:00:00Z", True),
        ('{"0": 3.606e-08}', '{"0": 3.616e-08}', False),  # a real change
        ('{"accuracy": 0.9733}', '{"accuracy": 0.9743}', False),
        ('{"rows": 100}', '{"rows": 101}', False),  # counts are exact
        ('{"label": "7", "p": 0.5}', '{"label": "1", "p": 0.5}', False),
    ],
)
def test_outputs_match_but_for_what_changes_from_run_to_run(
    shown: str, printed: str, same: bool
) -> None:
    assert (difference(shown, printed) is None) is same
