"""The wire between callers and scoring servers, the contract both build on.

    _generated   the Open Inference Protocol v2 and admin gRPC stubs, generated from `proto/` (`make proto`,
                 `protogen`); never edited by hand
    codec        tensor contents <-> numpy: datatype names, raw and typed contents
    names        service, output-tensor, parameter and header names
    admin        `ModelStatus`, what the admin service says about a hosted model, and its message conversions
    errors       the error a scoring call can end in beyond `contract.errors` (oversized input)
    status       which error travels as which gRPC status code, and the client's way back (`error_for`)

The public client (`modelloop.client`) and the scoring server (`modelloop.serving`) import from here, never
from each other. Importing this package loads nothing; its modules load grpc and protobuf, nothing of the
server.
"""
