"""serving: the gRPC scoring server (Open Inference Protocol v2), batching, model hosting and hot swap,
prediction logging, and the Python client."""
