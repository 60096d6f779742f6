"""Operational limits and signals of a real scoring server: the Prometheus metric families the issue names
(with no label series minted from caller-supplied strings), the concurrency limit (RESOURCE_EXHAUSTED, the
calls already in flight unharmed), connections closed at `max_connection_age_ms` so clients spread over new
replicas, and request ids longer than the feedback table's key refused."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelloop.client import ScoringClient, build_request
from modelloop.contract.errors import UnavailableError
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2 as pb
from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from modelloop.contract.wire.names import REQUEST_ID_HEADER
from modelloop.serving.core import InferenceCore
from modelloop.serving.grpc_server import ScoringServer, ServerOptions
from modelloop.serving.hosting import BatchingConfig, ModelHost
from modelloop.serving.metrics import ServingMetrics
from modelloop.serving.model_host import LoadedModel
from modelloop.serving.schema import Column, Features, ModelSchema

from .conftest import REF, Models

Samples = list[tuple[str, dict[str, str], float]]


def _scrape(port: int | None) -> Samples:
    assert port is not None
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return [
        (s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples
    ]


def _value(samples: Samples, name: str, **labels: str) -> float:
    found = [v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items())]
    assert found, f"no sample {name} {labels}"
    return sum(found)


def test_metrics_cover_requests_latency_batches_queue_versions_and_log(start_server, models: Models) -> None:  # type: ignore[no-untyped-def]
    server = start_server()
    version = models.v1.version
    with ScoringClient(server.address) as client:
        for _ in range(3):
            client.predict(REF, models.rows(2))
        for bogus in ("bogus-version-1", "bogus-version-2"):
            with pytest.raises(Exception, match="no version"):
                client.predict(REF, models.rows(1), version=bogus)
        with pytest.raises(Exception, match="missing required"):
            client.predict(REF, models.rows(1).drop(columns=["mean_area"]))
        with pytest.raises(Exception, match="not served here"):
            client.predict("caller-chosen-name", models.rows(1))
    samples = _scrape(server.metrics_port)
    requests = "modelloop_serving_requests_total"
    assert _value(samples, requests, model=REF, version=version, code="OK") == 3
    assert _value(samples, requests, model=REF, version="", code="NOT_FOUND") == 2
    assert _value(samples, requests, model=REF, version="", code="INVALID_ARGUMENT") == 1
    assert _value(samples, requests, model="unknown", version="", code="NOT_FOUND") == 1
    minted = {v for _, labels, _ in samples for v in labels.values()}
    assert not minted & {"bogus-version-1", "bogus-version-2", "caller-chosen-name"}
    assert _value(samples, "modelloop_serving_request_latency_seconds_count", model=REF) == 6
    assert _value(samples, "modelloop_serving_batch_size_sum", model=REF, version=version) == 6  # rows
    assert _value(samples, "modelloop_serving_queue_depth", model=REF, version=version) == 0
    assert _value(samples, "modelloop_serving_model_info", model=REF, version=version, role="champion") == 1
    for name in (
        "modelloop_serving_predlog_buffered_records",
        "modelloop_serving_predlog_dropped_records_total",
        "modelloop_serving_predlog_written_records_total",
    ):
        assert _value(samples, name) == 0  # the log is off here: present, and nothing counted


def _blocking_model(release: threading.Event, entered: threading.Event) -> LoadedModel:
    schema = ModelSchema(columns=(Column("x", "float", "FP64", "float64", True),), prediction_datatype="FP64")

    def predict(features: Features):  # type: ignore[no-untyped-def]
        entered.set()
        release.wait(30)
        assert features.matrix is not None
        return features.matrix[:, 0] + 1, None

    return LoadedModel("slow", "1", schema, "test", predict)


def test_concurrency_limit_refuses_extra_calls_and_spares_those_in_flight() -> None:
    release, entered = threading.Event(), threading.Event()

    async def main() -> None:
        metrics = ServingMetrics()
        host = ModelHost(
            lambda name, version: _blocking_model(release, entered),
            metrics=metrics, batching=BatchingConfig(max_batch_size=1, max_wait=0.0),
        )  # fmt: skip
        server = ScoringServer(InferenceCore(host, metrics=metrics), ServerOptions(max_concurrent_rpcs=2))
        port = await server.start()
        await host.load("slow", "1")
        await server.set_serving()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                first = asyncio.ensure_future(stub.ModelInfer(build_request("slow", [{"x": 1.0}])))
                second = asyncio.ensure_future(stub.ModelInfer(build_request("slow", [{"x": 2.0}])))
                batcher = host.route("slow")[0].batcher
                deadline = time.monotonic() + 30
                while not (entered.is_set() and batcher.depth == 1):  # one predicting, one queued
                    assert time.monotonic() < deadline, "the two calls never got in flight"
                    await asyncio.sleep(0.01)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.ModelInfer(build_request("slow", [{"x": 3.0}]), timeout=10)
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

                def with_client() -> None:
                    with ScoringClient(f"127.0.0.1:{port}") as client:
                        client.predict("slow", [{"x": 4.0}], timeout=10)

                with pytest.raises(UnavailableError, match="concurrency limit; retry later"):
                    await asyncio.to_thread(with_client)  # overload, not bad input, for our client
                release.set()
                answers = [await first, await second]
                values = [np.frombuffer(a.raw_output_contents[0], "<f8").tolist() for a in answers]
                assert values == [[2.0], [3.0]]
        finally:
            release.set()
            await server.stop(1)
            await host.close()

    asyncio.run(main())


def test_connections_are_closed_at_their_maximum_age() -> None:
    """The server sends GOAWAY when a connection is older than `max_connection_age_ms`: the client channel
    drops to IDLE (and would reconnect, possibly to another replica); the next call simply works."""
    states: list[grpc.ChannelConnectivity] = []

    async def main() -> None:
        metrics = ServingMetrics()
        host = ModelHost(lambda n, v: _blocking_model(threading.Event(), threading.Event()), metrics=metrics)
        options = ServerOptions(max_connection_age_ms=300, max_connection_age_grace_ms=300)
        server = ScoringServer(InferenceCore(host, metrics=metrics), options)
        port = await server.start()
        await server.set_serving()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                assert (await stub.ServerLive(pb.ServerLiveRequest())).live
                state = channel.get_state()
                states.append(state)
                deadline = time.monotonic() + 20
                while state == grpc.ChannelConnectivity.READY:
                    assert time.monotonic() < deadline, "the connection outlived its maximum age"
                    try:
                        await asyncio.wait_for(channel.wait_for_state_change(state), 1.0)
                    except TimeoutError:
                        continue
                    state = channel.get_state()
                    states.append(state)
                assert (await stub.ServerLive(pb.ServerLiveRequest())).live
        finally:
            await server.stop(1)
            await host.close()

    asyncio.run(main())
    assert states[0] == grpc.ChannelConnectivity.READY
    assert states[-1] != grpc.ChannelConnectivity.READY


def test_request_ids_longer_than_the_feedback_key_are_refused(start_server, models: Models) -> None:  # type: ignore[no-untyped-def]
    server = start_server()
    channel = grpc.insecure_channel(server.address)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    try:
        ok = stub.ModelInfer(build_request(REF, models.rows(1), request_id="r" * 128), timeout=10)
        assert ok.id == "r" * 128
        for request, metadata in (
            (build_request(REF, models.rows(1), request_id="r" * 129), ()),
            (build_request(REF, models.rows(1)), ((REQUEST_ID_HEADER, "h" * 500),)),
        ):
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request, metadata=metadata, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "characters; at most 128 are allowed" in info.value.details()
            assert "rrrr" not in info.value.details() and "hhhh" not in info.value.details()
    finally:
        channel.close()
