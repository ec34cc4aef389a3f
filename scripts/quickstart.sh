#!/usr/bin/env bash
# The whole CasPL story on a laptop CPU in minutes, on the SynthShapes world: 48 "<colour>
# <shape>" classes photographed under a coloured lamp that shifts every hue (base = red,
# orange, yellow and green objects; new = teal, blue, purple and pink ones), and two tiny
# CLIPs: a student that only ever saw daylight photos and a larger teacher that saw both.
#   1. the tiny student and teacher CLIPs (shipped in models/synthshapes, checksums verified)
#   2. zero-shot student and teacher on the base and the new classes
#   3. CasPL_Boost: boosting prompts on the student learn from the teacher on every unlabeled
#      train photo, then "student + boosting prompts" zero-shot on base and new
#   4. PromptSRC and CasPL_PromptSRC (same config, plus the frozen boosting prompts) on 16
#      shots of the base classes, evaluated on base and new
#   5. PromptKD, CasPL's closest relative: its teacher (PromptSRC on the teacher CLIP, 16
#      shots of the base classes), then the student's image encoder with visual prompts and a
#      projector distilled from it on every unlabeled train photo, evaluated on base and new
#   6. the decoupling table of the paper: student, student + boosting, teacher, PromptSRC,
#      CasPL_PromptSRC, PromptKD's teacher and PromptKD (mean +- std over seeds and each
#      seed's HM)
#
#   bash scripts/quickstart.sh        # the above, seeds 1 2 3 (about 6 minutes on 2 cores)
#   bash scripts/quickstart.sh all    # also CoOp, CoCoOp and MaPLe with and without CasPL,
#                                     # and the four-method table (about 13 minutes)
#
# Environment: OUT (default quickstart_output), SEEDS (default "1 2 3"), PRETRAIN=1 (pretrain
# the two CLIPs with tools/pretrain_tiny_clip.py into $OUT/models instead of using the shipped
# ones), PYTHON. Phase 1 runs once per seed (the reference runs it once, with seed 1), so the
# spread over seeds includes phase 1's. Finished steps are skipped on a second run (in the same
# world: an OUT made with other models, configs or dataset code is refused); an interrupted
# training resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-paper}
case $MODE in
    paper) METHODS="PromptSRC" ;;
    all) METHODS="PromptSRC CoOp CoCoOp MaPLe" ;;
    *) echo "usage: bash scripts/quickstart.sh [all]" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-python}
OUT=${OUT:-quickstart_output}
SEEDS=${SEEDS:-1 2 3}
DATA=$OUT/data
DATASET=synthshapes
SHOTS=16
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

step 1/6 "the tiny student and teacher CLIPs"
if [ "${PRETRAIN:-0}" = 1 ]; then
    MODELS=$OUT/models
    "$PYTHON" tools/pretrain_tiny_clip.py student "$MODELS/student.pt"
    "$PYTHON" tools/pretrain_tiny_clip.py teacher "$MODELS/teacher.pt"
else
    MODELS=models/synthshapes
    (cd "$MODELS" && sha256sum --check --quiet SHA256SUMS) \
        || { echo "error: $MODELS does not match its SHA256SUMS (PRETRAIN=1 makes new ones)" >&2; exit 2; }
    echo "shipped models in $MODELS (checksums verified; PRETRAIN=1 pretrains new ones)"
