"""CPU time per request of the scoring server's own path, in-process and without the network (issue 14).

For each request form of `bench/_serving_forms.py` (one `[1, 30]` FP64 tensor, typed; 30 `[1]` FP64 tensors,
raw, as `modelloop.client` sends them; the same typed, as ModelMetadata advertises; the mixed model's 30 FP64
+ 1 BYTES columns, raw), on models trained here (the reference pipeline, StandardScaler + 100-tree
HistGradientBoosting, and the mixed pipeline with a OneHotEncoder on the string column), built the way
`serving.model_host` builds them (signature -> `ModelSchema`, `sklearn_predictor` with its matrix feeder):

- `parse`: `ModelInferRequest.FromString` alone (the trivial server's work, the ceiling);
- `dec+val`: from the parsed request to the rows to predict on: `OipInputs(request).features(schema)` (the
  bulk decoder once the request's structure is known); before issue 14, `schema.validate(decode_inputs(...))`;
- `predict`: the model's predict function on the validated row (batch of 1);
- `encode`: building the response of one row (`grpc_server._response`);
- `serve`: the whole server-side call, `InferenceServicer.ModelInfer` awaited on an event loop with a real
  `InferenceCore`, `ModelHost` and `Batcher` (parse not included; predict included, in the batcher's thread),
  one call at a time (a batch of one row: mostly the model's own predict);
- `serve64`: the same with 64 calls in flight at once, as in `bench/serving.py`: batches of up to 64 rows, so
  the model's cost is shared and the per-request work of the server shows.

Times are process CPU time (`time.process_time`, every thread) per request, medians of `REPEATS` repeats of
`N` calls: the machine is shared and wall-clock throughput is noise. `--profile FORM` prints a cProfile of the
`serve64` loop for one form. Run: `.venv/bin/python bench/serving_cpu.py [--profile columns-raw]`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._serving_forms import BAND_COLUMN, MIXED_MODEL, NUMERIC_MODEL, Form, forms, mixed_frame
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2 as pb
from modelloop.serving.codec import decode_inputs

try:
    from modelloop.serving.codec import OipInputs
except ImportError:  # before issue 14: the servicer decoded every tensor, then the schema validated them
    OipInputs = None
from modelloop.serving.core import InferenceCore
from modelloop.serving.grpc_server import InferenceServicer, _requested_outputs, _response
from modelloop.serving.hosting import ModelHost
from modelloop.serving.metrics import ServingMetrics
from modelloop.serving.model_host import LoadedModel, sklearn_predictor, warm_up
from modelloop.serving.schema import ModelSchema

N = 1000
REPEATS = 5
CONCURRENCY = 64


def _pipelines() -> dict[str, tuple[Any, Any]]:
    """name -> (fitted pipeline, features) for the reference and the mixed model."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    x, y = mixed_frame()
    numeric = [c for c in x.columns if c != BAND_COLUMN]
    ref = Pipeline([("scale", StandardScaler()), ("model", HistGradientBoostingClassifier(max_iter=100))])
    ref.fit(x[numeric], y)
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), [BAND_COLUMN]),
        ]
    )
    mixed = Pipeline([("prep", prep), ("model", HistGradientBoostingClassifier(max_iter=100))])
    mixed.fit(x, y)
    return {NUMERIC_MODEL: (ref, x[numeric]), MIXED_MODEL: (mixed, x)}


def _loaded(name: str, pipe: Any, x: Any) -> LoadedModel:
    from mlflow.models import infer_signature

    categories = {BAND_COLUMN: frozenset(x[BAND_COLUMN])} if BAND_COLUMN in x.columns else {}
    schema = ModelSchema.from_signature(
        infer_signature(x, pipe.predict(x)), classes=list(pipe.classes_), categories=categories
    )
    loaded = LoadedModel(name, "1", schema, "sklearn", sklearn_predictor(pipe, schema, label=name))
    warm_up(loaded)
    return loaded


class _Context:
    def invocation_metadata(self) -> tuple[()]:
        return ()

    async def abort(self, code: Any, message: str) -> None:
        raise RuntimeError(f"{code}: {message}")


class _Server:
    serving = True


