"""Batch scoring as the chart runs it, on a real control plane (RBAC, PodSecurity "restricted", the real Job
controller) with the node stand-in running the pods as local processes of this project.

The chart's batch Job template (rendered by the real `helm template`, batch on, MLflow external) is launched
by `modelloop score --on-kubernetes --shards 3`; the Job controller creates one pod per index with
`JOB_COMPLETION_INDEX`, each scores its range of rows of a Parquet file into its own part, and the batch's
parent MLflow run ends with a child per shard and the summed counts. Launching it again with the same batch id
replaces the parts: no row twice.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from modelloop.adapters.mlflow_batch_runs import BATCH_EXPERIMENT, TAG_BATCH_ID, TAG_BATCH_SHARD
from modelloop.cli import cli
from tests.integration.helm.conftest import CHART, run_helm
from tests.kube.control_plane import ControlPlane
from tests.kube.node import NodeStandIn
from tests.models import register_reference_model

from .test_chart_on_a_control_plane import Kube, wait_for

pytestmark = pytest.mark.control_plane


@pytest.fixture
def data() -> Iterator[Path]:
    """A folder outside /tmp (the stand-in maps a pod's /tmp to its emptyDir)."""
    folder = Path(tempfile.mkdtemp(prefix="modelloop-batch-e2e-", dir="/var/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _job_template(namespace: str, tracking_uri: str, folder: Path) -> Path:
    sets = ["batch.enabled=true", f"mlflow.external.url={tracking_uri}", "postgresql.bundled.enabled=false",
            "postgresql.external.mlflowSecret=unused", "postgresql.external.predictionLogSecret=unused",
            "image.repository=modelloop", "image.tag=e2e"]  # fmt: skip
    args = ["template", "ml", str(CHART), "--namespace", namespace, "--show-only", "templates/batch-job.yaml"]
    done = run_helm("v3", *args, *[a for s in sets for a in ("--set", s)])
    assert done.returncode == 0, done.stderr
    path = folder / "job.yaml"
    path.write_text(yaml.safe_load(done.stdout)["data"]["job.yaml"])
    return path


def test_the_indexed_job_scores_its_shards(
    plane: ControlPlane, node: NodeStandIn, mlflow_server: str, data: Path
) -> None:
    del node  # running: it runs the Job's pods
    kube = Kube(plane.kubeconfig)
    namespace = f"batch-{uuid.uuid4().hex[:6]}"
    levels = {f"pod-security.kubernetes.io/{m}": "restricted" for m in ("enforce", "audit", "warn")}
    kube.core.create_namespace({"metadata": {"name": namespace, "labels": levels}})
    model = f"e2e-batch-{uuid.uuid4().hex[:6]}"
    reg = register_reference_model(mlflow_server, model, max_iter=5)
    frame = reg.features.copy()
    frame.insert(0, "customer_id", np.arange(len(frame), dtype=np.int64))
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), data / "in.parquet", row_group_size=64)
    template = _job_template(namespace, mlflow_server, data)
    batch_id = f"e2e-{uuid.uuid4().hex[:6]}"
    selector = f"modelloop.io/batch-id={batch_id}"
    for attempt in range(2):
        done = CliRunner().invoke(cli, [
            "score", "--model", f"{model}/{reg.version}", "--input", str(data / "in.parquet"),
            "--output", str(data / "out"), "--key", "customer_id", "--shards", "3", "--batch-id", batch_id,
            "--on-kubernetes", "--job-template", str(template), "--namespace", namespace,
            "--kubeconfig", str(plane.kubeconfig), "--tracking-uri", mlflow_server,
        ])  # fmt: skip
        assert done.exit_code == 0, done.output

        def finished(expected: int = attempt + 1) -> bool:
            jobs = kube.batch.list_namespaced_job(namespace, label_selector=selector).items
            return sum(1 for j in jobs if (j.status.succeeded or 0) == 3) == expected

        wait_for(f"batch Job {attempt + 1} to complete", finished, timeout=240)
    parts = sorted((data / "out").glob("*.parquet"))
    assert [p.name for p in parts] == [f"{batch_id}-{i:05d}.parquet" for i in range(3)]
    ids = pd.concat([pd.read_parquet(p) for p in parts])["customer_id"].sort_values().tolist()
    assert ids == list(range(len(frame)))
    client = mlflow.MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name(BATCH_EXPERIMENT)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], f"tags.`{TAG_BATCH_ID}` = '{batch_id}'")
    assert sorted(r.data.tags[TAG_BATCH_SHARD] for r in runs) == ["0", "1", "2", "parent"]
    [parent] = [r for r in runs if r.data.tags[TAG_BATCH_SHARD] == "parent"]
    assert parent.info.status == "FINISHED" and parent.data.metrics["rows.scored"] == len(frame)
