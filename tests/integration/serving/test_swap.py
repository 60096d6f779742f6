"""Hot swap under concurrent load with zero failed calls, a version that cannot load leaving the old one
serving, and champion/challenger routing (shadow and canary) recorded in the prediction log (SQLite and
PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from modelloop.client import ModelLoadError, ScoringClient
from modelloop.contract.errors import NotFoundError
from modelloop.contract.predlog import SqlPredictionLog

from .conftest import ADMIN_TOKEN, REF, Models


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Load:
    """Threads calling predict in a loop; every outcome is kept."""

    def __init__(self, address: str, models: Models, threads: int = 4) -> None:
        self.versions: Counter[str] = Counter()
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._rows = models.rows(2)
        self._threads = [threading.Thread(target=self._run, args=(address,)) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self, address: str) -> None:
        with ScoringClient(address) as client:
            while not self._stop.is_set():
                try:
                    self.versions[client.predict(REF, self._rows).model_version] += 1
                except Exception as exc:
                    self.failures.append(exc)

    @property
    def calls(self) -> int:
        return sum(self.versions.values())

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


def test_hot_swap_under_load_fails_no_call(start_server, models: Models) -> None:  # type: ignore[no-untyped-def]
    server = start_server()
    load = Load(server.address, models)
    try:
        wait_for(lambda: load.calls > 50, timeout=30, what="load running")
        with ScoringClient(server.address, admin_token=ADMIN_TOKEN) as admin:
            status = admin.load_model(REF, models.v2.version)
            assert status.champion_version == models.v2.version
            seen = load.versions[models.v2.version]
            wait_for(lambda: load.versions[models.v2.version] > seen + 50, timeout=30, what="v2 answering")
            with pytest.raises(ModelLoadError, match=f"version {models.broken_version} cannot be loaded"):
                admin.load_model(REF, models.broken_version)
            with pytest.raises(NotFoundError):
                admin.load_model(REF, "999")
            assert [m.champion_version for m in admin.list_models()] == [models.v2.version]
            admin.load_model(REF, models.v1.version)  # and back
            seen = load.versions[models.v1.version]
            wait_for(
                lambda: load.versions[models.v1.version] > seen + 50, timeout=30, what="v1 answering again"
            )
    finally:
        load.stop()
    assert load.failures == []
    assert set(load.versions) == {models.v1.version, models.v2.version}


def _logged(url: str, model: str, expect_rows: int) -> dict[str, list]:  # type: ignore[type-arg]
    store = SqlPredictionLog(url)
    try:
        holder: dict[str, list] = {}  # type: ignore[type-arg]

        def done() -> bool:
            table = store.read_window(model, 0, time.time() + 60)
            if table is None or table.num_rows < expect_rows:
                return False
            holder.update(
                table.select(["_request_id", "_route", "_model_version", "_prediction"]).to_pydict()
            )
            return True

        wait_for(done, timeout=30, what=f"{expect_rows} logged predictions")
        return holder
    finally:
        store.close()


def test_shadow_challenger_scores_every_request_off_the_response_path(  # type: ignore[no-untyped-def]
    start_server, models: Models, fresh_postgres_url: str
) -> None:
    server = start_server(
        challenger=f"{REF}/{models.v2.version}",
        challenger_mode="shadow",
        prediction_log_url=fresh_postgres_url,
    )
    with ScoringClient(server.address, admin_token=ADMIN_TOKEN) as client:
        for i in range(20):
            result = client.predict(REF, models.rows(3), request_id=f"shadow-{i}")
            assert (result.model_version, result.route) == (models.v1.version, "champion")
        (status,) = client.list_models()
        assert (status.challenger_version, status.mode) == (models.v2.version, "shadow")
    log = _logged(fresh_postgres_url, REF, expect_rows=120)
    rows = list(zip(log["_request_id"], log["_route"], log["_model_version"], strict=True))
    assert Counter((route, version) for _, route, version in rows) == {
        ("champion", models.v1.version): 60,
        ("shadow", models.v2.version): 60,
    }
    assert {rid for rid, route, _ in rows if route == "shadow"} == {f"shadow-{i}" for i in range(20)}


def test_canary_share_answers_from_the_challenger_and_is_logged(
    start_server, models: Models, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'canary.db'}"
    server = start_server(prediction_log_url=url)
    answered: dict[str, str] = {}
    with ScoringClient(server.address, admin_token=ADMIN_TOKEN) as client:
        client.load_model(REF, models.v2.version, role="challenger", mode="canary", canary_share=0.5)
        for i in range(100):
            result = client.predict(REF, models.rows(1), request_id=f"canary-{i}")
            answered[result.request_id] = result.route
            assert result.model_version == (
                models.v2.version if result.route == "challenger" else models.v1.version
            )
        pinned = client.predict(REF, models.rows(1), version=models.v2.version, request_id="pinned")
        assert pinned.model_version == models.v2.version
        client.unload_model(REF, role="challenger")
        after = {client.predict(REF, models.rows(1)).model_version for _ in range(20)}
        assert after == {models.v1.version}
    share = sum(r == "challenger" for r in answered.values()) / len(answered)
    assert 0.25 < share < 0.75
    log = _logged(url, REF, expect_rows=121)
    logged = dict(zip(log["_request_id"], log["_route"], strict=True))
    assert all(logged[rid] == route for rid, route in answered.items())
    assert logged["pinned"] == "challenger"
