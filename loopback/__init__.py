"""Real processes on loopback that the tests and the benchmarks share: the gateway itself
and the stand-ins they both start (a model registry, Redis).

It imports neither ``tests`` nor ``benchmarks``; the benchmarks never import ``tests`` (the
tests may run a benchmark's scenarios at small scale, see tests/integration/test_reliability.py).
"""
