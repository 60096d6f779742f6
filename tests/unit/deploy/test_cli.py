"""`modelloop controller` refuses bad input with one clear line and exit code 2."""

from pathlib import Path

from click.testing import CliRunner

from modelloop.cli import cli


def test_bad_bindings_file(tmp_path: Path) -> None:
    bad = tmp_path / "bindings.yaml"
    bad.write_text("bindings:\n  - {name: a, model: m, target: mars, replicas: 0}\n")
    result = CliRunner().invoke(cli, ["controller", "--bindings", str(bad), "--once"])
    assert result.exit_code == 2
    assert "bindings.0.target" in result.output and "bindings.0.replicas" in result.output
    assert "mars" not in result.output


def test_missing_secret_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["controller", "--bindings", str(tmp_path / "b.yaml"), "--webhook-secret-file", str(tmp_path / "s")],
    )
    assert result.exit_code == 2 and "cannot read webhook secret file" in result.output
