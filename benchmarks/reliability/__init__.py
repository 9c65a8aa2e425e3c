"""The reliability suite: load, faults, shutdown and soak, on loopback, with real processes.

Each scenario states what must hold, measures, and returns a :class:`Result` (its claim,
its figures, its failures). ``python -m benchmarks.reliability --scale full`` runs them all
and records the figures; ``tests/integration/test_reliability.py`` runs the same scenarios
at the small scale in CI.
"""
