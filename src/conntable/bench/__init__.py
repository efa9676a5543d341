"""Side-by-side benchmarks of conntable against the registries servers use today.

``python -m conntable bench`` runs them and prints one table per workload;
``benchmarks/`` in the repository runs the same cases under pytest-benchmark.

Layout, one job per module:

* :mod:`.clocks` -- the simulated clock and the virtual-time asyncio loop;
* :mod:`.baselines`, :mod:`.loop_baselines` -- the registries written the way
  servers write them today;
* :mod:`.subjects` -- every implementation behind one small interface;
* :mod:`.traffic`, :mod:`.history` -- connection ids, random activity, and
  the past a table is built from;
* :mod:`.timing` -- the best-of-N harness;
* :mod:`.workloads` -- touch, churn, sweep, mixed, memory, wake-ups;
* :mod:`.runner`, :mod:`.report`, :mod:`.plot`, :mod:`.progress` -- the command.
"""
