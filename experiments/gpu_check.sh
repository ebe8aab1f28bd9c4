#!/usr/bin/env bash
# One-shot check of the fast training paths on a CUDA machine: correctness on the device, then the
# benchmark of the reference experiment (CIFAR-10, VGG-8, instance norm, batch 128, Adam 5e-4, v15
# top-6, projection signal; 10,000 training images) in fp32 and bf16, then torch.compile.
# Each step has a time limit; at most 8 minutes in all.
#
#   bash experiments/gpu_check.sh [--device cuda|cpu] [--tiny] [--source cifar10-jpeg.tar.gz]
#
# The CIFAR-10 JPEG tree is read from $SIGPROP_DATA_DIR or data/ (python -m sigprop.data.prepare
# cifar10_jpeg); when it is missing the script prepares it from --source (default: data/cifar10-jpeg.tar.gz,
# so a machine that receives only the repository needs that one 20 MB file beside it).
# JSON results go to $OUT if set, else experiments/results/gpu-check/.
# On a CPU, to check the script's logic in a few minutes (a narrow network on the embedded MNIST subset):
#   bash experiments/gpu_check.sh --device cpu --tiny
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
TINY=0
SOURCE=data/cifar10-jpeg.tar.gz
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --tiny) TINY=1; shift ;;
    --source) SOURCE="$2"; shift 2 ;;
    *) echo "unknown argument $1"; exit 2 ;;
  esac
done
OUT="${OUT:-experiments/results/gpu-check}"
DATA_DIR="${SIGPROP_DATA_DIR:-data}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
START=$(date +%s)
status=0
step() { echo; echo "=== $1 ($(( $(date +%s) - START )) s)"; }

# The reference experiment as train.py overrides (dropout off: the per-class signal is exact without it).
CONFIG=(experiment=cifar10_reference model.dropout=0 +optimizer.fused=true step.channels_last=true "device=$DEVICE")
if [ "$TINY" = 1 ]; then  # a narrow VGG-8 on 256 images of the embedded MNIST subset: the script's logic only
  CONFIG+=(dataset=embedded dataset.train_subset=256 dataset.test_subset=128 model.feat_mult=0.0625
           model.num_hidden=64 batch_size=32 threads=1)
  TIMING=(--steps 6 --warmup 2 --chunk 2 --mem-steps 1 --profile-steps 1 --epoch-samples 50000)
else
  CONFIG+=(dataset=cifar10_jpeg "data_dir=$DATA_DIR" dataset.train_subset=10000 dataset.test_subset=2000)
  TIMING=(--epochs 3 --warmup 5 --epoch-samples 50000)
fi

step "machine"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"

step "data"
if [ "$TINY" = 0 ] && [ ! -d "$DATA_DIR/cifar10-jpeg/train" ]; then
  if [ ! -f "$SOURCE" ]; then
    echo "no CIFAR-10 tree in $DATA_DIR/cifar10-jpeg and no archive $SOURCE: give --source cifar10-jpeg.tar.gz"; exit 2
  fi
  timeout 300 python -m sigprop.data.prepare cifar10_jpeg --source "$SOURCE" --data-dir "$DATA_DIR" || exit 2
fi

step "correctness on the device (fp64 equivalence, no host sync in a step)"
timeout 120 python experiments/gpu_check.py --checks equivalence,nosync --json "$OUT/checks.json" "${CONFIG[@]}" || status=1

step "benchmark fp32 (one process, memory in a subprocess per method)"
timeout 200 python experiments/benchmark.py "${TIMING[@]}" \
  --methods bp,sp-reference,sp-reference-pil,sp-layerwise,sp-fused,sp-fused-pc,sp-lowmem-pc \
  --json "$OUT/bench-fp32.json" "${CONFIG[@]}" || status=1

step "benchmark bf16 + channels-last"
timeout 100 python experiments/benchmark.py "${TIMING[@]}" --precisions bf16 --methods bp,sp-fused-pc,sp-lowmem-pc \
  --json "$OUT/bench-bf16.json" "${CONFIG[@]}" || status=1

step "torch.compile (an option; a failure here is reported, not fatal)"
timeout 90 python experiments/gpu_check.py --checks compile --json "$OUT/compile.json" "${CONFIG[@]}"

step "done: status $status, results in $OUT"
ls -l "$OUT"
exit $status
