#!/usr/bin/env bash
# The README's test command: install what the tests need, then run the whole suite.
#   - CPU torch first, so pip never pulls a multi-GB CUDA build (GPU users keep their own torch);
#   - Chromium (browser tests) and Xvfb/xdotool (real-window test) from apt when we are root and they
#     are missing; without them those tests skip with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && { [ ! -x /usr/bin/chromium ] || ! command -v xvfb-run >/dev/null || ! command -v xdotool >/dev/null; }; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium xvfb xdotool >/dev/null) \
    || echo "apt-get failed: browser and window tests will be skipped"
fi
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
pip install -q -e '.[dev]'
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1
# Two workers, one test file each at a time (a file's server or browser stays in one worker): the suite waits on
# child processes, servers and browsers much of the time, so two workers overlap those waits on 2 cores.
python -m pytest -q -n "${DELTAPLAY_TEST_WORKERS:-2}" --dist loadfile "$@"
