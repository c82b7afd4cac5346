"""The tilehall load generator and benchmark (``tilehall bench``); results in docs/perf.md."""
