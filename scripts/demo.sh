#!/usr/bin/env bash
# A short CoOp run on a generated EuroSAT-layout dataset with a tiny generated CLIP (CPU, ~1 minute):
# train CoOp (class-specific context), then evaluate the saved prompts with --eval-only.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=${DEMO_DIR:-demo_output}
python tools/make_demo_data.py "$DEMO"
flags=(--root "$DEMO/data" --seed 1 --trainer CoOp
       --dataset-config-file configs/datasets/eurosat.yaml --config-file configs/trainers/CoOp/vit_b16_ep50.yaml)
opts=(MODEL.BACKBONE.NAME "$DEMO/tiny_clip.pt" INPUT.SIZE "(32, 32)" DATASET.NUM_SHOTS 8
      DATALOADER.TRAIN_X.BATCH_SIZE 8 OPTIM.MAX_EPOCH 10 OPTIM.LR 0.05
      TRAINER.COOP.CSC True TRAINER.COOP.N_CTX 4)
python train.py "${flags[@]}" --output-dir "$DEMO/coop" "${opts[@]}"
python train.py "${flags[@]}" --output-dir "$DEMO/coop_eval" --eval-only --model-dir "$DEMO/coop" --load-epoch 10 "${opts[@]}"
