"""modelloop: closes the loop of a model's life on MLflow.

Floors, bottom to top (import-linter enforces them, see `.importlinter` and docs/architecture.md):
`modelloop.contract` (settings, registry conventions, profile, prediction-log schema, the wire) <-
`modelloop.training` | `modelloop.serving` | `modelloop.monitoring` <- `modelloop.deploy` <- `modelloop.cli`
(the command line and the local platform). Importing `modelloop` itself imports none of them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
