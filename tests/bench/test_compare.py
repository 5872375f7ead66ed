"""The before/after comparison: the revision is resolved and checked out for the gateway to
run from, each side goes first in every other round, and each row is the median of its rounds
with its range."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.compare import UnknownRevision, checkout, median, resolve, turns
from bench.support import ROOT, Phase


def test_a_revision_is_resolved_to_its_commit_or_refused() -> None:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert resolve("HEAD") == head
    assert resolve(head[:12]) == head
    for bad in ("no-such-branch", "HEAD~100000", "--help", ""):
        with pytest.raises(UnknownRevision):
            resolve(bad)


def test_the_checkout_holds_the_revisions_code_and_is_removed_after(tmp_path: Path) -> None:
    commit = resolve("HEAD")
    with checkout(commit, tmp_path) as tree:
        assert (tree / "gateway" / "cli.py").read_bytes() == subprocess.run(
            ["git", "show", f"{commit}:gateway/cli.py"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        listed = subprocess.run(
            ["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        assert str(tree) in listed
    assert not tree.exists()
    listed = subprocess.run(
        ["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert str(tree) not in listed


def test_each_row_is_the_median_of_its_rounds_with_its_range() -> None:
    rounds = [
        Phase({"cpu-gateway": 1.0, "cpu-workers": 0.5, "cpu-broker": 0.5, "p50": 9.0}),
        Phase({"cpu-gateway": 3.0, "cpu-workers": 0.5, "cpu-broker": 0.5, "p50": 7.0}),
        Phase(
            {"cpu-gateway": 2.0, "cpu-workers": 1.5, "cpu-broker": 0.5, "p50": 8.0},
            {"p50": "12 failed", "cpu-gateway": "5,000 jobs"},
        ),
    ]
    merged = median(rounds)
    assert merged.values["cpu-gateway"] == 2.0
    assert merged.values["p50"] == 8.0
    # The total is summed within each round (2.0, 4.0, 4.0), then its median taken.
    assert merged.values["cpu"] == 4.0
    assert merged.notes["cpu"] == "2.00–4.00 of 3"
    assert merged.notes["p50"] == "7.00–9.00 of 3; 12 failed"
    assert merged.notes["cpu-gateway"] == "1.00–3.00 of 3"  # no trouble said: the range alone


def test_a_round_that_missed_a_group_has_no_total() -> None:
    merged = median([Phase({"cpu-gateway": 1.0, "p50": 5.0})])
    assert "cpu" not in merged.values
    assert merged.values["p50"] == 5.0


def test_each_side_goes_first_in_every_other_round() -> None:
    assert turns(3) == [(1, 0), (1, 1), (2, 1), (2, 0), (3, 0), (3, 1)]
    assert turns(1) == [(1, 0), (1, 1)]
