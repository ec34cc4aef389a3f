#!/usr/bin/env bash
# Base-to-new, training: METHOD on SHOTS images of each base class of DATASET, tested on the
# base classes at the end, in the reference layout
#   $OUT/base2new/train_base/DATASET/shots_SHOTS/METHOD/CFG/seedSEED
# For CasPL_<X>, phase 1 (scripts/caspl/boost.sh) runs first unless it is done; for PromptKD,
# its teacher (PromptSRC on TEACHER, base classes, in $OUT/promptkd_teacher/DATASET/base/seed1),
# then the student on every training image of DATASET (TRAINER.MODAL base2novel).
#
#   DATA=/path/to/datasets bash scripts/METHOD/base2new_train.sh DATASET SEED
#
# METHOD    the folder called through: CoOp, CoCoOp, IVLP, MaPLe, PromptSRC, LAMM, VPT, or CasPL_
#           before any of them, or PromptKD (scripts/protocols/ with METHOD set also works)
# DATASET   a config name under configs/datasets (eurosat, imagenet, dtd, ...)
# Environment:
#   DATA      dataset root (required)
#   OUT       output root (default: output/ in the repository)
#   BACKBONE  CLIP name or file, or open_clip:<arch>/<tag or file> (default ViT-B/16); TEACHER
#             for CasPL's phase 1 and PromptKD
#             (ViT-L/14; an OpenAI name or file, or open_clip:<arch>/<tag or file>)
#   TEACHER_CKPT  PromptKD: a ready teacher (a caspl PromptSRC run or checkpoint, or zero_shot
#             for TEACHER as it is) instead of tuning one; TEACHER_SHOTS its shots (16)
#   SHOTS     DATASET.NUM_SHOTS (default 16; PromptKD: 0, every image, as its scripts)
#   CFG_OVERRIDE  a config name under configs/trainers/<X>/ instead of the method's reference one
#   EXTRA     trailing KEY VALUE options for every train.py call (shell quoting; the method's
#             TRAINER.<S>.* not to the run preparing it: CasPL's phase 1, PromptKD's teacher)
#   PYTHON    the interpreter (default python)
# A finished training is skipped; an unfinished one resumes.
set -euo pipefail
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
[ $# -eq 2 ] || usage
DATASET=$1
SEED=$2
SHOTS=${SHOTS:-}  # setup: 16 (PromptKD: 0)
. "$(dirname "$0")/common.sh"
setup base2new "$DATASET"
prepare_method "$DATASET"
train_method "$OUT/base2new/train_base/$DATASET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED" base
