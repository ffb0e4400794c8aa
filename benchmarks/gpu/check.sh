#!/usr/bin/env bash
# The prepared device check (one lent H100 or H200; at most 8 minutes of commands, of the 15 device minutes a session has):
#
#   here:        bash benchmarks/gpu/fetch_wheels.sh          # diffusers, PyAV, librosa for the device's Python
#   device tool: run(command="bash benchmarks/gpu/check.sh", carry=[".whl"], timeout_s=540)
#
# Writes into $OUT (the device tool's folder; else /tmp/fada-gpu): gpu.txt (the card), cuda_tests.txt, and one JSON
# per benchmark below (benchmarks/bench_generate.py: full SD1.5 shapes, random weights, 512x512, 16-frame clips,
# whole pipeline including wav2vec2, decoding and H.264/AAC writing). Each step has its own time limit, so a slow
# one costs its own figures only. FADA_GPU_SMOKE=1 runs the same steps at toy shapes on the CPU (to check the
# script itself where no GPU is lent).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/fada-gpu}
mkdir -p "$OUT"
if [ "${FADA_GPU_SMOKE:-0}" != 1 ] && ls .whl/*.whl >/dev/null 2>&1; then  # the wheels are for the device's Python
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
BENCH=("$PY" benchmarks/bench_generate.py --scale full --no-crop --repeats 1)
if [ "${FADA_GPU_SMOKE:-0}" = 1 ]; then
  BENCH+=(--device cpu --resolution 64 --frames 2 --unet-channels 32,64,64,64 --clips 2)
else
  BENCH+=(--device cuda --clips 2)
fi
step() {  # step NAME SECONDS CMD...: run with a limit, keep its output, say how long it took
  local name=$1 secs=$2; shift 2
  local t0=$SECONDS
  if [ "${FADA_GPU_SMOKE:-0}" = 1 ]; then secs=600; fi
  timeout "$secs" "$@" >"$OUT/$name.json" 2>"$OUT/$name.log"
  echo "$name: exit $? in $((SECONDS - t0)) s"
  tail -n 3 "$OUT/$name.log"
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no GPU";
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } | tee "$OUT/gpu.txt"
t0=$SECONDS
timeout 90 "$PY" -m pytest -q -p no:cacheprovider tests/models/test_cuda.py tests/models/test_attention.py \
  tests/training/test_loop.py tests/test_engine.py tests/test_pipeline_compile.py -k "cuda or CUDA" >"$OUT/cuda_tests.txt" 2>&1
echo "cuda tests: exit $? in $((SECONDS - t0)) s"; tail -n 2 "$OUT/cuda_tests.txt"
# 1. every mode with the SD VAE, eager: teacher / Balanced / Fast as shipped
step bench_sd 120 "${BENCH[@]}" --decoder sd
# 2. teacher and Fast with TAESD, eager, and the Fast profile (the component table)
step bench_taesd 100 "${BENCH[@]}" --decoder taesd --modes teacher,fast --profile
# 3. Fast with TAESD, compiled (CUDA graphs); the compile time is reported apart
step bench_taesd_compiled 200 "${BENCH[@]}" --decoder taesd --modes fast --compile
echo "total $SECONDS s"
