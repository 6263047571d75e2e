#!/usr/bin/env bash
# A stage of the 16-token Crafter models from the bundle (checkpoints/crafter since session 31; STATE=folder for
# another), training the two world models in separate runs, on whatever device is at hand. The product's stage
# command is `deltaplay stage` (both world models on the same batches, the bundle's plan): this script is the
# experiment's own, kept for the runs of the model card's sessions 27-30.
#   1. one run: the tokenizer (the new strip weighed STRIP_WEIGHT, default 30), then the world model with I-tokens and the motion input;
#   2. one run: the world model without I-tokens on that tokenizer's code (from $STATE's when it holds one);
#   3. a bundle of those three with the shipped bundle's IRIS baseline and agent (fp16), scored on the held-out
#      key walks (keys and terrain, with and without I-tokens), and its three models again in $OUT/state.
#
#   OUT=/tmp/k16 DEVICE=cuda bash experiments/token_layout/stage.sh               # a lent GPU (about 10 minutes)
#   OUT=/tmp/k16 DEVICE=cpu TOK_STEPS=1500 WM_STEPS=2400 TWIN_STEPS=1500 bash experiments/token_layout/stage.sh
#   OUT=/tmp/k16dry DEVICE=cpu QUICK=1 bash experiments/token_layout/stage.sh     # dry run: a schedule of seconds
#
# TOK_EXTRA adds flags to the first run, e.g. TOK_EXTRA='--set train.tokenizer_closed_loop=0.5'.
# $OUT gets: the logs, bundle-eval.json and state/. The fp16 bundle stays in $RUNS/bundle-fp16 (copy it over
# checkpoints/crafter, keeping stage.json, when the scores beat the bundle's: the model card lists each stage).
set -eu
OUT=${OUT:-/tmp/k16-stage}
DEVICE=${DEVICE:-cuda}
RUNS=${RUNS:-/tmp/k16-runs}
SEED=${SEED:-120}
STATE=${STATE:-checkpoints/crafter}
# Fresh frames for each run: a world model passed over the same frames more than about ten times overfits them (on
# 24,000 frames its held-out NLL of scroll tokens rose from 2.30 at 300 steps to 3.04 at 1,700; session 29), so
# FRAMES grows with the steps (a step reads 32 x 21 frames). Collection runs at about 300 frames/s per 2 envs.
if [ "$DEVICE" = cpu ]; then
  TOK_STEPS=${TOK_STEPS:-1500}; WM_STEPS=${WM_STEPS:-2400}; TWIN_STEPS=${TWIN_STEPS:-1500}; FRAMES=${FRAMES:-160000}
  ENVS=${ENVS:-2}
else  # about 30 steps a second on an H200: minutes, with fresh frames collected on every core
  TOK_STEPS=${TOK_STEPS:-4000}; WM_STEPS=${WM_STEPS:-8000}; TWIN_STEPS=${TWIN_STEPS:-5000}; FRAMES=${FRAMES:-400000}
  ENVS=${ENVS:-16}
fi
TWIN_FRAMES=${TWIN_FRAMES:-$FRAMES}  # the twin reads fewer frames when it trains fewer steps
STRIP_WEIGHT=${STRIP_WEIGHT:-30}  # the new strip's weight in the tokenizer's loss (session 28: 30 learns it faster than 10)
AVERAGE=${AVERAGE:-0.998}  # each model ends its phase as its weights' average over about the last 500 steps (session 29)
WALKS=16
if [ "${QUICK:-0}" = 1 ]; then
  TOK_STEPS=3; WM_STEPS=3; TWIN_STEPS=3; FRAMES=300; TWIN_FRAMES=300; WALKS=2
fi
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD}
K16=(--set tokenizer.tokens_per_frame=16 --set tokenizer.vocab_size=64 --set "tokenizer.fsq_levels=[4,4,4]")
COMMON=(--env crafter --preset cpu --epochs 1 --device "$DEVICE" --quiet "${K16[@]}" --init actor_critic=checkpoints/crafter
        --set train.baselines=false --set train.random_repeat=0.75 --set train.initial_random_frames="$FRAMES"
        --set train.first_epoch_actor_critic_steps=0 --set train.test_episodes=0 --set train.checkpoint_every=200
        --set train.weight_average="$AVERAGE" --set train.num_envs="$ENVS")
rm -rf "$RUNS/main" "$RUNS/twin" "$RUNS/bundle" "$RUNS/bundle-fp16" "$OUT/state"

echo "$(date) 1/3 tokenizer ($TOK_STEPS steps) and world model ($WM_STEPS steps)"
python3 -m app train "${COMMON[@]}" --seed "$SEED" --run-dir "$RUNS/main" \
  --init tokenizer=$STATE --init world_model=$STATE --set world_model.motion_input=true \
  --set tokenizer.strip_weight="$STRIP_WEIGHT" --set train.tokenizer_seq=5 --set train.tokenizer_batch=8 \
  --set train.first_epoch_tokenizer_steps="$TOK_STEPS" --set train.first_epoch_world_model_steps="$WM_STEPS" \
  ${TOK_EXTRA:-} > "$OUT/main.log" 2>&1

echo "$(date) 2/3 the world model without I-tokens ($TWIN_STEPS steps)"
if python3 -c "from model.checkpoint import load_checkpoint as l; import sys; \
sys.exit(0 if 'world_model_no_itok' in l('$STATE', with_state=False).models else 1)" 2>/dev/null; then
  TWIN_INIT=$STATE:world_model_no_itok
else  # a state without one: the shipped bundle's, with new token tables (make_init)
  python3 -m experiments.token_layout.make_init checkpoints/crafter "$RUNS/k16-init" "${K16[@]}" > "$OUT/init.log" 2>&1
  TWIN_INIT=$RUNS/k16-init:world_model_no_itok
fi
python3 -m app train "${COMMON[@]}" --seed $((SEED + 1)) --run-dir "$RUNS/twin" --no-i-tokens \
  --init tokenizer="$RUNS/main/checkpoints/last" --init world_model="$TWIN_INIT" \
  --set train.first_epoch_tokenizer_steps=0 --set train.first_epoch_world_model_steps="$TWIN_STEPS" \
  --set train.initial_random_frames="$TWIN_FRAMES" > "$OUT/twin.log" 2>&1

echo "$(date) 3/3 the bundle, its scores and the new state"
M=$RUNS/main/checkpoints/last
python3 -m experiments.token_layout.assemble "$RUNS/bundle" --config "$M" --part tokenizer="$M" --part world_model="$M" \
  --part world_model_no_itok="$RUNS/twin/checkpoints/last:world_model" --part iris_tokenizer=checkpoints/crafter \
  --part actor_critic=checkpoints/crafter --set train.baselines=true --set "train.iris_fsq_levels=[4,4,4,4,4]" \
  > "$OUT/assemble.log" 2>&1
python3 -c "from model.checkpoint import export_checkpoint as e; e('$RUNS/bundle', '$RUNS/bundle-fp16'); \
e('$RUNS/bundle', '$OUT/state', names=('tokenizer', 'world_model', 'world_model_no_itok'))"
python3 -m app eval checkpoint "$RUNS/bundle-fp16" --parts keys terrain --walks "$WALKS" --device "$DEVICE" \
  --json "$OUT/bundle-eval.json" > "$OUT/eval.log" 2>&1
tail -n 25 "$OUT/eval.log"
echo "$(date) done: $OUT"
