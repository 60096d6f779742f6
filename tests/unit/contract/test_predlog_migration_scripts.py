"""The prediction-log migrations as shipped: one chain of revisions, packaged so a wheel carries them."""

from __future__ import annotations

import fnmatch
import io
import tomllib
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from modelloop.contract.predlog.migrate import (
    INITIAL_REVISION,
    MIGRATIONS_DIR,
    SCHEMA_LOCK_KEY,
    head_revision,
)
from modelloop.contract.predlog.tables import VERSION_TABLE

ROOT = Path(__file__).resolve().parents[3]


def test_revisions_form_one_chain_from_the_initial_one() -> None:
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    assert script.get_heads() == [head_revision()]
    chain = list(script.walk_revisions())
    assert chain[-1].revision == INITIAL_REVISION
    assert chain[-1].down_revision is None
    assert all(rev.down_revision is not None for rev in chain[:-1])


def test_the_scripts_ship_in_the_wheel() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools_cfg = pyproject["tool"]["setuptools"]
    include = setuptools_cfg["packages"]["find"]["include"]
    # the revisions are modules of these packages (found by setuptools), so the wheel carries them
    for package in (
        "modelloop.contract.predlog.migrations",
        "modelloop.contract.predlog.migrations.versions",
    ):
        assert (ROOT / package.replace(".", "/") / "__init__.py").is_file()
        assert any(fnmatch.fnmatchcase(package, pattern) for pattern in include)
    assert "script.py.mako" in setuptools_cfg["package-data"]["modelloop.contract.predlog.migrations"]
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert "alembic" in " ".join(pyproject["project"]["dependencies"])


def test_offline_sql_creates_both_tables_and_the_version_table() -> None:
    out = io.StringIO()
    config = Config(output_buffer=out)
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", "postgresql://")
    command.upgrade(config, "head", sql=True)
    sql = out.getvalue()
    for created in ("modelloop_prediction_blocks", "modelloop_feedback", VERSION_TABLE):
        assert f"CREATE TABLE {created}" in sql
    assert "CREATE TABLE alembic_version" not in sql  # MLflow's name: the two may share a database


def test_the_advisory_lock_key_is_a_postgres_bigint() -> None:
    assert 0 < SCHEMA_LOCK_KEY < 2**63
