"""Every mutant of ``make mutants`` still applies: its search text occurs exactly once in its
file, so a change to the code it breaks is caught by the suite, not first by the mutant run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mutants.catalogue import MUTANTS, Mutant

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_the_mutant_applies_exactly_once(mutant: Mutant) -> None:
    text = (ROOT / mutant.path).read_text()
    assert text.count(mutant.search) == 1, f"{mutant.path}: {mutant.search!r}"
    assert mutant.replace != mutant.search