fi
STUDENT=$MODELS/student.pt
TEACHER=$MODELS/teacher.pt
# Finished runs are skipped, so they must come from this world: the models, the dataset's
# generator and the configs. A stamp in $OUT says which world made its runs.
world=$(cat "$STUDENT" "$TEACHER" datasets/synthshapes.py configs/quickstart/*.yaml | sha256sum | cut -c1-16)
if [ -f "$OUT/world" ]; then
    [ "$(cat "$OUT/world")" = "$world" ] || { echo "error: $OUT holds runs of another world (other models, configs/quickstart or SynthShapes); use another OUT or delete it" >&2; exit 2; }
elif [ -d "$OUT/zeroshot" ] || [ -d "$OUT/caspl_boost" ] || [ -d "$OUT/base2new" ]; then
    echo "error: $OUT holds runs of an earlier quickstart, made in another world; use another OUT or delete it" >&2
    exit 2
else
    mkdir -p "$OUT" && echo "$world" > "$OUT/world"
fi

step 2/6 "zero-shot CLIP: student and teacher, base and new classes"
for model in student teacher; do
    for sub in base new; do
        train "ZeroshotCLIP $model, $sub classes" "$OUT/zeroshot/$model/$sub" --trainer ZeroshotCLIP \
            --config-file configs/quickstart/zeroshot.yaml --eval-only \
            MODEL.BACKBONE.NAME "$MODELS/$model.pt" DATASET.SUBSAMPLE_CLASSES $sub
    done
done

step 3/6 "CasPL_Boost: boosting prompts learn from the teacher on all unlabeled train photos (seeds: $SEEDS)"
boost_dir() { echo "$OUT/caspl_boost/$DATASET/seed$1"; }
for seed in $SEEDS; do
    train "CasPL_Boost seed $seed" "$(boost_dir "$seed")" --seed "$seed" --trainer CasPL_Boost \
        --config-file configs/quickstart/caspl_boost.yaml MODEL.BACKBONE.NAME "$STUDENT" TRAINER.CASPL.TEACHER "$TEACHER"
    for sub in base new; do
        train "student + boosting prompts seed $seed, $sub classes" "$OUT/zeroshot/boosted/$sub/seed$seed" \
            --seed "$seed" --trainer CasPL_ZeroshotCLIP --config-file configs/quickstart/zeroshot.yaml --eval-only \
            MODEL.BACKBONE.NAME "$STUDENT" DATASET.SUBSAMPLE_CLASSES $sub TRAINER.CASPL.BOOST_CKPT "$(boost_dir "$seed")"
    done
done

# base-to-new for TRAINER and seed: train on the base classes, evaluate the last epoch on new,
# in run_dir train_base|test_new NAME SEED; the caller may set name (default TRAINER), clip
# (default the student) and shots (default SHOTS)
runs=$OUT/base2new
run_dir() { echo "$runs/$1/$DATASET/shots_${shots:-$SHOTS}/$2/quickstart/seed$3"; }
base2new() {
    local trainer=$1 config=$2 seed=$3
    shift 3
    local train_dir test_dir
    train_dir=$(run_dir train_base "${name:-$trainer}" "$seed")
    test_dir=$(run_dir test_new "${name:-$trainer}" "$seed")
    local epochs
    epochs=$(sed -n 's/^  MAX_EPOCH: *//p' "$config")
    local common=(--seed "$seed" --trainer "$trainer" --config-file "$config"
                  MODEL.BACKBONE.NAME "${clip:-$STUDENT}" DATASET.NUM_SHOTS "${shots:-$SHOTS}")
    train "$trainer seed $seed, base classes" "$train_dir" "${common[@]}" DATASET.SUBSAMPLE_CLASSES base "$@"
    train "$trainer seed $seed, new classes" "$test_dir" --eval-only --model-dir "$train_dir" \
        --load-epoch "$epochs" "${common[@]}" DATASET.SUBSAMPLE_CLASSES new
}

step 4/6 "$METHODS and CasPL_<each>, base-to-new (seeds: $SEEDS)"
for method in $METHODS; do
    config=configs/quickstart/$(echo "$method" | tr '[:upper:]' '[:lower:]').yaml
    for seed in $SEEDS; do
        base2new "$method" "$config" "$seed"
        base2new "CasPL_$method" "$config" "$seed" TRAINER.CASPL.BOOST_CKPT "$(boost_dir "$seed")"
    done
done

step 5/6 "PromptKD: its teacher (PromptSRC on the teacher CLIP), then its student on all unlabeled train photos (seeds: $SEEDS)"
for seed in $SEEDS; do
    name=PromptSRC_teacher clip=$TEACHER base2new PromptSRC configs/quickstart/promptsrc.yaml "$seed"
    shots=0 base2new PromptKD configs/quickstart/promptkd.yaml "$seed" TRAINER.PROMPTKD.TEACHER_NAME "$TEACHER" \
        TRAINER.PROMPTKD.TEACHER_CKPT "$(run_dir train_base PromptSRC_teacher "$seed")"
done

step 6/6 "results on SynthShapes (test split, accuracy %)"
student_row=(--row "student (ZeroshotCLIP)" "$OUT/zeroshot/student/base" "$OUT/zeroshot/student/new")
comparison() {  # the table's --row and --lift arguments for X and CasPL_X of each method given
    args=()
    for m in "$@"; do
        for t in "$m" "CasPL_$m"; do
            args+=(--row "$t" "$(run_dir train_base "$t" "*")" "$(run_dir test_new "$t" "*")")
        done
    done
    for m in "$@"; do args+=(--lift "$m" "CasPL_$m"); done
}
status=0
echo "The decoupling table (student 64 wide, 3+3 layers; teacher 128 wide, 4+4 layers; seeds $SEEDS)"
comparison PromptSRC
"$PYTHON" tools/base2new_table.py "${student_row[@]}" \
    --row "student + boosting prompts" "$OUT/zeroshot/boosted/base/seed*" "$OUT/zeroshot/boosted/new/seed*" \
    --row "teacher (ZeroshotCLIP)" "$OUT/zeroshot/teacher/base" "$OUT/zeroshot/teacher/new" "${args[@]}" \
    --row "teacher + PromptSRC (PromptKD's teacher)" "$(run_dir train_base PromptSRC_teacher "*")" \
        "$(run_dir test_new PromptSRC_teacher "*")" \
    --row "PromptKD (student)" "$(shots=0 run_dir train_base PromptKD "*")" "$(shots=0 run_dir test_new PromptKD "*")" \
    --gap "student (ZeroshotCLIP)" "student + boosting prompts" "teacher (ZeroshotCLIP)" || status=1
if [ "$MODE" = all ]; then
    echo
    echo "Four methods with and without CasPL (seeds $SEEDS)"
    comparison CoOp CoCoOp MaPLe PromptSRC
    "$PYTHON" tools/base2new_table.py "${student_row[@]}" "${args[@]}" || status=1
fi
echo "(everything in $OUT/; $((SECONDS - start)) s)"
exit $status
