"""Generated gRPC stubs (see modelloop.contract.wire.protogen)."""
