"""The names callers and scoring servers agree on beyond the protos: services, output tensors, headers.

`PREDICT_OUTPUT` is the predictions tensor every model answers with (the default when a request names no
output), `PROBA_OUTPUT` the class probabilities of a classifier ([rows, classes], FP64). A response says in
its `ROUTE_PARAMETER` string parameter who answered (`contract.registry.Route`: champion or challenger).
"""

from __future__ import annotations

#: the Open Inference Protocol service (its proto keeps the unversioned `package inference;`)
OIP_SERVICE = "inference.GRPCInferenceService"
#: modelloop's admin service (hot swap), served only with an admin token
ADMIN_SERVICE = "modelloop.admin.v1.ModelAdmin"

PREDICT_OUTPUT = "predict"
PROBA_OUTPUT = "predict_proba"
#: every output a model can be asked for, in the order a metadata call lists them
OUTPUTS: tuple[str, ...] = (PREDICT_OUTPUT, PROBA_OUTPUT)

#: the response parameter naming the route that answered
ROUTE_PARAMETER = "route"
#: the metadata key carrying a request id when the request's own `id` is empty
REQUEST_ID_HEADER = "x-request-id"

__all__ = [
    "ADMIN_SERVICE",
    "OIP_SERVICE",
    "OUTPUTS",
    "PREDICT_OUTPUT",
    "PROBA_OUTPUT",
    "REQUEST_ID_HEADER",
    "ROUTE_PARAMETER",
]
