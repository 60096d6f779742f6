"""serving: the gRPC scoring server (Open Inference Protocol v2), batching, model hosting and hot swap, and
prediction logging. Callers use `modelloop.client`, which loads none of this."""
