#!/usr/bin/env bash
# Launch vLLM (0.12 or later) the way this platform needs it.
#
#   VLLM_MODEL=Qwen/Qwen2.5-7B-Instruct VLLM_API_KEY=secret ./serve.sh
#
# Every flag is explained in README.md next to this file. Extra arguments are
# passed to `vllm serve` as they are (e.g. --tensor-parallel-size 2).
set -euo pipefail

MODEL="${VLLM_MODEL:-Qwen/Qwen2.5-7B-Instruct}"
# The name clients and the platform's registry use (DEFAULT_MODEL).
SERVED_NAME="${VLLM_SERVED_NAME:-${MODEL}}"
# hermes: Qwen2.5 / Qwen3 / Hermes; llama3_json: Llama 3.1-3.3;
# mistral: Mistral; see `vllm serve --help=tool-call-parser` for the rest.
TOOL_PARSER="${VLLM_TOOL_CALL_PARSER:-hermes}"
MAX_MODEL_LEN="${VLLM_MAX_MODEL_LEN:-32768}"
HOST="${VLLM_HOST:-0.0.0.0}"
PORT="${VLLM_PORT:-8000}"
GPU_MEMORY="${VLLM_GPU_MEMORY_UTILIZATION:-0.90}"

args=(
  serve "${MODEL}"
  --host "${HOST}"
  --port "${PORT}"
  --served-model-name "${SERVED_NAME}"
  --max-model-len "${MAX_MODEL_LEN}"
  --gpu-memory-utilization "${GPU_MEMORY}"
  --enable-auto-tool-choice
  --tool-call-parser "${TOOL_PARSER}"
  --enable-prefix-caching
  --enable-prompt-tokens-details
  --generation-config vllm
)
if [[ -n "${VLLM_API_KEY:-}" ]]; then
  args+=(--api-key "${VLLM_API_KEY}")
fi

exec vllm "${args[@]}" "$@"
