#!/usr/bin/env bash
# One GPU session, end to end: CUDA benchmarks of the paper preset, then the bundled Crafter checkpoint
# (cpu-preset networks + the baselines) trained within a wall-clock budget, exported to fp16.
#
#   OUT=runs/gpu TRAIN_MINUTES=6 bash scripts/gpu_bundle.sh            # on a CUDA machine
#   OUT=/tmp/dry DEVICE=cpu TRAIN_MINUTES=1 BENCH=0 bash scripts/gpu_bundle.sh   # dry run
#
# Everything it makes lands in $OUT (flat, so it can be copied back from a remote machine):
# results.tgz (env.txt, bench_*.json, train.log, metrics.jsonl, the last evaluation's recon/dream media,
# ckpt/config.json + ckpt/state.pt) and the exported fp16 weights in <16 MiB parts (weights.part-aa, -ab):
#   cat weights.part-* > ckpt/weights.safetensors
set -u
OUT=${OUT:-runs/gpu}
DEVICE=${DEVICE:-cuda}
TRAIN_MINUTES=${TRAIN_MINUTES:-6}
BENCH=${BENCH:-1}
RUN=${RUN:-/tmp/deltaplay-gpu-run}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1
if [ -d .whl ] && ! python3 -c "import crafter" 2>/dev/null; then  # the GPU image lacks crafter/gymnasium
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
{ date; nproc; nvidia-smi -L 2>/dev/null; python3 -c "import torch, sys; print(sys.version); print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if [ "$BENCH" = 1 ]; then
  # Same workloads as docs/benchmarks.md; float32 then bf16 autocast.
  timeout 90 python3 -m app bench dream imagine train --preset paper --device "$DEVICE" --dtype float32 \
    --steps 30 --repeats 3 --warmup 1 --json "$OUT/bench_paper_float32.json" 2>&1 | tail -n 12
  timeout 45 python3 -m app bench dream imagine --preset paper --device "$DEVICE" --dtype bf16 \
    --steps 30 --repeats 3 --warmup 1 --json "$OUT/bench_paper_bf16.json" 2>&1 | tail -n 6
fi

# Crafter bundle: cpu-preset networks; the GPU affords bigger batches and more steps than the laptop schedule.
rm -rf "$RUN"
timeout --foreground -s TERM ${HARD_LIMIT_S:-$(( ${TRAIN_MINUTES%.*} * 60 + 40 ))} python3 -m app train --env crafter --preset cpu --baselines \
  --device "$DEVICE" --run-dir "$RUN" --seed 0 --quiet --minutes "$TRAIN_MINUTES" --frames 400000 \
  --set train.num_envs=12 --set train.initial_random_frames=20000 \
  --set train.tokenizer_batch=64 --set train.world_model_batch=32 --set train.actor_critic_batch=64 \
  --set train.first_epoch_tokenizer_steps=1500 --set train.first_epoch_world_model_steps=2000 \
  --set train.first_epoch_actor_critic_steps=300 --set train.steps_per_epoch=300 --set train.frames_per_epoch=3000 \
  --set train.eval_every=2 --set train.test_episodes=12 ${EXTRA_SET:-} 2>&1 | tail -n 5
# At most a few files come back from a remote machine: one archive of the small files + the weight parts.
mkdir -p "$OUT/small"
cp "$RUN/train.log" "$RUN/metrics.jsonl" "$RUN/config.json" "$OUT/env.txt" "$OUT"/bench_*.json "$OUT/small/" 2>/dev/null
last_media=$(ls -t "$RUN"/media/recon_* 2>/dev/null | head -1); [ -n "$last_media" ] && cp "$last_media" "$OUT/small/"
last_gif=$(ls -t "$RUN"/media/dream_* 2>/dev/null | head -1); [ -n "$last_gif" ] && cp "$last_gif" "$OUT/small/"
python3 -c "from model.checkpoint import export_checkpoint as e; e('$RUN/checkpoints/last', '$OUT/small/ckpt', half=True)" \
  && (cd "$OUT/small/ckpt" && split -b 15m weights.safetensors "$OUT/weights.part-" && rm weights.safetensors)
tar czf "$OUT/results.tgz" -C "$OUT/small" . && rm -rf "$OUT/small" "$OUT"/bench_*.json "$OUT/env.txt"
ls -la "$OUT"
