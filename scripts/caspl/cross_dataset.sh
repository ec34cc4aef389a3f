#!/usr/bin/env bash
# CasPL cross-dataset transfer: phase 1 on ImageNet (scripts/caspl/boost.sh, batch-128 config;
# skipped when done), CasPL_PromptSRC trained on ImageNet (all classes, 16 shots), then
# evaluated on each TARGET dataset, in
#   $OUT/cross_dataset/imagenet/CasPL_PromptSRC/CFG_16shots/seedSEED                (training)
#   $OUT/cross_dataset/evaluation/CasPL_PromptSRC/CFG_16shots/TARGET/seedSEED       (each target)
# with CFG = vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.
#
#   DATA=/path/to/datasets bash scripts/caspl/cross_dataset.sh SEED TARGET...
#
# TARGET    config names under configs/datasets (caltech101, dtd, imagenet_a, imagenetv2, ...)
# Environment: DATA (required), OUT, BACKBONE, TEACHER, EXTRA and PYTHON as for boost.sh, and
#   SHOTS       DATASET.NUM_SHOTS on the source (default 16)
#   SOURCE      the source dataset config (default imagenet)
#   LOAD_EPOCH  the epoch evaluated (default: the config's OPTIM.MAX_EPOCH, or one in EXTRA)
# Skips a finished training (its log has "Finish training" and "=> result" and the final
# checkpoint exists) and a finished evaluation (its log has "=> result").
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}
[ $# -ge 2 ] || usage
SEED=$1
shift
TARGETS=("$@")
SOURCE=${SOURCE:-imagenet}
SHOTS=${SHOTS:-16}
. "$(dirname "$0")/common.sh"  # DATA, OUT, BACKBONE, TEACHER, PYTHON, extra, max_epoch; cd to the repo

for dataset in "$SOURCE" "${TARGETS[@]}"; do
    [ -f "configs/datasets/$dataset.yaml" ] || { echo "error: no dataset config configs/datasets/$dataset.yaml" >&2; exit 2; }
done
TRAINER=CasPL_PromptSRC
CFG=vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets
TRAINER_CFG=configs/trainers/PromptSRC/$CFG.yaml
SOURCE_CFG=configs/datasets/$SOURCE.yaml
TRAIN_DIR=$OUT/cross_dataset/$SOURCE/$TRAINER/${CFG}_${SHOTS}shots/seed$SEED
EPOCHS=$(max_epoch "$SOURCE_CFG" "$TRAINER_CFG" ${extra[@]+"${extra[@]}"})
LOAD_EPOCH=${LOAD_EPOCH:-$EPOCHS}

bash scripts/caspl/boost.sh "$SOURCE"
BOOST_DIR=$OUT/caspl_boost/$SOURCE/seed1

if [ -f "$TRAIN_DIR/log.txt" ] && grep -q "Finish training" "$TRAIN_DIR/log.txt" \
        && grep -q "=> result" "$TRAIN_DIR/log.txt" && compgen -G "$TRAIN_DIR/*/model.pth.tar-$EPOCHS" >/dev/null; then
    echo "$TRAINER $SOURCE seed $SEED: finished in $TRAIN_DIR, skipping"
else
    echo "$TRAINER $SOURCE seed $SEED, $SHOTS shots -> $TRAIN_DIR"
    "$PYTHON" train.py --root "$DATA" --seed "$SEED" --trainer "$TRAINER" \
        --dataset-config-file "$SOURCE_CFG" --config-file "$TRAINER_CFG" --output-dir "$TRAIN_DIR" \
        MODEL.BACKBONE.NAME "$BACKBONE" DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES all \
        TRAINER.CASPL.BOOST_CKPT "$BOOST_DIR" ${extra[@]+"${extra[@]}"}
fi

for target in "${TARGETS[@]}"; do
    TEST_DIR=$OUT/cross_dataset/evaluation/$TRAINER/${CFG}_${SHOTS}shots/$target/seed$SEED
    if [ -f "$TEST_DIR/log.txt" ] && grep -q "=> result" "$TEST_DIR/log.txt"; then
        echo "$TRAINER $SOURCE -> $target seed $SEED: evaluated in $TEST_DIR, skipping"
        continue
    fi
    echo "$TRAINER $SOURCE -> $target seed $SEED (epoch $LOAD_EPOCH) -> $TEST_DIR"
    "$PYTHON" train.py --root "$DATA" --seed "$SEED" --trainer "$TRAINER" \
        --dataset-config-file "configs/datasets/$target.yaml" --config-file "$TRAINER_CFG" --output-dir "$TEST_DIR" \
        --eval-only --model-dir "$TRAIN_DIR" --load-epoch "$LOAD_EPOCH" \
        MODEL.BACKBONE.NAME "$BACKBONE" ${extra[@]+"${extra[@]}"}
done
