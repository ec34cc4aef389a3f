#!/usr/bin/env bash
# CasPL base-to-new generalisation for one dataset and seed: phase 1 (scripts/caspl/boost.sh,
# skipped when done), then CasPL_METHOD trained on the base classes (16 shots) and evaluated
# on the new classes, in the reference layout:
#   $OUT/base2new/train_base/DATASET/shots_16/CasPL_METHOD/CFG/seedSEED   (train, base accuracy)
#   $OUT/base2new/test_new/DATASET/shots_16/CasPL_METHOD/CFG/seedSEED     (new accuracy)
#
#   DATA=/path/to/datasets bash scripts/caspl/base2new.sh DATASET SEED [METHOD]
#
# DATASET   a config name under configs/datasets (eurosat, imagenet, dtd, ...)
# METHOD    PromptSRC (default), MaPLe, CoOp or CoCoOp, with CasPL's phase-2 configs:
#           PromptSRC/vit_b16_c2_ep20_batch4_8+8ctx_l12, MaPLe/vit_b16_c8_ep5_batch4_8ctx_l12,
#           CoOp/vit_b16_c8_ep50, CoCoOp/vit_b16_c8_ep10_batch1
# Environment: DATA (required), OUT, BACKBONE, TEACHER, EXTRA and PYTHON as for boost.sh, and
#   SHOTS       DATASET.NUM_SHOTS (default 16)
#   LOAD_EPOCH  the epoch evaluated on the new classes (default: the config's OPTIM.MAX_EPOCH,
#               or an OPTIM.MAX_EPOCH in EXTRA)
# Skips a finished training (its log has "Finish training" and "=> result" and the final
# checkpoint exists) and a finished evaluation (its log has "=> result").
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}
[ $# -ge 2 ] && [ $# -le 3 ] || usage
DATASET=$1
SEED=$2
METHOD=${3:-PromptSRC}
SHOTS=${SHOTS:-16}
. "$(dirname "$0")/common.sh"  # DATA, OUT, BACKBONE, TEACHER, PYTHON, extra, max_epoch; cd to the repo

case $METHOD in
    PromptSRC) CFG=vit_b16_c2_ep20_batch4_8+8ctx_l12 ;;
    MaPLe) CFG=vit_b16_c8_ep5_batch4_8ctx_l12 ;;
    CoOp) CFG=vit_b16_c8_ep50 ;;
    CoCoOp) CFG=vit_b16_c8_ep10_batch1 ;;
    *) echo "error: METHOD must be PromptSRC, MaPLe, CoOp or CoCoOp, not $METHOD" >&2; exit 2 ;;
esac
DATASET_CFG=configs/datasets/$DATASET.yaml
[ -f "$DATASET_CFG" ] || { echo "error: no dataset config $DATASET_CFG" >&2; exit 2; }
TRAINER=CasPL_$METHOD
TRAINER_CFG=configs/trainers/$METHOD/$CFG.yaml
TRAIN_DIR=$OUT/base2new/train_base/$DATASET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED
TEST_DIR=$OUT/base2new/test_new/$DATASET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED
EPOCHS=$(max_epoch "$DATASET_CFG" "$TRAINER_CFG" ${extra[@]+"${extra[@]}"})
LOAD_EPOCH=${LOAD_EPOCH:-$EPOCHS}

bash scripts/caspl/boost.sh "$DATASET"
BOOST_DIR=$OUT/caspl_boost/$DATASET/seed1

flags=(--root "$DATA" --seed "$SEED" --trainer "$TRAINER"
       --dataset-config-file "$DATASET_CFG" --config-file "$TRAINER_CFG")
common=(MODEL.BACKBONE.NAME "$BACKBONE" DATASET.NUM_SHOTS "$SHOTS")

train_done() {
    [ -f "$TRAIN_DIR/log.txt" ] && grep -q "Finish training" "$TRAIN_DIR/log.txt" \
        && grep -q "=> result" "$TRAIN_DIR/log.txt" && compgen -G "$TRAIN_DIR/*/model.pth.tar-$EPOCHS" >/dev/null
}
if train_done; then
    echo "$TRAINER $DATASET seed $SEED, base classes: finished in $TRAIN_DIR, skipping"
else
    echo "$TRAINER $DATASET seed $SEED, base classes -> $TRAIN_DIR"
    "$PYTHON" train.py "${flags[@]}" --output-dir "$TRAIN_DIR" "${common[@]}" \
        DATASET.SUBSAMPLE_CLASSES base TRAINER.CASPL.BOOST_CKPT "$BOOST_DIR" ${extra[@]+"${extra[@]}"}
fi

if [ -f "$TEST_DIR/log.txt" ] && grep -q "=> result" "$TEST_DIR/log.txt"; then
    echo "$TRAINER $DATASET seed $SEED, new classes: evaluated in $TEST_DIR, skipping"
else
    echo "$TRAINER $DATASET seed $SEED, new classes (epoch $LOAD_EPOCH) -> $TEST_DIR"
    "$PYTHON" train.py "${flags[@]}" --output-dir "$TEST_DIR" \
        --eval-only --model-dir "$TRAIN_DIR" --load-epoch "$LOAD_EPOCH" "${common[@]}" \
        DATASET.SUBSAMPLE_CLASSES new ${extra[@]+"${extra[@]}"}
fi
