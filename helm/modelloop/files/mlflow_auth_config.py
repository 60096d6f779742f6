"""Writes MLflow's basic-auth config file (init container of the chart's MLflow pod).

MLflow reads the auth database URL only from the file named by MLFLOW_AUTH_CONFIG_PATH, while the URL lives in
a Secret: this copies it from the environment into that file on an in-memory volume, escaping `%` for
configparser. The admin user and password are not written: MLflow reads them from MLFLOW_AUTH_ADMIN_USERNAME
and MLFLOW_AUTH_ADMIN_PASSWORD. Exits non-zero, naming the variable, when one is missing.
"""

import configparser
import os
import sys


def main() -> int:
    names = ("MLFLOW_AUTH_CONFIG_PATH", "AUTH_DATABASE_URI", "AUTH_DEFAULT_PERMISSION")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        print(f"error: {', '.join(missing)} not set", file=sys.stderr)
        return 2
    config = configparser.ConfigParser()
    config["mlflow"] = {
        "default_permission": os.environ["AUTH_DEFAULT_PERMISSION"],
        "database_uri": os.environ["AUTH_DATABASE_URI"].replace("%", "%%"),
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
    }
    path = os.environ["MLFLOW_AUTH_CONFIG_PATH"]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        config.write(out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
