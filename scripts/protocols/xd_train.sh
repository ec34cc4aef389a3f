#!/usr/bin/env bash
# Cross-dataset transfer and domain generalisation, training: METHOD on SHOTS images of every
# class of the SOURCE dataset (default imagenet), in
#   $OUT/cross_dataset/SOURCE/METHOD/CFG_SHOTSshots/seedSEED
#
#   DATA=/path/to/datasets bash scripts/METHOD/xd_train.sh SEED
#
# Environment as for base2new_train.sh, and SOURCE. A finished training is skipped.
# CasPL_<X> first runs the xd phase 1 on SOURCE (scripts/caspl/boost.sh SOURCE xd_l1: 4+4
# boosting tokens at depth 1; xd_l3, depth 3, for CasPL_CoCoOp), then phase 2 with the
# authors' xd config (see docs/reproducing.md). The authors ran CasPL_PromptSRC's
# xd with seed 1 only (table.sh does the same), CasPL_MaPLe, _CoOp and _CoCoOp with seeds 1-3.
# PromptKD: its teacher (PromptSRC on TEACHER, every class of SOURCE, SOURCE's 16 shots), then
# a student distilled on SOURCE's training images (TRAINER.MODAL cross): the model that
# xd_test.sh evaluates on the ImageNet variants (its other targets train their own student).
set -euo pipefail
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
[ $# -eq 1 ] || usage
SEED=$1
SHOTS=${SHOTS:-}  # setup: 16 (PromptKD: 0)
SOURCE=${SOURCE:-imagenet}
. "$(dirname "$0")/common.sh"
setup cross_dataset "$SOURCE"
prepare_method "$SOURCE"
train_method "$OUT/cross_dataset/$SOURCE/$TRAINER/${CFG}_${SHOTS}shots/seed$SEED" all
