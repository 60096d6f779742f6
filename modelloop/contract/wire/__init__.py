"""The wire between callers and scoring servers: the Open Inference Protocol v2 and admin gRPC stubs generated
from `proto/` (`_generated`, `make proto`). Both the public client and the server build on it."""
