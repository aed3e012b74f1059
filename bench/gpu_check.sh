#!/usr/bin/env bash
# GPU checks and benchmarks in one short script, for a lent CUDA machine (see docs/benchmarks.md).
#
#   OUT=/tmp/gpu_out bash bench/gpu_check.sh
#
# Runs from the repository root with the machine's own python3 (torch + torchvision present);
# the package is used from the checkout (PYTHONPATH=.), nothing is installed or downloaded.
# Writes at most 8 files to $OUT: the benchmark JSONs, the reports of the two pipeline runs and
# one log. Steps:
#   1. the CUDA test of the metrics;
#   2. batched CAMs vs the one-image reference (resnet50, VOC sizes, fp32 and bf16);
#   3. the IRN random walk, sparse vs dense, peak GPU memory and images per second;
#   4. the `gpu` preset end to end (resnet50 CAMs at crop 512 with AMP and channels_last,
#      IRN refinement, DeepLab-v2 ResNet-101, one CONTA round) on 500 px synthetic images,
#      shortened and with random weights (no ImageNet weights can be fetched there);
#   5. the smoke preset under torchrun with the NCCL backend (one process: one GPU).
set -u
STEPS=${STEPS:-1 2 3 4 5}
want() { case " $STEPS " in *" $1 "*) return 0;; esac; return 1; }
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
LOG=$OUT/gpu_check.log
step() { echo; echo "=== $* ($(date +%T))" | tee -a "$LOG"; }
{
  nvidia-smi -L
  $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee -a "$LOG"

if want 1; then
step "1 metrics on CUDA"
$PY -m pytest -q -p no:cacheprovider tests/test_metrics.py -k cuda 2>&1 | tail -3 | tee -a "$LOG"

fi
if want 2; then
step "2 CAM benchmark"
$PY bench/bench_cam.py --device cuda --backbone resnet50 --images 64 \
    --sizes 500x375,375x500,333x500,281x500,500x334 --batch-size 16 --repeat 3 \
    --json "$OUT/bench_cam_cuda.json" 2>&1 | tee -a "$LOG"

if [ -f runs/demo/round_0/cam_net.pt ] && [ -d data/synth ]; then
  step "2b CAM benchmark, trained demo network on the demo's images (carried)"
  $PY bench/bench_cam.py --device cuda --backbone resnet18 --trunk-depth 3 \
      --checkpoint runs/demo/round_0/cam_net.pt --data data/synth --images 64 --batch-size 16 \
      --repeat 3 --json "$OUT/bench_cam_trained_cuda.json" 2>&1 | tee -a "$LOG"
fi

fi
if want 3; then
step "3 random walk benchmark"
$PY bench/bench_random_walk.py --device cuda --sizes 120x90,160x120,500x375 --exp-times 8 \
    --repeat 3 --dense-max-cells 12000 --json "$OUT/bench_random_walk_cuda.json" 2>&1 | tee -a "$LOG"

fi
if want 4; then
step "4 gpu preset end to end (shortened, random weights)"
$PY -m causal_wsss.cli synth /tmp/d500 --train 160 --val 40 --size 500 --no-progress 2>&1 | tee -a "$LOG"
# random weights: batch-norm statistics must train (cam.freeze_bn=false), and they give a weak segmentation model: agree_with_labels=false keeps round 1's
# dictionary from being empty (the check is of the code path, not of the numbers)
rm -rf /tmp/run_gpu
t0=$SECONDS
timeout 330 $PY -m causal_wsss.cli run --dataset voc --root /tmp/d500 --preset gpu --rounds 1 \
    --out /tmp/run_gpu --no-progress cam.weights=none seg.weights=none cam.freeze_bn=false cam.epochs=2 \
    seg.iterations=300 pseudo.irn_epochs=1 pseudo.ir_crf=false data.train_split=train \
    context.agree_with_labels=false ${GPU_EXTRA:-} > /tmp/run_gpu.out 2>&1
echo "exit $? after $((SECONDS - t0)) s" | tee -a "$LOG"
tail -25 /tmp/run_gpu.out | tee -a "$LOG"
nvidia-smi --query-gpu=memory.used,memory.total --format=csv | tee -a "$LOG"
cp /tmp/run_gpu/report.json "$OUT/report_gpu_preset.json" 2>/dev/null
cp /tmp/run_gpu/log.txt "$OUT/run_gpu_log.txt" 2>/dev/null

fi
if want 5; then
step "5 smoke preset under torchrun, NCCL"
$PY -m causal_wsss.cli synth /tmp/dsmall --train 48 --val 16 --no-progress > /dev/null 2>&1
rm -rf /tmp/run_ddp
t0=$SECONDS
timeout 150 $PY -m torch.distributed.run --standalone --nproc_per_node 1 -m causal_wsss.cli run \
    --dataset voc --root /tmp/dsmall --preset smoke --rounds 1 --out /tmp/run_ddp --no-progress \
    > /tmp/run_ddp.out 2>&1
echo "exit $? after $((SECONDS - t0)) s" | tee -a "$LOG"
grep -v "^ *$" /tmp/run_ddp.out | tail -60 | tee -a "$LOG"
grep -i "process group" /tmp/run_ddp/log.txt | tee -a "$LOG"; cp /tmp/run_ddp/log.txt "$OUT/run_ddp_log.txt"
cp /tmp/run_ddp/report.json "$OUT/report_ddp_nccl.json" 2>/dev/null
fi
step "done"
