"""modelloop: closes the loop of a model's life on MLflow.

This package holds the shared contract at the bottom of the layers (settings, registry conventions, the
reference-profile and prediction-log schemas) and the CLI at the top. Importing it imports none of
`training`, `serving`, `monitoring` or `deploy`, so the contract can be used from anywhere without a cycle.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
