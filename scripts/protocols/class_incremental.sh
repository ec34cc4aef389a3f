#!/usr/bin/env bash
# Class-incremental learning (LAMM's Table 2): METHOD on SHOTS images per class of Set 1
# (the first half of DATASET's classes), then on Set 2 (the rest) starting from Set 1's
# prompts, then Set 1 tested again; tools/class_incremental.py runs the three stages in
#   $OUT/class_incremental/DATASET/shots_SHOTS/METHOD/CFG/seedSEED/{set1,set2,set1_after_set2}
# and prints Set 1 / Set 2 / Set 1 before Set 2 / degradation. The base-to-new configs.
#
#   DATA=/path/to/datasets bash scripts/METHOD/class_incremental.sh DATASET SEED
#
# Environment as for base2new_train.sh. Finished stages are skipped; an unfinished one resumes.
# All runs at once: python tools/class_incremental.py --table $OUT/class_incremental
set -euo pipefail
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
[ $# -eq 2 ] || usage
DATASET=$1
SEED=$2
SHOTS=${SHOTS:-16}
. "$(dirname "$0")/common.sh"
setup class_incremental "$DATASET"
prepare_method "$DATASET"
"$PYTHON" tools/class_incremental.py --output-dir "$OUT/class_incremental/$DATASET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED" \
    --root "$DATA" --seed "$SEED" --trainer "$TRAINER" --dataset-config-file "$DATASET_CFG" \
    --config-file "$TRAINER_CFG" MODEL.BACKBONE.NAME "$BACKBONE" DATASET.NUM_SHOTS "$SHOTS" \
    ${prepared_opts[@]+"${prepared_opts[@]}"} ${extra[@]+"${extra[@]}"}
