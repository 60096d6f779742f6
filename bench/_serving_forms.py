"""The request forms `bench/serving.py` times, the mixed-type model it needs, and the answer checks.

A form is one single-row `ModelInferRequest` as callers send it (issue 14):
- `matrix`: one `[1, 30]` FP64 tensor with typed contents (`fp64_contents`), the one form MLServer's
  scikit-learn runtime accepts;
- `columns-raw`: 30 `[1]` FP64 tensors in `raw_input_contents`, built by the project's own client
  (`build_request`, what `ScoringClient` sends; tritonclient users send the same);
- `columns-typed`: 30 `[1]` FP64 tensors with typed contents, what `ModelMetadata` advertises;
- `mixed`: the mixed-type model (30 numeric columns and one string column), numeric columns FP64 and the
  string column BYTES, built by the project's client (raw contents).

h2load sees HTTP statuses only: `check_answers` makes a few calls with a real gRPC client and compares the
`predict` output with the model's own `predict` on the same row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    from modelloop.client import build_request, decode_outputs
except ImportError:  # before the client moved to modelloop.client (issue 13)
    from modelloop.serving.client import build_request, decode_outputs  # type: ignore[no-redef]
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2 as pb

MATRIX, COLUMNS_RAW, COLUMNS_TYPED, MIXED = "matrix", "columns-raw", "columns-typed", "mixed"
NUMERIC_MODEL = "bench-serving"
MIXED_MODEL = "bench-mixed"
#: the string column of the mixed model and its categories (the size band of mean_radius)
BAND_COLUMN = "size_band"
#: types skops must trust to load the mixed pipeline, listed and reviewed (see ENVIRONMENT.md)
MIXED_TRUSTED_TYPES = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


@dataclass(frozen=True)
class Form:
    key: str
    label: str
    model: str  # registered model name the request is for
    request: Any  # ModelInferRequest
    row: Any  # the one-row DataFrame it carries (for the model's own answer and mlflow's REST body)

    def body(self) -> bytes:
        """The gRPC length-prefixed message (uncompressed) h2load sends."""
        message = self.request.SerializeToString()
        return b"\x00" + len(message).to_bytes(4, "big") + message


def matrix_typed(model: str, row: Any) -> Any:
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[1, row.shape[1]])
    tensor.contents.fp64_contents.extend(row.to_numpy(dtype=np.float64).reshape(-1).tolist())
    return request


def columns_typed(model: str, row: Any) -> Any:
    request = pb.ModelInferRequest(model_name=model)
    for name in row.columns:
        tensor = request.inputs.add(name=str(name), datatype="FP64", shape=[1])
        tensor.contents.fp64_contents.append(float(row[name].iloc[0]))
    return request


def forms(numeric_row: Any, mixed_row: Any) -> list[Form]:
    """The four forms, single-row each."""
    client_numeric = build_request(NUMERIC_MODEL, numeric_row)
    client_mixed = build_request(MIXED_MODEL, mixed_row)
    kinds = {t.datatype for t in client_mixed.inputs}
    if len(client_numeric.raw_input_contents) != numeric_row.shape[1] or kinds != {"FP64", "BYTES"}:
        raise RuntimeError(f"the client no longer sends raw column tensors (mixed datatypes {sorted(kinds)})")
    n = numeric_row.shape[1]
    m = NUMERIC_MODEL
    return [
        Form(MATRIX, f"one [1,{n}] FP64, typed", m, matrix_typed(m, numeric_row), numeric_row),
        Form(COLUMNS_RAW, f"{n} x [1] FP64, raw (client)", m, client_numeric, numeric_row),
        Form(COLUMNS_TYPED, f"{n} x [1] FP64, typed", m, columns_typed(m, numeric_row), numeric_row),
        Form(
            MIXED,
            f"{mixed_row.shape[1] - 1} FP64 + 1 BYTES, raw (client)",
            MIXED_MODEL,
            client_mixed,
            mixed_row,
        ),
    ]


def check_answers(target: str, form: Form, expected: Any, *, calls: int = 3) -> None:
    """`calls` real gRPC calls of the form's request; each must end OK with `predict` equal to `expected`."""
    import grpc

    from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2_grpc as pb_grpc

    request = form.request
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        for _ in range(calls):
            try:
                response = stub.ModelInfer(request, timeout=30)
            except grpc.RpcError as exc:
                raise RuntimeError(f"form {form.key}: {exc.code().name}: {exc.details()}") from None
            got = decode_outputs(response).get("predict")
            want = np.asarray(expected).reshape(-1)  # MLServer answers [rows, 1], modelloop [rows]
            if (
                got is None
                or got.size != want.size
                or not np.array_equal(got.reshape(-1).astype(want.dtype), want)
            ):
                raise RuntimeError(f"form {form.key}: answered {got!r}, the model's own answer is {want!r}")


def mixed_frame() -> tuple[Any, Any]:
    """Breast-cancer features plus one string column (the size band of mean_radius), and the target."""
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    x: pd.DataFrame = data.data
    x.columns = [c.replace(" ", "_") for c in x.columns]
    band = np.where(x["mean_radius"] < 12.0, "small", np.where(x["mean_radius"] < 15.0, "medium", "large"))
    x[BAND_COLUMN] = pd.Series(band, index=x.index, dtype=object)
    return x, data.target


def register_mixed_model(tracking_uri: str, name: str = MIXED_MODEL) -> tuple[str, Any]:
    """StandardScaler on the numeric columns and a OneHotEncoder on the string one, then a 100-tree
    HistGradientBoostingClassifier; logged with `mlflow.sklearn.log_model` (signature, skops, explicit
    trusted types) and its reference profile, registered. Returns (version, features)."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from modelloop.contract.profile import build_profile
    from modelloop.contract.registry import MODEL_ARTIFACT_PATH, REFERENCE_PROFILE_PATH, TAG_RUN_KIND

    x, y = mixed_frame()
    numeric = [c for c in x.columns if c != BAND_COLUMN]
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), [BAND_COLUMN]),
        ]
    )
    pipe = Pipeline([("prep", prep), ("model", HistGradientBoostingClassifier(max_iter=100, random_state=0))])
    pipe.fit(x, y)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(f"bench-{name}")
    with mlflow.start_run():
        mlflow.set_tag(TAG_RUN_KIND, "training")
        pred = np.asarray(pipe.predict(x))
        info = mlflow.sklearn.log_model(
            pipe,
            name=MODEL_ARTIFACT_PATH,
            signature=infer_signature(x, pred),
            input_example=x.head(3),
            serialization_format="skops",
            skops_trusted_types=MIXED_TRUSTED_TYPES,
        )
        mlflow.log_text(
            build_profile(x, pred, task="classification").model_dump_json(), REFERENCE_PROFILE_PATH
        )
    version = mlflow.register_model(info.model_uri, name).version
    return str(version), x
