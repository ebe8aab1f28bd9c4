#!/usr/bin/env bash
# One-shot check of the fast training paths on a CUDA machine: correctness on the device, then the
# benchmark of the reference experiment (CIFAR-10, VGG8, instance norm, batch 128, Adam 5e-4,
# v15 top-6, projection signal) in fp32 and bf16, then torch.compile. Each step has a time limit; at most 7.8 minutes in all.
#
# Only the repository travels to the GPU machine, so the data goes with it as one carried file
# (37 MB: 10,000 train + 2,000 test CIFAR-10 images as uint8). Prepare it here, then run it there:
#   python experiments/benchmark.py --preset gpu --prepare    # writes data/cifar10-cache/cifar10-10000-2000.pt
#   run(command="bash experiments/gpu_check.sh", carry=["data/cifar10-cache/cifar10-10000-2000.pt"], timeout_s=540)
# Results (JSON) land in $OUT (the device tool brings them back), else in experiments/results/gpu-check.
# On a CPU, to check the script's logic in a minute or two:
#   bash experiments/gpu_check.sh --device cpu --tiny
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
TINY=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --tiny) TINY=(--tiny); shift ;;
    *) echo "unknown argument $1"; exit 2 ;;
  esac
done
OUT="${OUT:-experiments/results/gpu-check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
START=$(date +%s)
status=0
step() { echo; echo "=== $1 ($(( $(date +%s) - START )) s)"; }

step "machine"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
DATA=data/cifar10-cache/cifar10-10000-2000.pt
if [ ${#TINY[@]} -eq 0 ] && [ ! -f "$DATA" ]; then
  echo "missing $DATA: run 'python experiments/benchmark.py --preset gpu --prepare' and carry that file"; exit 2
fi

step "correctness on the device (fp64 equivalence, no host sync in a step)"
timeout 90 python experiments/gpu_check.py --device "$DEVICE" "${TINY[@]}" --checks equivalence,nosync \
  --json "$OUT/checks.json" || status=1

step "benchmark fp32 (the reference experiment; one process, memory in a subprocess per method)"
timeout 200 python experiments/benchmark.py --preset gpu --device "$DEVICE" "${TINY[@]}" \
  --methods bp,sp-reference,sp-reference-pil,sp-layerwise,sp-fused,sp-fused-pc,sp-lowmem-pc \
  --json "$OUT/bench-fp32.json" || status=1

step "benchmark bf16 + channels-last"
timeout 90 python experiments/benchmark.py --preset gpu --device "$DEVICE" "${TINY[@]}" --precisions bf16 \
  --methods bp,sp-fused-pc,sp-lowmem-pc --json "$OUT/bench-bf16.json" || status=1

step "torch.compile (an option; a failure here is reported, not fatal)"
timeout 90 python experiments/gpu_check.py --device "$DEVICE" "${TINY[@]}" --checks compile --json "$OUT/compile.json"

step "done: status $status, results in $OUT"
ls -l "$OUT"
exit $status
