#!/usr/bin/env bash
# Cross-dataset transfer and domain generalisation, evaluation: the model trained by
# xd_train.sh (same SEED, SHOTS, SOURCE) evaluated zero-shot on the TARGET dataset (another
# dataset's classes, or imagenetv2 / imagenet_sketch / imagenet_a / imagenet_r), in
#   $OUT/cross_dataset/evaluation/METHOD/CFG_SHOTSshots/TARGET/seedSEED
#
#   DATA=/path/to/datasets bash scripts/METHOD/xd_test.sh TARGET SEED
#
# Environment as for xd_train.sh, and LOAD_EPOCH. A finished evaluation is skipped.
# CasPL_<X> evaluates with the source's boosting prompts, recorded in its checkpoint.
# PromptKD, as its xd scripts: on a dataset target, a student distilled from the SOURCE-tuned
# teacher on the target's own unlabeled training images (TRAINER.MODAL cross; its result is the
# test at the end, of its best epoch on the target's val split); on an ImageNet variant
# (imagenetv2, imagenet_sketch, imagenet_a, imagenet_r: test sets only), the SOURCE student.
set -euo pipefail
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
[ $# -eq 2 ] || usage
TARGET=$1
SEED=$2
SHOTS=${SHOTS:-}  # setup: 16 (PromptKD: 0)
SOURCE=${SOURCE:-imagenet}
. "$(dirname "$0")/common.sh"
setup cross_dataset "$TARGET"
DIR=$OUT/cross_dataset/evaluation/$TRAINER/${CFG}_${SHOTS}shots/$TARGET/seed$SEED
if [ "$METHOD" = PromptKD ] && [ "$TARGET" != "$SOURCE" ] && [[ " $DG_TARGETS " != *" $TARGET "* ]]; then
    prepare_method "$TARGET"
    train_method "$DIR" all
else
    eval_method "$DIR" "$OUT/cross_dataset/$SOURCE/$TRAINER/${CFG}_${SHOTS}shots/seed$SEED"
fi
