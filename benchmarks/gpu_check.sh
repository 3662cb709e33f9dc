#!/usr/bin/env bash
# The GPU check, one prepared script; each section runs by name and takes under 3 minutes.
#   benchmarks/gpu_check.sh            # every section
#   benchmarks/gpu_check.sh rl         # only DQN and PPO on CartPole, cuda vs cpu
#   benchmarks/gpu_check.sh generative # PixelCNN, VAE, GAN: one epoch, cuda (fp32/bf16/fp16) vs cpu
#   benchmarks/gpu_check.sh alphazero  # 9x9 AlphaZero self-play + training, cuda vs cpu
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
  for m in pixelcnn vae gan; do
    for run in "cpu fp32" "cuda fp32" "cuda bf16" "cuda fp16"; do
      set -- $run
      # one epoch through the shared trainer; examples/s from the runner's summary line
      lab train "mnist-$m" train.epochs=1 train.final_eval=none train.sample_n=1 \
        train.precision="$2" --device "$1" --no-progress --tracking-uri "$store" \
        | grep "examples/s" | sed "s/^/$1 $2: /"
    done
  done
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

sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(rl generative alphazero)
for s in "${sections[@]}"; do
  echo "== section $s"
  "section_$s"
done
