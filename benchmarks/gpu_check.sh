#!/usr/bin/env bash
# The GPU check, one prepared script; each section runs by name and takes under 3 minutes.
#   benchmarks/gpu_check.sh            # every section
#   benchmarks/gpu_check.sh rl         # only DQN and PPO on CartPole, cuda vs cpu
#   benchmarks/gpu_check.sh generative # PixelCNN, VAE, GAN: 2 epochs, cuda (fp32/bf16/fp16) vs cpu
#   benchmarks/gpu_check.sh alphazero  # 9x9 AlphaZero self-play + training, cuda vs cpu
#   benchmarks/gpu_check.sh pixels     # Pong DQN, cuda vs cpu; torchrun with nccl on 2+ GPUs
# Sections print steps/s on cuda next to the cpu figure from the same machine and run.
set -euo pipefail
cd "$(dirname "$0")/.."
export SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy
store="sqlite:///$(mktemp -d)/mlflow.db"

section_rl() {
  python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: this section needs a GPU"
print(torch.cuda.get_device_name(0))
PY
  for algo in dqn ppo; do
    for device in cpu cuda; do
      # end to end through the CLI: a tracked run, checkpoints, eval, GIF
      lab train "cartpole-$algo" train.steps=20000 train.eval_episodes=5 --device "$device" \
        --no-progress --tracking-uri "$store" | grep "steps/s" | sed "s/^/$device: /"
    done
  done
}

section_generative() {
  python -c 'import torch; assert torch.cuda.is_available(), "this section needs a GPU"'
  # one process, every leg: 2 epochs of each mnist-* preset (its compile, channels-last, EMA),
  # the second epoch's examples/s (the first pays torch.compile and the warm-up); the cpu leg on
  # the first 256 digits, all 4,500 on cuda
  timeout 175 python benchmarks/gpu_generative.py \
    --legs cpu:fp32:256 cuda:fp32 cuda:bf16 cuda:fp16 || true
}

section_alphazero() {
  python -c 'import torch; assert torch.cuda.is_available(), "this section needs a GPU"'
  for device in cpu cuda; do
    # go9-alphazero's network and search (64x6, 100 simulations, leaves in batches of 8): the
    # first iteration's line (one self-play game + 50 training steps) gives positions/s and
    # games/hour of self-play; the run is cut off during the second iteration
    timeout 85 lab train go9-alphazero alphazero.iterations=2 alphazero.games_per_iteration=1 \
      alphazero.train_steps=50 alphazero.eval_every=100 --device "$device" \
      --tracking-uri "$store" | grep -m1 "positions/s" | sed "s/^/$device: /" || true
  done
}

section_pixels() {
  python -c 'import torch; assert torch.cuda.is_available(), "this section needs a GPU"'
  # pong-dqn with training from step 1000 (the preset waits 1e5 random steps first): about two
  # minutes on cuda, a short run on cpu; an env step is 4 Atari frames (frame skip 4)
  for run in "cuda 30000" "cpu 3000"; do
    set -- $run
    timeout 150 lab train pong-dqn agent.learning_starts=1000 train.steps="$2" \
      train.eval_episodes=1 train.gif_max_frames=10 --device "$1" --no-progress \
      --tracking-uri "$store" | grep "steps/s" | sed "s/^/$1: /" || true
  done
  echo "(frames/s = 4 x steps/s)"
  gpus=$(python -c 'import torch; print(torch.cuda.device_count())')
  if [ "$gpus" -gt 1 ]; then
    # the data-parallel test's run on nccl: two ranks, one mlflow run
    timeout 120 torchrun --standalone --nproc-per-node 2 -m lab train digits-vae \
      train.epochs=10 train.final_eval=none --device cuda --no-progress \
      --tracking-uri "$store" | grep "examples/s" | sed "s/^/nccl x2: /" || true
  else
    echo "one GPU: the nccl torchrun check needs two"
  fi
}

sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(rl generative alphazero pixels)
for s in "${sections[@]}"; do
  echo "== section $s"
  "section_$s"
done
