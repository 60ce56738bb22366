#!/usr/bin/env bash
# One-script check of a CUDA machine: corruption kernels at 224 and 32 px on the GPU (against
# our CPU engine and the imagecorruptions package on the same images), a CIFAR-10-C-size set
# generated on the GPU and a ResNet-18 evaluated from its files and on the fly, a ResNet-50 at
# 224 px (bf16, channels_last, batch size auto), and a 2-process torchrun run against one
# process. Sized for one GPU in under 8 minutes; writes OUT_DIR/gpu_check.json.
#
#   benchmarks/gpu_check.sh OUT_DIR                       # on the GPU
#   benchmarks/gpu_check.sh OUT_DIR --device cpu --quick  # the CPU smoke test (tests/, < 1 min)
#
# PYTHON selects the interpreter (default: python3); set CIFAR_ROOT to use the real CIFAR-10
# (synthetic 32 px images otherwise). Exit status: 0 all steps ok, 1 a step failed, 2 usage.
set -euo pipefail

if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: $0 OUT_DIR [--device cuda|cpu] [--quick]" >&2
    exit 2
fi
out="$1"
shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec "${PYTHON:-python3}" "$here/gpu_check.py" --out "$out" "$@"
