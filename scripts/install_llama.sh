#!/usr/bin/env bash
# Install llama-cpp-python into the Python given as $1, built for the CPU it runs on.
#
#   CITEQA_LLAMA_BUILD=native   (default) -DGGML_NATIVE=ON: ~1.6x the prefill speed of the portable
#                               build on an AVX-512 CPU; falls back to portable if the build or a
#                               smoke test fails.
#   CITEQA_LLAMA_BUILD=portable -DGGML_NATIVE=OFF (what the Dockerfile uses: images move between CPUs).
#   CITEQA_LLAMA_BUILD=cuda     -DGGML_CUDA=on: offloads the model to an NVIDIA GPU (needs nvcc).
#
# A native wheel must never reach another CPU. pip keys its wheel cache by the source archive only
# (not by CMAKE_ARGS), so native builds bypass it (--no-cache-dir) and are kept in a directory keyed
# by the CPU's architecture, feature flags and the Python version: a different CPU gets its own build.
# The build kind is recorded in <prefix>/citeqa-llama-build.json for `citeqa models list`.
set -euo pipefail

PY=${1:?usage: install_llama.sh PYTHON}
SPEC=${CITEQA_LLAMA_SPEC:-"llama-cpp-python>=0.3"}
MODE=${CITEQA_LLAMA_BUILD:-native}
CACHE=${CITEQA_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/citeqa/llama-wheels}

cpu_flags() {
  if [ -r /proc/cpuinfo ]; then
    grep -m1 -E '^(flags|Features)[[:space:]]*:' /proc/cpuinfo | cut -d: -f2 | tr ' ' '\n' | sed '/^$/d' | sort -u | tr '\n' ' '
  else
    sysctl -n machdep.cpu.features machdep.cpu.leaf7_features hw.optional 2>/dev/null | tr '\n' ' ' || true
  fi
}

record() {  # record <build> <key>
  "$PY" - "$1" "$2" <<'EOF'
import json, sys
from pathlib import Path
import llama_cpp
info = {"build": sys.argv[1], "cpu_key": sys.argv[2], "version": llama_cpp.__version__}
(Path(sys.prefix) / "citeqa-llama-build.json").write_text(json.dumps(info) + "\n")
EOF
}

smoke() {  # an illegal-instruction crash shows here, not at the first question
  "$PY" -c "import llama_cpp; llama_cpp.llama_backend_init(); print(llama_cpp.llama_print_system_info().decode())" >/dev/null
}

portable() {
  echo "llama-cpp-python: portable build (GGML_NATIVE=OFF; ~5 min on 2 cores the first time, then pip's cache)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" "$PY" -m pip install -q --force-reinstall --no-deps "$SPEC"
  "$PY" -m pip install -q "$SPEC"  # its dependencies
  record portable ""
}

if [ "$MODE" = cuda ]; then
  # Needs the CUDA toolkit (nvcc) on PATH; the model's layers then go to the GPU (settings llm.gpu_layers).
  echo "llama-cpp-python: CUDA build (GGML_CUDA=on; needs nvcc, ~10 min the first time)"
  CMAKE_ARGS="-DGGML_CUDA=on" "$PY" -m pip install -q --force-reinstall --no-cache-dir --no-deps "$SPEC"
  "$PY" -m pip install -q "$SPEC"
  record cuda ""
  exit 0
fi

if [ "$MODE" != native ] || ! command -v sha256sum >/dev/null; then
  portable
  exit 0
fi

PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
KEY=$(printf '%s|%s|%s|%s' "$(uname -m)" "$(cpu_flags)" "$PYVER" "$SPEC" | sha256sum | cut -c1-16)
DIR="$CACHE/native-$KEY"
if ! ls "$DIR"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "llama-cpp-python: building for this CPU (GGML_NATIVE=ON, ~5 min on 2 cores, once per CPU) into $DIR"
  rm -rf "$DIR.tmp" && mkdir -p "$DIR.tmp"
  if CMAKE_ARGS="-DGGML_NATIVE=ON" "$PY" -m pip wheel -q --no-cache-dir --no-deps -w "$DIR.tmp" "$SPEC"; then
    rm -rf "$DIR" && mv "$DIR.tmp" "$DIR"
  else
    echo "llama-cpp-python: the native build failed; falling back to the portable build" >&2
    rm -rf "$DIR.tmp"
    portable
    exit 0
  fi
fi
WHEEL=$(ls "$DIR"/llama_cpp_python-*.whl | head -n1)
"$PY" -m pip install -q --force-reinstall --no-deps "$WHEEL"
"$PY" -m pip install -q "$WHEEL"  # its dependencies, from the index
if smoke; then
  record native "$KEY"
  echo "llama-cpp-python: native build installed ($WHEEL)"
else
  echo "llama-cpp-python: the native build does not run here; falling back to the portable build" >&2
  rm -rf "$DIR"
  portable
fi
