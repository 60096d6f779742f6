"""The revisions of the prediction-log schema, oldest first (Alembic ignores this file)."""
