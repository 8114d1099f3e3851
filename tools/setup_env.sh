#!/usr/bin/env bash
# Create .venv with torch, a locally built mmcv 2.1.0, mmdet, mmseg and this package.
#
# Idempotent: a second run only checks a stamp and exits. The mmcv wheel is
# built once per (python, torch) pair and cached outside the repository, in
# $MBN_CACHE (default ~/.cache/mbn_backbones), because building it takes ~10
# minutes on 2 cores.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
CACHE=${MBN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mbn_backbones}
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0

say() { printf '[setup] %s\n' "$*"; }

stamp_of() {
    # The environment is current when neither the dependency list nor this script changed.
    cat "$ROOT/pyproject.toml" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1
}

if [ -f "$VENV/.mbn_setup_stamp" ] && [ "$(cat "$VENV/.mbn_setup_stamp")" = "$(stamp_of)" ]; then
    say "environment in $VENV is up to date"
    exit 0
fi

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check --progress-bar off)

say "installing torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION and build tools"
"${PIP[@]}" -q --upgrade pip
# setuptools<81: mmcv 2.1.0's setup.py imports pkg_resources, removed in 81.
"${PIP[@]}" -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" "setuptools<81" wheel ninja "numpy<2"

pyver=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
wheel_dir="$CACHE/wheels/mmcv-$MMCV_VERSION-$pyver-torch$TORCH_VERSION"
mkdir -p "$wheel_dir"
mmcv_wheel=$(ls "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$mmcv_wheel" ]; then
    say "no cached mmcv wheel in $wheel_dir: building mmcv $MMCV_VERSION from source (about 10 minutes on 2 cores)"
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    # --no-build-isolation: even reading its metadata runs setup.py, which needs the setuptools<81 above.
    "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-build-isolation --no-binary :all: "mmcv==$MMCV_VERSION" -d "$build"
    tar -xzf "$build"/mmcv-"$MMCV_VERSION".tar.gz -C "$build"
    # torch >= 2.10 headers need C++20; mmcv 2.1.0 hard-codes C++14/17.
    sed -i "s/-std=c++17/-std=c++20/g; s/'-std=c++14'\]$/'-std=c++20']/" "$build/mmcv-$MMCV_VERSION/setup.py"
    (cd "$build/mmcv-$MMCV_VERSION" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} \
        "$PY" -m pip wheel --disable-pip-version-check --no-build-isolation --no-deps -w "$wheel_dir.partial" . )
    mv "$wheel_dir.partial"/mmcv-*.whl "$wheel_dir"/ && rmdir "$wheel_dir.partial"
    mmcv_wheel=$(ls "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl | head -n1)
    say "built and cached $mmcv_wheel"
else
    say "reusing cached mmcv wheel $mmcv_wheel"
fi

say "installing mmcv, mmengine, mmdet, mmsegmentation and mbn_backbones (editable, with dev extras)"
"${PIP[@]}" -q "$mmcv_wheel" -e "$ROOT[dev]"

"$PY" - <<'PY'
import mmcv, mmdet, mmengine, mmseg, torch, torchvision
from mmcv.ops import nms  # noqa: F401  the compiled ops load
print(f"[setup] torch {torch.__version__}, torchvision {torchvision.__version__}, mmengine {mmengine.__version__}, "
      f"mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}")
PY
stamp_of > "$VENV/.mbn_setup_stamp"
say "done in $(( $(date +%s) - start ))s"
