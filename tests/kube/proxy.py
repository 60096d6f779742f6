"""Test infrastructure, not part of modelloop: a kube-proxy stand-in for one Service port.

`ServiceProxy` listens on a free loopback port and forwards each new TCP connection to one *ready* endpoint
of the Service, read from its EndpointSlices (kept by the real endpointslice controller from Pod readiness),
translated to a loopback address by the node stand-in. Like kube-proxy it picks per connection (round
robin), so a long-lived gRPC connection stays on its pod until the server closes it (GOAWAY at shutdown or
max connection age). A connection an endpoint refuses is tried on the next ready endpoint (kube-proxy's
iptables mode would fail it); with no ready endpoint the connection is closed at once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import threading
from typing import Any

from kubernetes import client

from .node import NodeStandIn

log = logging.getLogger(__name__)


class ServiceProxy:
    """Connections to `address` reach the ready pods behind `namespace/service`'s port `port_name`."""

    def __init__(self, node: NodeStandIn, namespace: str, service: str, port_name: str) -> None:
        self.node = node
        self.namespace = namespace
        self.service = service
        self.port_name = port_name
        self._discovery = client.DiscoveryV1Api(node.kube.client)
        self._endpoints: list[tuple[str, int]] = []
        self._turn = itertools.count()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.5)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads = [
            threading.Thread(target=self._watch, name=f"proxy-watch-{service}", daemon=True),
            threading.Thread(target=self._accept, name=f"proxy-accept-{service}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def ready_endpoints(self) -> list[tuple[str, int]]:
        """(pod IP, port) of every ready endpoint, as the EndpointSlices say now."""
        slices: Any = self._discovery.list_namespaced_endpoint_slice(
            self.namespace, label_selector=f"kubernetes.io/service-name={self.service}"
        )
        found = []
        for item in slices.items:
            ports = [p.port for p in item.ports or [] if p.name == self.port_name]
            for endpoint in item.endpoints or []:
                if endpoint.conditions is None or not endpoint.conditions.ready:
                    continue
                found += [(address, port) for address in endpoint.addresses for port in ports]
        return sorted(found)

    def _watch(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self._endpoints = self.ready_endpoints()
            self._stop.wait(0.2)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _connect(self) -> socket.socket | None:
        endpoints = list(self._endpoints)
        start = next(self._turn)
        for i in range(len(endpoints)):
            ip, port = endpoints[(start + i) % len(endpoints)]
            address = self.node.address(ip, port)
            if address is None:
                continue
            host, number = address.rsplit(":", 1)
            try:
                return socket.create_connection((host, int(number)), timeout=2)
            except OSError:
                continue
        return None

    def _serve(self, conn: socket.socket) -> None:
        upstream = self._connect()
        if upstream is None:
            conn.close()
            return
        upstream.settimeout(None)
        conn.settimeout(None)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
        back.start()
        pump(conn, upstream)
        back.join()
        conn.close()
        upstream.close()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)


__all__ = ["ServiceProxy"]