def _cpu(fn: Callable[[], None], n: int = N) -> float:
    """Median CPU microseconds per call of `fn`."""
    samples = []
    for _ in range(REPEATS):
        start = time.process_time()
        for _ in range(n):
            fn()
        samples.append((time.process_time() - start) / n * 1e6)
    return statistics.median(samples)


async def _serve_cpu(
    servicer: InferenceServicer, request: pb.ModelInferRequest, n: int, *, concurrency: int = 1
) -> float:
    """Median CPU microseconds per request of `n` calls, `concurrency` at a time (batched together)."""
    context = _Context()
    samples = []
    for _ in range(REPEATS):
        start = time.process_time()
        for _ in range(n // concurrency):
            calls = [servicer.ModelInfer(request, context) for _ in range(concurrency)]  # type: ignore[arg-type]
            await asyncio.gather(*calls)
        samples.append((time.process_time() - start) / n * 1e6)
    return statistics.median(samples)


def _rows(request: pb.ModelInferRequest, schema: ModelSchema) -> Any:
    """What the server does from a request to the rows a model predicts on."""
    if OipInputs is None:
        return schema.validate(decode_inputs(request))
    return OipInputs(request).features(schema, reject_unseen=True)


def _stages(form: Form, loaded: LoadedModel) -> dict[str, float]:
    request = form.request
    payload = request.SerializeToString()
    schema = loaded.schema
    features = _rows(request, schema)
    outputs = _requested_outputs(request)
    pred, proba = loaded.predict(features)
    from modelloop.contract.registry import Route
    from modelloop.serving.core import InferenceResult

    result = InferenceResult(form.model, "1", Route.CHAMPION, "id", pred, proba, schema.prediction_datatype)
    raw = len(request.raw_input_contents) > 0
    return {
        "parse": _cpu(lambda: pb.ModelInferRequest.FromString(payload)),
        "decode+validate": _cpu(lambda: _rows(request, schema)),
        "predict": _cpu(lambda: loaded.predict(features), n=N // 10),
        "encode": _cpu(lambda: _response(result, outputs, raw=raw)),
    }


def _check(form: Form, loaded: LoadedModel, expected: Any) -> None:
    pred, _ = loaded.predict(_rows(form.request, loaded.schema))
    if not np.array_equal(pred, expected):
        raise SystemExit(f"form {form.key}: the server's answer differs from the model's own")


async def _main(profile: str | None) -> None:
    pipes = _pipelines()
    numeric_row = pipes[NUMERIC_MODEL][1].iloc[[7]]
    mixed_row = pipes[MIXED_MODEL][1].iloc[[7]]
    # the models' own answers, before the matrix feeder drops the fitted column names
    expected = {NUMERIC_MODEL: pipes[NUMERIC_MODEL][0].predict(numeric_row)}
    expected[MIXED_MODEL] = pipes[MIXED_MODEL][0].predict(mixed_row)
    loaded = {name: _loaded(name, pipe, x) for name, (pipe, x) in pipes.items()}
    host = ModelHost(lambda name, version: loaded[name], metrics=ServingMetrics())
    for name in loaded:
        await host.load(name, "1")
    core = InferenceCore(host, metrics=host._metrics)
    servicer = InferenceServicer(core, _Server())  # type: ignore[arg-type]
    print(f"{'form':<34}{'parse':>8}{'dec+val':>9}{'predict':>9}{'encode':>8}{'serve':>9}{'serve64':>9}")
    for form in forms(numeric_row, mixed_row):
        _check(form, loaded[form.model], expected[form.model])
        stages = _stages(form, loaded[form.model])
        serve = await _serve_cpu(servicer, form.request, N // 4)
        serve64 = await _serve_cpu(servicer, form.request, N * 2, concurrency=CONCURRENCY)
        print(
            f"{form.label:<34}{stages['parse']:>8.1f}{stages['decode+validate']:>9.1f}"
            f"{stages['predict']:>9.1f}{stages['encode']:>8.1f}{serve:>9.1f}{serve64:>9.1f}"
        )
        if profile == form.key:
            profiler = cProfile.Profile()
            profiler.enable()
            await _serve_cpu(servicer, form.request, N * 2, concurrency=CONCURRENCY)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    await host.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", help="print a cProfile of the serve loop for this form key")
    args = parser.parse_args()
    asyncio.run(_main(args.profile))


if __name__ == "__main__":
    main()
