#!/usr/bin/env bash
# One whole table of the papers for METHOD: every dataset and seed of a protocol, each run
# skipped when finished, so the same command resumes an interrupted table.
#
#   DATA=/path/to/datasets bash scripts/METHOD/table.sh TABLE
#
# TABLE     base2new       base2new_train + base2new_test on the 11 datasets
#           few_shot       few_shot on the 11 datasets at 1, 2, 4, 8 and 16 shots
#           cross_dataset  xd_train on imagenet, xd_test on the 10 other datasets
#           dg             xd_train on imagenet, xd_test on imagenetv2, imagenet_sketch,
#                          imagenet_a and imagenet_r
#           class_incremental  class_incremental on the 11 datasets (LAMM's Table 2)
# Environment as for base2new_train.sh, and
#   SEEDS     default "1 2 3" (CasPL_PromptSRC's cross_dataset and dg: "1", as the authors ran it)
#   DATASETS  the datasets (base2new, few_shot) or targets (cross_dataset, dg) instead
#   SHOTS_LIST  the shots of the few-shot table (default "1 2 4 8 16")
# Then: python tools/parse_test_res.py --tree $OUT, or tools/make_tables.py (class_incremental:
# tools/class_incremental.py --table $OUT/class_incremental).
set -euo pipefail
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
[ $# -eq 1 ] || usage
HERE=$(cd "$(dirname "$0")" && pwd)  # keeps scripts/<METHOD> (the method is read from it)
ELEVEN="imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101"
method=$(basename "$HERE")
[ "$method" = protocols ] && method=${METHOD:-}
default_seeds="1 2 3"
case $method:$1 in CasPL_PromptSRC:cross_dataset | CasPL_PromptSRC:dg) default_seeds=1 ;; esac
SEEDS=${SEEDS:-$default_seeds}
case $1 in
    base2new)
        for dataset in ${DATASETS:-$ELEVEN}; do for seed in $SEEDS; do
            bash "$HERE/base2new_train.sh" "$dataset" "$seed"
            bash "$HERE/base2new_test.sh" "$dataset" "$seed"
        done; done ;;
    few_shot)
        for dataset in ${DATASETS:-$ELEVEN}; do for shots in ${SHOTS_LIST:-1 2 4 8 16}; do for seed in $SEEDS; do
            bash "$HERE/few_shot.sh" "$dataset" "$seed" "$shots"
        done; done; done ;;
    class_incremental)
        for dataset in ${DATASETS:-$ELEVEN}; do for seed in $SEEDS; do
            bash "$HERE/class_incremental.sh" "$dataset" "$seed"
        done; done ;;
    cross_dataset | dg)
        if [ "$1" = dg ]; then
            targets=${DATASETS:-imagenetv2 imagenet_sketch imagenet_a imagenet_r}
        else
            targets=${DATASETS:-${ELEVEN#imagenet }}
        fi
        for seed in $SEEDS; do
            bash "$HERE/xd_train.sh" "$seed"
            for target in $targets; do bash "$HERE/xd_test.sh" "$target" "$seed"; done
        done ;;
    *) usage ;;
esac
