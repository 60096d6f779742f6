"""`modelloop bind` edits the bindings file `up` watches: whole, validated, never half-written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from modelloop.cli import cli
from modelloop.deploy.bindings import load_bindings


def bind(*args: str) -> Result:
    return CliRunner().invoke(cli, ["bind", *args])


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_adds_changes_and_removes_bindings(data_dir: Path) -> None:
    path = data_dir / "bindings.yaml"
    result = bind("bc", "--model", "breast-cancer", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("added binding bc: breast-cancer at alias production")
    assert bind("wine", "--model", "wine", "--data-dir", str(data_dir)).exit_code == 0
    result = bind(
        "bc", "--model", "breast-cancer", "--challenger-mode", "canary", "--data-dir", str(data_dir)
    )
    assert result.output.startswith("changed binding bc")
    (bc, wine) = load_bindings(path)
    assert (bc.name, bc.model, bc.alias, wine.name) == ("bc", "breast-cancer", "production", "wine")
    assert bc.challenger is not None and (bc.challenger.mode, bc.challenger.share) == ("canary", 0.1)
    # defaults are not written out: the file reads like one written by hand
    assert yaml.safe_load(path.read_text())["bindings"][1] == {"name": "wine", "model": "wine"}

    assert bind("bc", "--remove", "--data-dir", str(data_dir)).exit_code == 0
    assert [b.name for b in load_bindings(path)] == ["wine"]
    assert bind("wine", "--remove", "--data-dir", str(data_dir)).exit_code == 0
    assert not path.exists()  # no bindings: no file, as before the first `bind`
    assert not list(data_dir.iterdir())  # no temporary file left behind


def test_bad_binding_is_refused_and_nothing_written(data_dir: Path) -> None:
    result = bind("Not_A_Label", "--model", "m", "--data-dir", str(data_dir))
    assert result.exit_code == 2
    assert result.output.startswith("error: binding: name:") and "Not_A_Label" not in result.output
    assert not data_dir.exists() or not list(data_dir.iterdir())


def test_a_broken_file_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    path.write_text("bindings: [{name: a, model: m, target: mars}]\n")
    result = bind("bc", "--model", "m", "--bindings", str(path))
    assert result.exit_code == 2 and "bindings.0.target" in result.output and "mars" not in result.output
    assert path.read_text() == "bindings: [{name: a, model: m, target: mars}]\n"


def test_model_is_needed_and_remove_names_a_binding(data_dir: Path) -> None:
    result = bind("bc", "--data-dir", str(data_dir))
    assert result.exit_code == 2 and "give --model" in result.output
    result = bind("bc", "--remove", "--data-dir", str(data_dir))
    assert result.exit_code == 2 and "has no binding named bc" in result.output


def test_bindings_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "elsewhere.yaml"
    monkeypatch.setenv("MODELLOOP_BINDINGS_FILE", str(path))
    assert bind("bc", "--model", "m").exit_code == 0
    assert [b.name for b in load_bindings(path)] == ["bc"]
