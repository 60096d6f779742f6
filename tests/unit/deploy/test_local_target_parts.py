"""Pieces of the local target that need no scoring server: the port file, the serve command line and the
swap policy (over a recording client)."""

import json
from pathlib import Path

import pytest

from modelloop.contract.errors import ModelloopError
from modelloop.contract.port_file import Ports, read_port_file, write_port_file
from modelloop.deploy.bindings import parse_bindings
from modelloop.deploy.local import LocalTarget
from modelloop.deploy.local_process import ServerProcess
from modelloop.deploy.local_swap import swap
from modelloop.deploy.target import DeploymentSpec


def test_port_file_round_trip_and_what_is_no_port_file(tmp_path: Path) -> None:
    f = tmp_path / "sub" / "port"
    assert read_port_file(f) is None
    write_port_file(f, Ports(grpc=50052, metrics=9100))
    assert json.loads(f.read_text()) == {"grpc": 50052, "metrics": 9100}
    assert read_port_file(f) == Ports(grpc=50052, metrics=9100)
    write_port_file(f, Ports(grpc=50053))
    assert read_port_file(f) == Ports(grpc=50053, metrics=None)
    assert [p.name for p in f.parent.iterdir()] == ["port"]  # no temporary file left behind
    for text in ("", "50051\n", '{"metrics": 9100}', '{"grpc": "x"}', '{"grpc": true}', "[1]", "{"):
        f.write_text(text)
        assert read_port_file(f) is None, text


def test_serve_command(tmp_path: Path) -> None:
    [b] = parse_bindings(
        {"bindings": [{"name": "c", "model": "m", "challenger": {"mode": "canary", "share": 0.3}}]}
    )
    target = LocalTarget(tracking_uri="http://127.0.0.1:5000", work_dir=tmp_path)
    try:
        server = ServerProcess(
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
        server = ServerProcess(
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


class RecordingClient:
    """An `AdminClient` that records the admin calls and fails the loads of `failing` versions."""

    def __init__(self, failing: frozenset[str] = frozenset()) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.failing = failing

    def ready(self, model: str, *, version: str | None = None, timeout: float = 5.0) -> bool:
        return True

    def load_model(
        self,
        model: str,
        version: str,
        *,
        role: str = "champion",
        mode: str | None = None,
        canary_share: float | None = None,
        timeout: float = 120.0,
    ) -> object:
        self.calls.append(("load", model, version, role))
        if version in self.failing:
            raise ModelloopError(f"{model}/{version} cannot load")
        return None

    def unload_model(self, model: str, *, role: str = "champion", timeout: float = 30.0) -> None:
        self.calls.append(("unload", model, role))

    def close(self) -> None:
        self.calls.append(("close",))


def _specs() -> tuple[DeploymentSpec, DeploymentSpec]:
    [b] = parse_bindings({"bindings": [{"name": "c", "model": "m", "challenger": {"mode": "shadow"}}]})
    return DeploymentSpec(binding=b, champion_version="1"), DeploymentSpec(
        binding=b, champion_version="2", challenger_version="3"
    )


def test_swap_loads_what_changed() -> None:
    old, new = _specs()
    client = RecordingClient()
    swap(client, old, new, 5.0)
    assert client.calls == [("load", "m", "2", "champion"), ("load", "m", "3", "challenger")]
    client.calls.clear()
    swap(client, new, old, 5.0)  # back: the champion, and the challenger goes
    assert client.calls == [("load", "m", "1", "champion"), ("unload", "m", "challenger")]


def test_a_failed_challenger_puts_the_champion_back() -> None:
    old, new = _specs()
    client = RecordingClient(failing=frozenset({"3"}))
    with pytest.raises(ModelloopError):
        swap(client, old, new, 5.0)
    assert client.calls[-1] == ("load", "m", "1", "champion")
