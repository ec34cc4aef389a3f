#!/usr/bin/env bash
# CasPL phase 1 (CasPL_Boost) for one dataset: boosting prompts on the student learn, without
# labels, from a larger teacher CLIP on the dataset's whole train split. Seed 1, as the
# reference; one run per dataset and setting serves every phase-2 method, seed and shot count.
#
#   DATA=/path/to/datasets bash scripts/caspl/boost.sh DATASET [SETTING]
#
# DATASET   a config name under configs/datasets (eurosat, imagenet, dtd, ...)
# SETTING   which boosting prompts (configs/trainers/CasPL_Boost/), as the authors' scripts:
#             (none)  base-to-new, few-shot: 8+8 tokens at depth 12 (ImageNet: batch 128,
#                     vit_b16_c2_ep20_batch128_lr0025_8+8ctx_l12; others: batch 4,
#                     vit_b16_c2_ep20_batch4_8+8ctx_l12), into $OUT/caspl_boost/DATASET/seed1
#             xd_l1   cross-dataset / domain generalisation (phase 2 PromptSRC, MaPLe, CoOp):
#                     4+4 tokens at depth 1, vit_b16_c2_ep20_batch128_lr0025_4+4ctx_l1, into
#                     $OUT/caspl_boost_xd_l1/DATASET/seed1
#             xd_l3   the same for CoCoOp: 4+4 tokens at depth 3, ..._4+4ctx_l3, into
#                     $OUT/caspl_boost_xd_l3/DATASET/seed1
# Environment:
#   DATA      dataset root (required)
#   OUT       output root (default: output/ in the repository)
#   BACKBONE  student CLIP (default ViT-B/16); TEACHER teacher CLIP (default ViT-L/14):
#             OpenAI names or checkpoint files
#   EXTRA     trailing KEY VALUE options appended to every train.py call (but TRAINER.<S>.* for
#             a section S other than CASPL: the phase-2 method's), read with shell
#             quoting; quote a value that holds spaces: EXTRA='INPUT.SIZE "(32, 32)" OPTIM.MAX_EPOCH 2'
#             (a bracketed value left unquoted, INPUT.SIZE (32, 32), is also kept whole)
#   PYTHON    the interpreter (default python)
# Skips when the final checkpoint exists; an unfinished run is resumed by train.py itself.
# Relative DATA, OUT, BACKBONE and TEACHER paths are taken from the directory you call from.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}
[ $# -eq 1 ] || [ $# -eq 2 ] || usage
DATASET=$1
SETTING=${2:-}
# DATA, OUT, BACKBONE, TEACHER, PYTHON, extra, max_epoch, boost_setting; cd to the repo
. "$(dirname "$0")/../protocols/common.sh"

DATASET_CFG=configs/datasets/$DATASET.yaml
[ -f "$DATASET_CFG" ] || { echo "error: no dataset config $DATASET_CFG" >&2; exit 2; }
boost_setting "$SETTING" "$DATASET"
TRAINER_CFG=configs/trainers/CasPL_Boost/$BOOST_CFG.yaml
DIR=$BOOST_DIR
extra_for CASPL  # EXTRA without the method's own sections
EPOCHS=$(max_epoch "$DATASET_CFG" "$TRAINER_CFG" ${prep_extra[@]+"${prep_extra[@]}"})

if [ -f "$DIR/BoostPrompts/model.pth.tar-$EPOCHS" ]; then
    echo "CasPL_Boost $DATASET${SETTING:+ ($SETTING)}: finished in $DIR, skipping"
    exit 0
fi
echo "CasPL_Boost $DATASET${SETTING:+ ($SETTING)} -> $DIR"
"$PYTHON" train.py --root "$DATA" --seed 1 --trainer CasPL_Boost \
    --dataset-config-file "$DATASET_CFG" --config-file "$TRAINER_CFG" --output-dir "$DIR" \
    MODEL.BACKBONE.NAME "$BACKBONE" TRAINER.CASPL.TEACHER "$TEACHER" ${prep_extra[@]+"${prep_extra[@]}"}
