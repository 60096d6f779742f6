"""Every request form callers send gets the registered model's own answers over real gRPC (issue 14): one 2-D
tensor (typed, raw), one tensor per column (raw as `modelloop.client` sends it, typed as ModelMetadata
advertises it) in any order, one row and several, and the mixed-type model's numeric, integer, boolean and
string columns. Repeated calls of one structure go through the server's bulk decoder; their answers must not
change."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import mlflow
import numpy as np
import pandas as pd
import pytest

from modelloop.client import build_request, decode_outputs
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2 as pb
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2_grpc as pb_grpc

from .conftest import MIXED, REF, Models, RunningServer, mixed_frame, settings_for


@pytest.fixture(scope="module")
def stub(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    running = RunningServer(
        settings_for(
            models,
            tmp_path_factory.mktemp("forms"),
            models=[f"{REF}/{models.v1.version}", f"{MIXED}/{models.mixed_version}"],
        )
    )
    channel = grpc.insecure_channel(running.address)
    yield pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
    channel.close()
    running.stop()


def _outputs(request: pb.ModelInferRequest) -> pb.ModelInferRequest:
    request.outputs.add(name="predict")
    request.outputs.add(name="predict_proba")
    return request


def matrix(rows: pd.DataFrame, *, raw: bool) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=REF)
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=list(rows.shape))
    values = rows.to_numpy(dtype="<f8")
    if raw:
        request.raw_input_contents.append(values.tobytes())
    else:
        tensor.contents.fp64_contents.extend(values.reshape(-1).tolist())
    return _outputs(request)


def columns_typed(rows: pd.DataFrame) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=REF)
    for name in rows.columns:
        tensor = request.inputs.add(name=str(name), datatype="FP64", shape=[len(rows)])
        tensor.contents.fp64_contents.extend(rows[name].to_numpy(dtype=np.float64).tolist())
    return _outputs(request)


FORMS: dict[str, Callable[[pd.DataFrame], pb.ModelInferRequest]] = {
    "matrix-typed": lambda rows: matrix(rows, raw=False),
    "matrix-raw": lambda rows: matrix(rows, raw=True),
    "columns-raw": lambda rows: build_request(REF, rows, probabilities=True),
    "columns-typed": columns_typed,
}


def _shuffled(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    return rows[list(np.random.default_rng(seed).permutation(rows.columns))]


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_form_answers_what_the_registered_model_does(stub: Any, models: Models, form: str) -> None:
    pipe = mlflow.sklearn.load_model(f"models:/{REF}/{models.v1.version}")
    rows = models.v1.features.sample(20, random_state=11).reset_index(drop=True)
    reorder = form.startswith("columns")
    batches = [rows.iloc[[i]] for i in range(8)] + [rows.iloc[8:13], rows.iloc[13:18], rows.iloc[[18, 19]]]
    for seed, batch in enumerate(batches):
        sent = _shuffled(batch, seed % 3) if reorder else batch
        out = decode_outputs(stub.ModelInfer(FORMS[form](sent), timeout=30))
        assert np.array_equal(out["predict"], pipe.predict(batch))
        assert np.array_equal(out["predict_proba"], pipe.predict_proba(batch))  # bit for bit


def test_the_mixed_model_answers_what_it_does(stub: Any, models: Models) -> None:
    pipe = mlflow.sklearn.load_model(f"models:/{MIXED}/{models.mixed_version}")
    frame = mixed_frame(24, seed=5)
    batches = [frame.iloc[[i]] for i in range(10)] + [frame.iloc[10:16], frame.iloc[16:24]]
    for seed, batch in enumerate(batches):
        request = build_request(MIXED, _shuffled(batch, seed % 4), probabilities=True)
        out = decode_outputs(stub.ModelInfer(request, timeout=30))
        assert np.array_equal(out["predict"], pipe.predict(batch))
        assert np.array_equal(out["predict_proba"], pipe.predict_proba(batch))
