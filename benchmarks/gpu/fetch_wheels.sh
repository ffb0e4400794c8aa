#!/usr/bin/env bash
# Fetch (here, where pip reaches the package index) the wheels that the device machine's image lacks, into .whl/
# (ignored by git; carried to the device with `carry: [".whl"]`). The image has torch, transformers, safetensors,
# accelerate, peft, typer, rich, opencv, scipy, scikit-image, numba, pytest; not diffusers, PyAV, librosa.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .whl && mkdir -p .whl
get() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$@"
}
get "diffusers==0.42.1" "importlib_metadata" "zipp" "av==18.1.0" "librosa==0.11.0" "soundfile" "audioread" \
    "soxr" "pooch" "platformdirs" "decorator" "standard-aifc" "standard-sunau" "standard-chunk"
du -sh .whl
