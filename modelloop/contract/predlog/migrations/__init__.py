"""Alembic migrations of the prediction-log schema (env.py, script template, versions/), run by
`modelloop.contract.predlog.migrate.ensure_schema`. A package only so that an installed wheel carries them."""
