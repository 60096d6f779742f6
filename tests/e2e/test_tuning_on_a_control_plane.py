"""A retraining with `study.workers: 3` on a real control plane (RBAC, PodSecurity "restricted", the real Job
controller) with the node stand-in running the pods as local processes of this project.

The chart's tuning Job template (ConfigMap <fullname>-retrain-job, key tuning-job.yaml; real `helm template`)
is launched by the retraining launcher (`KubernetesJobRetrainer`) for a config asking for 3 workers: the Job
controller runs 3 indexes, each a `--tune-and-finish` worker on one PostgreSQL study; one of them finishes.
The outcome: one parent run with every trial nested and one registered version. Launching the same retraining
again (same monitoring run: same study) registers nothing more.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import yaml

from modelloop.deploy.kubernetes.retrain_job import cluster_retrainer
from modelloop.monitoring.retrain import RetrainRequest
from tests.integration.helm.conftest import CHART, run_helm
from tests.kube.control_plane import ControlPlane
from tests.kube.node import NodeStandIn

from .test_chart_on_a_control_plane import Kube, wait_for

pytestmark = pytest.mark.control_plane

N_TRIALS = 9


@pytest.fixture
def data() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="modelloop-tuning-e2e-", dir="/var/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _templates(namespace: str, tracking_uri: str, folder: Path) -> Path:
    sets = ["bindings[0].name=m", "bindings[0].model=m", "monitoring.retrain=true",
            "retraining.config.model_name=m", f"mlflow.external.url={tracking_uri}",
            "postgresql.bundled.enabled=false", "postgresql.external.mlflowSecret=unused",
            "postgresql.external.predictionLogSecret=tuning-db", "image.repository=modelloop",
            "image.tag=e2e"]  # fmt: skip
    args = [
        "template",
        "ml",
        str(CHART),
        "--namespace",
        namespace,
        "--show-only",
        "templates/monitoring.yaml",
    ]
    done = run_helm("v3", *args, *[a for s in sets for a in ("--set", s)])
    assert done.returncode == 0, done.stderr
    [cm] = [
        d
        for d in yaml.safe_load_all(done.stdout)
        if d and d["metadata"]["name"] == "ml-modelloop-retrain-job"
    ]
    for key, text in cm["data"].items():
        (folder / key).write_text(text)
    return folder / "job.yaml"


def test_a_retraining_with_three_workers(
    plane: ControlPlane, node: NodeStandIn, mlflow_server: str, fresh_postgres_url: str, data: Path
) -> None:
    del node  # running: it runs the Job's pods
    kube = Kube(plane.kubeconfig)
    namespace = f"tune-{uuid.uuid4().hex[:6]}"
    levels = {f"pod-security.kubernetes.io/{m}": "restricted" for m in ("enforce", "audit", "warn")}
    kube.core.create_namespace({"metadata": {"name": namespace, "labels": levels}})
    secret = {"metadata": {"name": "tuning-db"}, "stringData": {"url": fresh_postgres_url}}
    kube.core.create_namespaced_secret(namespace, secret)
    model = f"e2e-tune-{uuid.uuid4().hex[:6]}"
    config = {
        "model_name": model,
        "dataset": {"name": "sklearn:breast_cancer"},
        "split": {"kind": "stratified"},
        "estimator": {"family": "logistic_regression"},
        "metric": {"name": "roc_auc"},
        "study": {"n_trials": N_TRIALS, "workers": 3},
        "promotion": {"policy": "auto"},
    }
    retrainer = cluster_retrainer(
        _templates(namespace, mlflow_server, data), namespace=namespace, kubeconfig=plane.kubeconfig
    )
    run_id = uuid.uuid4().hex
    request = RetrainRequest(
        model_name=model,
        model_version="1",
        training_run_id="ab" * 16,
        config_text=yaml.safe_dump(config),
        tracking_uri=mlflow_server,
        monitoring_run_id=run_id,
        cause="e2e",
    )
    for attempt in range(2):
        launch = retrainer.launch(request)
        job_name = launch.details["job"]

        def finished(name: str = job_name) -> bool:
            job = kube.batch.read_namespaced_job(name, namespace)
            return (job.status.succeeded or 0) == 3

        wait_for(f"tuning Job {attempt + 1} to complete", finished, timeout=420)
    client = mlflow.MlflowClient(mlflow_server)
    versions = client.search_model_versions(f"name = '{model}'")
    pods = kube.core.list_namespaced_pod(namespace).items
    seen = [(p.metadata.name, p.status.phase) for p in pods]
    assert len(versions) == 1, ([(v.version, v.run_id, v.creation_timestamp) for v in versions], seen)
    parent = client.get_run(versions[0].run_id)
    assert parent.info.status == "FINISHED"
    nested = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'", max_results=1000
    )
    done = [r for r in nested if r.data.tags["modelloop.trial.state"] in ("COMPLETE", "PRUNED")]
    assert len(done) == N_TRIALS
