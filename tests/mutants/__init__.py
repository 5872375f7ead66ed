"""Named mutants: deliberate breakages of the core guarantees, each with the tests that must
catch it. ``python -m tests.mutants`` (``make mutants``) applies each to a scratch copy of the
repository, runs only its tests there, and fails if any mutant survives.
"""
