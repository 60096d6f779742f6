"""`cli.wiring`: the one place a controller is put together, for `modelloop controller` and `modelloop up`."""

from pathlib import Path

from modelloop.cli.wiring import LocalServing, Reconciling, needs_target, wire_controller
from modelloop.deploy.bindings import parse_bindings
from modelloop.deploy.local import LocalTarget

BINDINGS = parse_bindings({"bindings": [{"name": "a", "model": "m"}]})


def test_local_target_and_webhook_receiver_as_asked(tmp_path: Path) -> None:
    assert needs_target(BINDINGS, "local") and not needs_target(BINDINGS, "kubernetes")
    wired = wire_controller(
        BINDINGS,
        tracking_uri="http://127.0.0.1:9",
        reconciling=Reconciling(poll_interval=5.0, rollout_deadline=10.0, webhook_secret="s3cret"),
        local=LocalServing(work_dir=tmp_path / "serving", prediction_log_url=None, shared=True),
    )
    try:
        assert isinstance(wired.local, LocalTarget) and wired.local.shared
        assert wired.targets == {"local": wired.local}
        assert wired.controller.webhook is not None and wired.controller.poll_interval == 5.0
        assert (tmp_path / "serving" / "admin-token").exists()
    finally:
        wired.close()


def test_nothing_asked_nothing_built(tmp_path: Path) -> None:
    wired = wire_controller(
        BINDINGS,
        tracking_uri="http://127.0.0.1:9",
        reconciling=Reconciling(poll_interval=5.0, rollout_deadline=10.0, webhook_secret=None),
    )
    assert wired.targets == {} and wired.local is None and wired.controller.webhook is None
    wired.close()
