"""The checked-in gRPC stubs match proto/ (fails when a .proto changes without `make proto`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from modelloop.contract.wire import protogen


def test_checked_in_stubs_are_fresh() -> None:
    assert protogen.stale_files() == []
    assert protogen.main(["--check"]) == 0


def test_check_fails_when_a_proto_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proto_dir = tmp_path / "proto"
    shutil.copytree(protogen.PROTO_DIR, proto_dir)
    source = proto_dir / "modelloop" / "admin" / "v1" / "admin.proto"
    source.write_text(source.read_text().replace("bool ready = 6;", "bool ready = 6;\n  string extra = 7;"))
    monkeypatch.setattr(protogen, "PROTO_DIR", proto_dir)
    stale = protogen.stale_files()
    assert "modelloop/admin/v1/admin_pb2.py" in stale
    assert protogen.main(["--check"]) == 1


def test_stubs_import_as_a_subpackage() -> None:
    from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2 as pb
    from modelloop.contract.wire._generated.inference import grpc_predict_v2_pb2_grpc as pbg

    assert pb.DESCRIPTOR.package == "inference"
    assert pbg.GRPCInferenceServiceStub is not None
    request = pb.ModelInferRequest(model_name="m", id="r1")
    assert pb.ModelInferRequest.FromString(request.SerializeToString()).id == "r1"
