"""`helm test` check (the chart's test Pod runs it from the modelloop image): the MLflow server answers
`GET /health`, and, when given, a scoring server's standard gRPC health service says SERVING for the whole
server.

    python helm_test.py --mlflow http://NAME:5000 [--grpc HOST:PORT] [--timeout SECONDS]

Prints one line per check and exits 1 when any fails, naming it.
"""

import argparse
import sys
import urllib.error
import urllib.request


def check_mlflow(url: str, timeout: float) -> str | None:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as answer:  # noqa: S310
            body = answer.read(64).decode("utf-8", "replace").strip()
            return None if answer.status == 200 and body == "OK" else f"answered {answer.status}"
    except urllib.error.HTTPError as exc:
        return f"answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"unreachable ({type(exc).__name__})"


def check_grpc(target: str, timeout: float) -> str | None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout, wait_for_ready=True
            )
        except grpc.RpcError as exc:
            return f"health check failed ({exc.code().name})"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    return None if status == "SERVING" else f"status {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlflow", required=True, help="MLflow server URL")
    parser.add_argument("--grpc", help="scoring server HOST:PORT")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per check")
    args = parser.parse_args(argv)
    failures = 0
    checks = [("mlflow", args.mlflow, check_mlflow)]
    if args.grpc:
        checks.append(("scoring", args.grpc, check_grpc))
    for what, target, check in checks:
        problem = check(target, args.timeout)
        print(f"{what} {target}: {'ok' if problem is None else problem}")
        failures += problem is not None
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
