#!/usr/bin/env bash
# Few-shot classification: METHOD on SHOTS images of every class of DATASET, tested on all
# classes, in
#   $OUT/few_shot/DATASET/shots_SHOTS/METHOD/CFG/seedSEED
# Reference schedules: CoOp 50 epochs at 1 shot, 100 at 2-4, 200 at 8-16 (vit_b16_ep50,
# vit_b16_ep100, vit_b16); PromptSRC's GPA at mean 45, std 5 for stanford_cars,
# oxford_flowers, fgvc_aircraft, dtd and eurosat (EXTRA comes last and overrides either).
#
#   DATA=/path/to/datasets bash scripts/METHOD/few_shot.sh DATASET SEED SHOTS
#
# Environment as for base2new_train.sh. A finished training is skipped; an unfinished one resumes.
set -euo pipefail
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
[ $# -eq 3 ] || usage
DATASET=$1
SEED=$2
SHOTS=$3
. "$(dirname "$0")/common.sh"
method_from_path "$0"
if [ "$METHOD" = CoOp ] && [ -z "${CFG_OVERRIDE:-}" ]; then
    case $SHOTS in 1) CFG_OVERRIDE=vit_b16_ep50 ;; 2 | 4) CFG_OVERRIDE=vit_b16_ep100 ;; *) CFG_OVERRIDE=vit_b16 ;; esac
fi
method_config few_shot
dataset_config "$DATASET"
method_opts=()
case $HOST:$DATASET in
    PromptSRC:stanford_cars | PromptSRC:oxford_flowers | PromptSRC:fgvc_aircraft | PromptSRC:dtd | PromptSRC:eurosat)
        method_opts=(TRAINER.PROMPTSRC.GPA_MEAN 45 TRAINER.PROMPTSRC.GPA_STD 5) ;;
esac
prepare_method "$DATASET"
train_method "$OUT/few_shot/$DATASET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED" all ${method_opts[@]+"${method_opts[@]}"}
