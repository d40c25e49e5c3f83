"""One module a scenario of `make bench`, each with `run(bench)`; bench/run.py lists them in order."""
