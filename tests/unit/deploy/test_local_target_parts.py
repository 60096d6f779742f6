"""Pieces of the local target that need no scoring server: the port file and the serve command line."""

from pathlib import Path

from modelloop.deploy.bindings import parse_bindings
from modelloop.deploy.local import LocalTarget, _Server, read_port_file
from modelloop.deploy.target import DeploymentSpec


def test_port_file_both_forms(tmp_path: Path) -> None:
    f = tmp_path / "port"
    assert read_port_file(f) is None
    f.write_text("")
    assert read_port_file(f) is None
    f.write_text("50051\n")
    assert read_port_file(f) == 50051
    f.write_text('{"grpc": 50052, "metrics": 9100}')
    assert read_port_file(f) == 50052
    f.write_text('{"metrics": 9100}')
    assert read_port_file(f) is None


def test_serve_command(tmp_path: Path) -> None:
    [b] = parse_bindings(
        {"bindings": [{"name": "c", "model": "m", "challenger": {"mode": "canary", "share": 0.3}}]}
    )
    target = LocalTarget(tracking_uri="http://127.0.0.1:5000", work_dir=tmp_path)
    try:
        server = _Server(
            key="c", specs={"c": DeploymentSpec(binding=b, champion_version="1", challenger_version="2")},
            port=12345, port_file=tmp_path / "c.port", log_file=tmp_path / "c.log",
        )  # fmt: skip
        cmd = target.command(server)
        assert cmd[1:6] == ["-m", "modelloop", "serve", "--model", "m/1"]
        joined = " ".join(cmd)
        assert "--challenger m/2 --challenger-mode canary --canary-share 0.3" in joined
        assert "--port 12345" in joined and f"--port-file {tmp_path / 'c.port'}" in joined
        assert "--prediction-log-url none" in joined and "--tracking-uri http://127.0.0.1:5000" in joined
        assert target.list() == [] and target.get("c") is None
    finally:
        target.close()


def test_shared_serve_command_hosts_every_champion(tmp_path: Path) -> None:
    a, b = parse_bindings(
        {
            "bindings": [
                {"name": "a", "model": "ma", "challenger": {"mode": "shadow"}},
                {"name": "b", "model": "mb"},
            ]
        }
    )
    target = LocalTarget(tracking_uri="http://127.0.0.1:5000", work_dir=tmp_path, shared=True)
    try:
        server = _Server(
            key="shared",
            specs={
                "a": DeploymentSpec(binding=a, champion_version="1", challenger_version="2"),
                "b": DeploymentSpec(binding=b, champion_version="7"),
            },
            port=12345, port_file=tmp_path / "shared.port", log_file=tmp_path / "shared.log",
        )  # fmt: skip
        cmd = target.command(server)
        assert cmd[4:8] == ["--model", "ma/1", "--model", "mb/7"]
        assert "--challenger" not in cmd  # loaded through the admin API once the server answers
    finally:
        target.close()
