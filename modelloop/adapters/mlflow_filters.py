"""MLflow's search filter strings, written in one place: `name = 'churn'`, ``tags.`key` = 'value'``.

Called by the adapters that search (`mlflow_registry` for versions, `mlflow_runs` and `mlflow_rollouts` for
runs). MLflow's filter language has no escapes: a value is quoted with the quote it does not hold; one holding
both is matched by a LIKE pattern (each quote a `_`), a superset the caller narrows by comparing again.
"""

from __future__ import annotations


def tag(key: str) -> str:
    """The filter field of a run tag."""
    return f"tags.`{key}`"


def param(key: str) -> str:
    """The filter field of a run param."""
    return f"params.`{key}`"


def equals(field: str, value: str) -> str:
    """A condition matching `field` (`name`, `tag(key)`, `param(key)`) equal to `value` (or, for a value
    holding both quotes, a superset: see the module docstring)."""
    if "'" not in value:
        return f"{field} = '{value}'"
    if '"' not in value:
        return f'{field} = "{value}"'
    pattern = value.replace("'", "_").replace('"', "_")
    return f"{field} LIKE '{pattern}'"


__all__ = ["equals", "param", "tag"]
