#!/usr/bin/env bash
# Base-to-new, evaluation: the model trained by base2new_train.sh (same DATASET, SEED, SHOTS)
# evaluated on the new classes, in
#   $OUT/base2new/test_new/DATASET/shots_SHOTS/METHOD/CFG/seedSEED
#
#   DATA=/path/to/datasets bash scripts/METHOD/base2new_test.sh DATASET SEED
#
# Environment as for base2new_train.sh, and LOAD_EPOCH, the epoch evaluated (default: the
# config's OPTIM.MAX_EPOCH, or one in EXTRA; PromptKD: its best epoch, as its config's
# TEST.FINAL_MODEL best_val). A finished evaluation is skipped. PromptKD evaluates the new
# half of the classes with the teacher recorded in the student's checkpoint.
set -euo pipefail
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
[ $# -eq 2 ] || usage
DATASET=$1
SEED=$2
SHOTS=${SHOTS:-}  # setup: 16 (PromptKD: 0)
. "$(dirname "$0")/common.sh"
setup base2new "$DATASET"
eval_method "$OUT/base2new/test_new/$DATASET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED" \
    "$OUT/base2new/train_base/$DATASET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED" \
    DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES new
