"""What the tests and the benchmarks both use, so neither imports the other.

- ``prefect_server``: a real ``prefect server start`` on a free loopback port (and the Prefect API queries
  the tests make of it);
- ``s3_server``: a real S3-compatible ``moto_server`` on a free loopback port;
- ``envs``: the one helper for side venvs (the baselines' ``.venv-bench``, the BI clients' venvs, the Delta readers');
- ``generate``: the deterministic article generator (the benchmark corpus, ordinary documents in the tests);
- ``writers``: the same articles as real YAML writers write them (the npm side's node script and lock file
  stay in ``tests/writers/``, where ``npm ci --prefix tests/writers`` installs them).

It imports neither ``tests`` nor ``bench`` (an import-linter contract in pyproject.toml keeps it so).
"""
