"""deploy: the controller that keeps the serving targets in line with the registry, and the local platform's
processes (the MLflow server among them). Sits above `training`, `serving` and `monitoring`."""
