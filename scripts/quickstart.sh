#!/usr/bin/env bash
# The whole CasPL story on a laptop CPU in minutes, on the SynthShapes world: 48 "<colour>
# <shape>" classes drawn on textured backgrounds (base = 24 classes, new = the other 24
# combinations of the same words) and two tiny CLIPs pretrained here, a student that saw
# mostly plain backgrounds and a larger teacher that saw the textured domain.
#   1. pretrain the student and the teacher (cached in $MODELS)
#   2. zero-shot student and teacher on the base and the new classes
#   3. PromptSRC on 16 shots of the base classes, evaluated on base and new
#   4. CasPL_Boost: boosting prompts on the student learn from the teacher, without labels
#   5. CasPL_PromptSRC: PromptSRC on top of the frozen boosting prompts, same protocol as 3
#   6. the table: base, new and HM per method
#
#   bash scripts/quickstart.sh
#
# Environment: OUT (default quickstart_output), MODELS (default $OUT/models), SEEDS (the
# phase-2 seeds, default "1"; "1 2 3" for the papers' protocol, with mean +- std), PYTHON.
# Finished steps are skipped on a second run; an interrupted training resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${OUT:-quickstart_output}
MODELS=${MODELS:-$OUT/models}
SEEDS=${SEEDS:-1}
DATA=$OUT/data
STUDENT=$MODELS/student.pt
TEACHER=$MODELS/teacher.pt
SHOTS=16
DATASET=synthshapes
start=$SECONDS

step() { printf '\n==== [%s, %d s] %s\n' "$1" $((SECONDS - start)) "$2"; }
finished() { [ -f "$1/results.json" ]; }
train() {  # train.py, unless the run in --output-dir $2 has written its result
    local what=$1 dir=$2
    shift 2
    if finished "$dir"; then
        echo "$what: done in $dir"
    else
        echo "$what -> $dir"
        "$PYTHON" train.py --root "$DATA" --dataset-config-file configs/datasets/$DATASET.yaml \
            --output-dir "$dir" "$@"
    fi
}

step 1/6 "pretrain the tiny student and teacher CLIPs (cached)"
"$PYTHON" tools/pretrain_tiny_clip.py student "$STUDENT"
"$PYTHON" tools/pretrain_tiny_clip.py teacher "$TEACHER"

step 2/6 "zero-shot CLIP: student and teacher, base and new classes"
for model in student teacher; do
    for sub in base new; do
        train "ZeroshotCLIP $model, $sub classes" "$OUT/zeroshot/$model/$sub" --trainer ZeroshotCLIP \
            --config-file configs/quickstart/zeroshot.yaml --eval-only \
            MODEL.BACKBONE.NAME "$MODELS/$model.pt" DATASET.SUBSAMPLE_CLASSES $sub
    done
done

# base-to-new for TRAINER and seed: train on the base classes, evaluate the last epoch on new
base2new() {
    local trainer=$1 seed=$2
    shift 2
    local runs=$OUT/base2new
    local train_dir=$runs/train_base/$DATASET/shots_$SHOTS/$trainer/quickstart/seed$seed
    local test_dir=$runs/test_new/$DATASET/shots_$SHOTS/$trainer/quickstart/seed$seed
    local common=(--seed "$seed" --trainer "$trainer" --config-file configs/quickstart/promptsrc.yaml
                  MODEL.BACKBONE.NAME "$STUDENT" DATASET.NUM_SHOTS $SHOTS)
    train "$trainer seed $seed, base classes" "$train_dir" "${common[@]}" DATASET.SUBSAMPLE_CLASSES base "$@"
    train "$trainer seed $seed, new classes" "$test_dir" --eval-only --model-dir "$train_dir" \
        --load-epoch 5 "${common[@]}" DATASET.SUBSAMPLE_CLASSES new
}

step 3/6 "PromptSRC, base-to-new (seeds: $SEEDS)"
for seed in $SEEDS; do base2new PromptSRC "$seed"; done

step 4/6 "CasPL_Boost: boosting prompts learn from the teacher on all unlabeled train images"
BOOST=$OUT/caspl_boost/$DATASET/seed1
train "CasPL_Boost" "$BOOST" --seed 1 --trainer CasPL_Boost --config-file configs/quickstart/caspl_boost.yaml \
    MODEL.BACKBONE.NAME "$STUDENT" TRAINER.CASPL.TEACHER "$TEACHER"

step 5/6 "CasPL_PromptSRC, base-to-new (seeds: $SEEDS)"
for seed in $SEEDS; do base2new CasPL_PromptSRC "$seed" TRAINER.CASPL.BOOST_CKPT "$BOOST"; done

step 6/6 "results on SynthShapes (test split, accuracy %)"
"$PYTHON" tools/base2new_table.py \
    --row "ZeroshotCLIP student" "$OUT/zeroshot/student/base" "$OUT/zeroshot/student/new" \
    --row "ZeroshotCLIP teacher" "$OUT/zeroshot/teacher/base" "$OUT/zeroshot/teacher/new" \
    --row "PromptSRC" "$OUT/base2new/train_base/$DATASET/shots_$SHOTS/PromptSRC/quickstart/seed*" \
                      "$OUT/base2new/test_new/$DATASET/shots_$SHOTS/PromptSRC/quickstart/seed*" \
    --row "CasPL_PromptSRC" "$OUT/base2new/train_base/$DATASET/shots_$SHOTS/CasPL_PromptSRC/quickstart/seed*" \
                            "$OUT/base2new/test_new/$DATASET/shots_$SHOTS/CasPL_PromptSRC/quickstart/seed*"
echo "(everything in $OUT/; $((SECONDS - start)) s)"
