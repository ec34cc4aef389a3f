#!/usr/bin/env bash
# CasPL few-shot classification for one dataset, seed and shot count: phase 1
# (scripts/caspl/boost.sh, skipped when done), then CasPL_PromptSRC trained on all classes
# with SHOTS images each and evaluated on the test split, in
#   $OUT/few_shot/DATASET/shots_SHOTS/CasPL_PromptSRC/vit_b16_c2_ep50_batch4_8+8ctx_l12_few_shot/seedSEED
#
#   DATA=/path/to/datasets bash scripts/caspl/few_shot.sh DATASET SEED SHOTS
#
# DATASET   a config name under configs/datasets (eurosat, imagenet, dtd, ...)
# GPA (PromptSRC's Gaussian prompt aggregation) as in the reference scripts: GPA_MEAN 45,
# GPA_STD 5 for stanford_cars, oxford_flowers, fgvc_aircraft, dtd and eurosat; the config's
# 30/30 otherwise (EXTRA comes last and overrides either).
# Environment: DATA (required), OUT, BACKBONE, TEACHER, EXTRA and PYTHON as for boost.sh.
# Skips a finished run (its log has "Finish training" and "=> result" and the final
# checkpoint exists); an unfinished one is resumed by train.py itself.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}
[ $# -eq 3 ] || usage
DATASET=$1
SEED=$2
SHOTS=$3
. "$(dirname "$0")/common.sh"  # DATA, OUT, BACKBONE, TEACHER, PYTHON, extra, max_epoch; cd to the repo

DATASET_CFG=configs/datasets/$DATASET.yaml
[ -f "$DATASET_CFG" ] || { echo "error: no dataset config $DATASET_CFG" >&2; exit 2; }
TRAINER=CasPL_PromptSRC
CFG=vit_b16_c2_ep50_batch4_8+8ctx_l12_few_shot
TRAINER_CFG=configs/trainers/PromptSRC/$CFG.yaml
DIR=$OUT/few_shot/$DATASET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED
EPOCHS=$(max_epoch "$DATASET_CFG" "$TRAINER_CFG" ${extra[@]+"${extra[@]}"})
case $DATASET in
    stanford_cars | oxford_flowers | fgvc_aircraft | dtd | eurosat) gpa=(TRAINER.PROMPTSRC.GPA_MEAN 45 TRAINER.PROMPTSRC.GPA_STD 5) ;;
    *) gpa=() ;;
esac

bash scripts/caspl/boost.sh "$DATASET"
BOOST_DIR=$OUT/caspl_boost/$DATASET/seed1

if [ -f "$DIR/log.txt" ] && grep -q "Finish training" "$DIR/log.txt" && grep -q "=> result" "$DIR/log.txt" \
        && compgen -G "$DIR/*/model.pth.tar-$EPOCHS" >/dev/null; then
    echo "$TRAINER $DATASET seed $SEED, $SHOTS shots: finished in $DIR, skipping"
    exit 0
fi
echo "$TRAINER $DATASET seed $SEED, $SHOTS shots -> $DIR"
"$PYTHON" train.py --root "$DATA" --seed "$SEED" --trainer "$TRAINER" \
    --dataset-config-file "$DATASET_CFG" --config-file "$TRAINER_CFG" --output-dir "$DIR" \
    MODEL.BACKBONE.NAME "$BACKBONE" DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES all \
    TRAINER.CASPL.BOOST_CKPT "$BOOST_DIR" ${gpa[@]+"${gpa[@]}"} ${extra[@]+"${extra[@]}"}
