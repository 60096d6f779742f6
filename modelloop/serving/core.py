"""The transport-neutral data plane: validate a request against the model's signature, route it (champion,
canary, shadow), batch it, and record what was scored in the prediction log.

Called by the gRPC adapter (`serving.grpc_server`) with the request's inputs (`schema.RequestInputs`: the
adapter's decoder, `serving.codec.OipInputs`, turns them into rows against the schema of the version that
answers, in bulk when it has seen the request's structure before); knows nothing of gRPC. Domain
errors (`contract.errors` and `serving.errors`) propagate to the adapter, which maps them to status codes in
one place (`modelloop.serving.status`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelloop.contract.errors import InvalidInputError, ModelloopError
from modelloop.contract.registry import Route

from .batcher import AfterBatch, Item
from .hosting import ModelHost
from .metrics import ServingMetrics
from .model_host import LoadedModel
from .predlog_writer import PredictionLogWriter
from .schema import Features, RequestInputs

log = logging.getLogger(__name__)

#: longest request id accepted (the feedback table keys labels by it; a longer one is refused, not cut)
MAX_REQUEST_ID = 128


@dataclass(frozen=True)
class InferenceResult:
    model: str
    version: str
    route: Route
    request_id: str
    predictions: np.ndarray[Any, Any]
    probabilities: np.ndarray[Any, Any] | None
    prediction_datatype: str


class InferenceCore:
    """Scores requests (see the module docstring)."""

    def __init__(self, host: ModelHost, *, metrics: ServingMetrics, reject_unseen: bool = True) -> None:
        self.host = host
        self.metrics = metrics
        self.reject_unseen = reject_unseen
        # request ids the server makes: a random per-process prefix and a counter, 32 hex characters like a
        # uuid4 but without reading os.urandom on every call (measured: ~5% of a request's cost)
        self._id_prefix = uuid.uuid4().hex[:16]
        self._id_counter = itertools.count()

    async def infer(
        self,
        model: str,
        inputs: RequestInputs,
        *,
        version: str = "",
        request_id: str = "",
        started: float | None = None,
    ) -> InferenceResult:
        """Score one request; `inputs` as the transport received them (decoded tensors: `TensorInputs`)."""
        try:
            if len(request_id) > MAX_REQUEST_ID:
                raise InvalidInputError(
                    f"request id has {len(request_id)} characters; at most {MAX_REQUEST_ID} are allowed"
                )
            deployment, route, shadow = self.host.route(model, version)
        except ModelloopError:
            inputs.check()  # inputs malformed whatever the model are reported first
            raise
        loaded = deployment.model
        features = inputs.features(loaded.schema, reject_unseen=self.reject_unseen)
        request_id = request_id or f"{self._id_prefix}{next(self._id_counter) & 0xFFFFFFFFFFFFFFFF:016x}"
        future = deployment.batcher.submit(features, request_id, route=route, started=started)
        if shadow is not None:
            self._shadow(model, shadow.model, shadow.batcher.submit, inputs, features, request_id, started)
        pred, proba = await future
        return InferenceResult(
            model, loaded.version, route, request_id, pred, proba, loaded.schema.prediction_datatype
        )

    def _shadow(  # noqa: PLR0917
        self,
        model: str,
        challenger: LoadedModel,
        submit: Any,
        inputs: RequestInputs,
        features: Features,
        request_id: str,
        started: float | None,
    ) -> None:
        """Also score the request with the shadow challenger, off the response path; failures are counted."""
        try:
            if challenger.schema.columns != self.host.slot(model).champion.model.schema.columns:
                features = inputs.features(challenger.schema, reject_unseen=self.reject_unseen)
            future: asyncio.Future[Any] = submit(features, request_id, route=Route.SHADOW, started=started)
        except Exception as exc:
            self.metrics.shadow_skipped.labels(model, type(exc).__name__).inc()
            return
        future.add_done_callback(_ignore_result)


def _ignore_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.debug("shadow prediction failed", exc_info=future.exception())


def prediction_recorder(writer: PredictionLogWriter) -> Any:
    """The after-batch hook factory that records every scored instance (called in the predict thread)."""

    def factory(loaded: LoadedModel) -> AfterBatch:
        names = loaded.schema.names

        def record(
            items: list[Item], features: Features, pred: np.ndarray[Any, Any], finished: float
        ) -> None:
            now = time.time()
            columns = features.as_columns(names)
            by_route: dict[Route, list[int]] = {}
            offset = 0
            bounds = []
            for i, it in enumerate(items):
                by_route.setdefault(it.route, []).append(i)
                bounds.append((offset, offset + it.features.n_rows))
                offset += it.features.n_rows
            for route, idx in by_route.items():
                if len(by_route) == 1:
                    rows: Any = slice(None)
                else:
                    rows = np.concatenate([np.arange(*bounds[i]) for i in idx])
                request_ids = [items[i].request_id for i in idx for _ in range(items[i].features.n_rows)]
                latencies = np.array(
                    [
                        (finished - items[i].started) * 1000.0
                        for i in idx
                        for _ in range(items[i].features.n_rows)
                    ]
                )
                writer.record(
                    model=loaded.name,
                    version=loaded.version,
                    route=route,
                    columns={k: v[rows] for k, v in columns.items()},
                    predictions=pred[rows],
                    request_ids=request_ids,
                    latencies_ms=latencies,
                    times=np.full(len(request_ids), now),
                )

        return record

    return factory


__all__ = ["MAX_REQUEST_ID", "InferenceCore", "InferenceResult", "prediction_recorder"]
