"""The contract suites: one suite per port, run over every implementation of it."""
