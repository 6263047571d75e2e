#!/usr/bin/env bash
# A lent GPU goes straight into the next training stage of the Crafter bundle: `deltaplay stage --device cuda`
# (the plan's set_gpu schedule, collection on every core), then the bundle and its plan come back.
#
#   OUT=/tmp/gpu MINUTES=7 bash scripts/gpu_bundle.sh                        # on the CUDA machine
#   OUT=/tmp/dry DEVICE=cpu MINUTES=2 QUICK=1 bash scripts/gpu_bundle.sh     # dry run here (a tiny schedule)
#
# $OUT gets: stage.log, env.txt, stage-eval.json, stage.json (the bundle's plan, with this stage in its
# history) and, when the stage beat the bundle, the new weights in <16 MiB parts (weights.part-aa, -ab, ...):
#   cat weights.part-* > checkpoints/crafter/weights.safetensors && cp config.json state.pt stage.json checkpoints/crafter/
# BENCH=1 also runs the paper-preset CUDA benchmarks afterwards (docs/benchmarks.md).
set -u
OUT=${OUT:-/tmp/gpu}
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-7}
BENCH=${BENCH:-0}
RUN=${RUN:-/tmp/deltaplay-stage}
BUNDLE=${BUNDLE:-checkpoints/crafter}
mkdir -p "$OUT"
if [ "${QUICK:-0}" = 1 ] && [ "$BUNDLE" = checkpoints/crafter ]; then  # a dry run leaves the repo's bundle alone
  rm -rf /tmp/deltaplay-dry-bundle && cp -r checkpoints/crafter /tmp/deltaplay-dry-bundle && BUNDLE=/tmp/deltaplay-dry-bundle
fi
export PYTHONUNBUFFERED=1 GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1
if [ -d .whl ] && ! python3 -c "import crafter" 2>/dev/null; then  # an image without crafter/gymnasium
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
{ date; nproc; nvidia-smi -L 2>/dev/null; python3 -c "import torch, sys; print(sys.version); print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

QUICK_SET=()
if [ "${QUICK:-0}" = 1 ]; then  # the dry run: the same path with a schedule of seconds
  QUICK_SET=(--set train.initial_random_frames=300 --set train.first_epoch_world_model_steps=4
             --set train.first_epoch_actor_critic_steps=2 --set train.test_episodes=1 --walks 2)
fi
rm -rf "$RUN"
before=$(sha256sum "$BUNDLE/weights.safetensors" | cut -d' ' -f1)
# The stage's own budget stops training in time (a checkpoint either way); the hard limit only guards a hang.
timeout --foreground -s TERM $(( ${MINUTES%.*} * 60 + 420 )) python3 -m app stage --bundle "$BUNDLE" \
  --device "$DEVICE" --minutes "$MINUTES" --run-dir "$RUN" --quiet "${QUICK_SET[@]}" > "$OUT/stage.log" 2>&1
echo "stage exit code $?" >> "$OUT/stage.log"
tail -n 5 "$OUT/stage.log"
cp "$BUNDLE/stage.json" "$OUT/" 2>/dev/null
cp "$RUN/stage-eval.json" "$RUN/train.log" "$OUT/" 2>/dev/null
if [ "$(sha256sum "$BUNDLE/weights.safetensors" | cut -d' ' -f1)" = "$before" ]; then
  echo "bundle weights unchanged" >> "$OUT/stage.log"
else
  cp "$BUNDLE/config.json" "$BUNDLE/state.pt" "$OUT/"
  split -b 15m "$BUNDLE/weights.safetensors" "$OUT/weights.part-"
fi

if [ "$BENCH" = 1 ]; then
  timeout 90 python3 -m app bench dream imagine train --preset paper --device "$DEVICE" --dtype float32 \
    --steps 30 --repeats 3 --warmup 1 --json "$OUT/bench_paper_float32.json" 2>&1 | tail -n 12
fi
ls -la "$OUT"
