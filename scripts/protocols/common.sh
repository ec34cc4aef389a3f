# Shared by the protocol scripts (sourced): resolves DATA, OUT, BACKBONE, TEACHER, TEACHER_CKPT
# and PYTHON (relative paths taken from the caller's directory), moves to the repository root,
# splits EXTRA into the array `extra`, and defines cfg_value and max_epoch.
PYTHON=${PYTHON:-python}
: "${DATA:?set DATA to the dataset root (see: bash $0 with no arguments)}"

absolute() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
DATA=$(absolute "$DATA")
BACKBONE=${BACKBONE:-ViT-B/16}
TEACHER=${TEACHER:-ViT-L/14}
[ -f "$BACKBONE" ] && BACKBONE=$(absolute "$BACKBONE")
[ -f "$TEACHER" ] && TEACHER=$(absolute "$TEACHER")
[ -e "${TEACHER_CKPT:-}" ] && TEACHER_CKPT=$(absolute "$TEACHER_CKPT")
[ -n "${OUT:-}" ] && OUT=$(absolute "$OUT")
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${OUT:-$PWD/output}

# EXTRA -> array: shell words, with an unquoted bracketed value such as (32, 32) rejoined
extra_words=$("$PYTHON" -c '
import shlex, sys
out, cur, depth = [], [], 0
for tok in shlex.split(sys.argv[1]):
    cur.append(tok)
    depth += sum(map(tok.count, "([{")) - sum(map(tok.count, ")]}"))
    if depth <= 0:
        out.append(" ".join(cur))
        cur, depth = [], 0
print(shlex.join(out + ([" ".join(cur)] if cur else [])))' "${EXTRA:-}")
eval "extra=($extra_words)"

# extra_for SECTION...: `prep_extra`, the pairs of `extra` for a run that prepares the method
# (CasPL's phase 1, PromptKD's teacher), without those under TRAINER.<S> for any S but the
# SECTIONs given: they configure the method, and that run, which reads none of them, would
# refuse them (phase 2 checks the phase-1 keys it is given against the boosting prompts)
extra_for() {
    local i key section dropped=()
    prep_extra=()
    for ((i = 0; i + 1 < ${#extra[@]}; i += 2)); do
        key=${extra[i]} section=${extra[i]#TRAINER.}
        section=${section%%.*}
        if [[ $key == TRAINER.*.* && " $* " != *" $section "* ]]; then
            dropped+=("$key")
        else
            prep_extra+=("$key" "${extra[i + 1]}")
        fi
    done
    [ ${#dropped[@]} -eq 0 ] || echo "EXTRA's ${dropped[*]}: for the method, not passed to its preparing run" >&2
}

# cfg_value KEY DEFAULT FILE1 FILE2 [OPTS...]: KEY (e.g. OPTIM.MAX_EPOCH) as the two YAML files
# and then the trailing KEY VALUE options set it, else DEFAULT
cfg_value() {
    "$PYTHON" -c '
import sys, yaml
key, value = sys.argv[1:3]
files, opts = sys.argv[3:5], sys.argv[5:]
for f in files:
    node = yaml.safe_load(open(f)) or {}
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    value = value if node is None else node
for k, v in zip(opts[0::2], opts[1::2]):
    if k == key:
        value = v
print(value)' "$@"
}
max_epoch() { cfg_value OPTIM.MAX_EPOCH 10 "$@"; }
export DATA OUT BACKBONE TEACHER PYTHON
[ -n "${TEACHER_CKPT:-}" ] && export TEACHER_CKPT

# ---------------------------------------------------------------- methods and runs
# The method is the name of the folder the script was called through: scripts/CoOp/x.sh,
# scripts/CasPL_PromptSRC/x.sh (each scripts/<METHOD> links to scripts/protocols), or METHOD.
METHODS="CoOp CoCoOp IVLP MaPLe PromptSRC LAMM VPT"
BASELINES="LinearProbeCLIP PromptKD"  # no CasPL variant (LinearProbeCLIP: few-shot only)
method_from_path() {
    local called
    called=$(basename "$(dirname "$1")")
    if [ "$called" = protocols ]; then
        : "${METHOD:?call the script as scripts/<METHOD>/$(basename "$1") or set METHOD}"
    else
        METHOD=$called
    fi
    HOST=${METHOD#CasPL_}
    case " $METHODS " in *" $HOST "*) ;; *)
        case " $BASELINES " in *" $METHOD "*) ;; *)
            echo "error: unknown method $METHOD (known: $METHODS $BASELINES, and CasPL_ before any of $METHODS)" >&2
            exit 2 ;;
        esac ;;
    esac
    TRAINER=$METHOD
}

# CFG for METHOD and a protocol (base2new, few_shot, cross_dataset): the reference configs
# (CasPL's own for CasPL_<X>: for cross_dataset the authors' xd configs, which go with the
# xd boost, see boost_setting); sets PROTOCOL, CFG and TRAINER_CFG.
method_config() {
    PROTOCOL=$1
    case $METHOD:$PROTOCOL in
        CoOp:few_shot) CFG=vit_b16_ep50 ;;
        CoOp:*) CFG=vit_b16_ep50_ctxv1 ;;
        CoCoOp:*) CFG=vit_b16_c4_ep10_batch1_ctxv1 ;;
        IVLP:*) CFG=vit_b16_c2_ep20_batch4_4+4ctx ;;
        MaPLe:cross_dataset) CFG=vit_b16_c2_ep5_batch4_2ctx_cross_datasets ;;
        MaPLe:*) CFG=vit_b16_c2_ep5_batch4_2ctx ;;
        PromptSRC:few_shot) CFG=vit_b16_c2_ep50_batch4_4+4ctx_few_shot ;;
        PromptSRC:cross_dataset) CFG=vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets ;;
        PromptSRC:*) CFG=vit_b16_c2_ep20_batch4_4+4ctx ;;
        LAMM:* | CasPL_LAMM:*) CFG=vit_b16_ep50_ctxv1 ;;
        VPT:* | CasPL_VPT:*) CFG=vit_b16_c2_ep5_batch4_4 ;;
        CasPL_CoOp:cross_dataset) CFG=vit_b16_ep10_ctxv1 ;;
        CasPL_CoOp:*) CFG=vit_b16_c8_ep50 ;;
        CasPL_CoCoOp:cross_dataset) CFG=vit_b16_c4_ep10_batch1_ctxv1 ;;
        CasPL_CoCoOp:*) CFG=vit_b16_c8_ep10_batch1 ;;
        CasPL_IVLP:*) CFG=vit_b16_c2_ep20_batch4_4+4ctx ;;
        CasPL_MaPLe:cross_dataset) CFG=vit_b16_c8_ep5_batch4_8ctx_cross_datasets_l12 ;;
        CasPL_MaPLe:*) CFG=vit_b16_c8_ep5_batch4_8ctx_l12 ;;
        CasPL_PromptSRC:cross_dataset) CFG=vit_b16_c2_ep20_batch4_8+8ctx_cross_datasets_l3 ;;
        CasPL_PromptSRC:few_shot) CFG=vit_b16_c2_ep50_batch4_8+8ctx_l12_few_shot ;;
        CasPL_PromptSRC:*) CFG=vit_b16_c2_ep20_batch4_8+8ctx_l12 ;;
        LinearProbeCLIP:few_shot) CFG=vit_b16 ;;
        LinearProbeCLIP:*) echo "error: LinearProbeCLIP has only the few-shot protocol (few_shot.sh)" >&2; exit 2 ;;
        PromptKD:base2new) CFG=vit_b16_c2_ep20_batch8_4+4ctx ;;
        PromptKD:cross_dataset) CFG=vit_b16_c2_ep20_batch8_4+4ctx_cross_datasets ;;
        PromptKD:*) echo "error: PromptKD has the base-to-new and cross-dataset protocols of its scripts" \
                         "(base2new_*.sh, xd_*.sh, table.sh base2new|cross_dataset|dg)" >&2; exit 2 ;;
    esac
    CFG=${CFG_OVERRIDE:-$CFG}
    TRAINER_CFG=configs/trainers/$HOST/$CFG.yaml
    [ -f "$TRAINER_CFG" ] || { echo "error: no trainer config $TRAINER_CFG" >&2; exit 2; }
}

dataset_config() {
    DATASET_CFG=configs/datasets/$1.yaml
    [ -f "$DATASET_CFG" ] || { echo "error: no dataset config $DATASET_CFG" >&2; exit 2; }
}

# setup PROTOCOL DATASET: METHOD from the script's folder, its config for PROTOCOL, the dataset's;
# SHOTS defaults to 16 (PromptKD: 0, every training image, as its scripts)
setup() {
    method_from_path "$0"
    method_config "$1"
    dataset_config "$2"
    if [ -z "${SHOTS:-}" ]; then
        SHOTS=16
        [ "$METHOD" = PromptKD ] && SHOTS=0
    fi
    return 0
}

# train_method DIR SUBSAMPLE [OPTS...]: METHOD trained on SHOTS images per class of DATASET_CFG
# (SEED; SUBSAMPLE base or all), then the boosting prompts' options and EXTRA
train_method() {
    local dir=$1 subsample=$2 epochs
    shift 2
    epochs=$(max_epoch "$DATASET_CFG" "$TRAINER_CFG" ${extra[@]+"${extra[@]}"})
    train_run "$dir" "$epochs" --root "$DATA" --seed "$SEED" --trainer "$TRAINER" \
        --dataset-config-file "$DATASET_CFG" --config-file "$TRAINER_CFG" \
        MODEL.BACKBONE.NAME "$BACKBONE" DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES "$subsample" \
        "$@" ${prepared_opts[@]+"${prepared_opts[@]}"} ${extra[@]+"${extra[@]}"}
}

# eval_method DIR TRAIN_DIR [OPTS...]: the TRAIN_DIR model at LOAD_EPOCH (default: the
# config's last epoch; its best one, model-best, where TEST.FINAL_MODEL is best_val) evaluated
# on DATASET_CFG
eval_method() {
    local dir=$1 train_dir=$2 load=()
    shift 2
    [ -d "$train_dir" ] || { echo "error: no training in $train_dir (run its *_train.sh first)" >&2; exit 2; }
    if [ -n "${LOAD_EPOCH:-}" ]; then
        load=(--load-epoch "$LOAD_EPOCH")
    elif [ "$(cfg_value TEST.FINAL_MODEL last_step "$DATASET_CFG" "$TRAINER_CFG" ${extra[@]+"${extra[@]}"})" != best_val ]; then
        load=(--load-epoch "$(max_epoch "$DATASET_CFG" "$TRAINER_CFG" ${extra[@]+"${extra[@]}"})")
    fi
    eval_run "$dir" --root "$DATA" --seed "$SEED" --trainer "$TRAINER" \
        --dataset-config-file "$DATASET_CFG" --config-file "$TRAINER_CFG" \
        --model-dir "$train_dir" ${load[@]+"${load[@]}"} MODEL.BACKBONE.NAME "$BACKBONE" "$@" ${extra[@]+"${extra[@]}"}
}

# boost_setting SETTING DATASET: phase 1's config and output folder for a setting (sets
# BOOST_CFG and BOOST_DIR; one folder per setting, so the settings never share a run)
#   ""     base-to-new, few-shot, class-incremental: 8+8 tokens, depth 12 (ImageNet: batch 128)
#   xd_l1  cross-dataset / DG (the authors' xd boost for PromptSRC, MaPLe, CoOp): 4+4, depth 1
#   xd_l3  cross-dataset / DG for CoCoOp (the authors' CoCoOp xd boost): 4+4, depth 3
boost_setting() {
    case $1 in
        "")
            if [ "$2" = imagenet ]; then
                BOOST_CFG=vit_b16_c2_ep20_batch128_lr0025_8+8ctx_l12
            else
                BOOST_CFG=vit_b16_c2_ep20_batch4_8+8ctx_l12
            fi
            BOOST_DIR=$OUT/caspl_boost/$2/seed1 ;;
        xd_l1 | xd_l3)
            BOOST_CFG=vit_b16_c2_ep20_batch128_lr0025_4+4ctx_${1#xd_}
            BOOST_DIR=$OUT/caspl_boost_$1/$2/seed1 ;;
        *) echo "error: unknown boost setting $1 (known: xd_l1, xd_l3, or none for the 8+8 depth-12 boost)" >&2
           exit 2 ;;
    esac
}

# The phase-1 setting METHOD and PROTOCOL call for, in BOOST_SETTING: cross_dataset xd_l3
# for CasPL_CoCoOp and xd_l1 for the others (as the authors' xd scripts), else the default
boost_choice() {
    BOOST_SETTING=""
    if [ "${PROTOCOL:-}" = cross_dataset ] && [ "${METHOD#CasPL_}" != "$METHOD" ]; then
        BOOST_SETTING=xd_l1
        [ "$METHOD" = CasPL_CoCoOp ] && BOOST_SETTING=xd_l3
    fi
    return 0
}

# prepare_method DATASET: what METHOD needs before it trains on DATASET (each skipped when
# done), and the options that hand it over, in prepared_opts:
#   CasPL_<X>  phase 1 on DATASET, in the setting boost_choice picks (TRAINER.CASPL.BOOST_CKPT)
#   PromptKD   its teacher (promptkd_teacher), its MODAL and its KD_WEIGHT: 200 for
#              fgvc_aircraft and oxford_flowers in base-to-new, else 1000 (its scripts)
prepare_method() {
    prepared_opts=()
    case $METHOD in
        CasPL_*)
            boost_choice
            boost_setting "$BOOST_SETTING" "$1"
            bash scripts/caspl/boost.sh "$1" ${BOOST_SETTING:+"$BOOST_SETTING"}
            prepared_opts=(TRAINER.CASPL.BOOST_CKPT "$BOOST_DIR") ;;
        PromptKD)
            local modal=base2novel kd=1000.0
            if [ "$PROTOCOL" = cross_dataset ]; then
                modal=cross
            else
                case $1 in fgvc_aircraft | oxford_flowers) kd=200.0 ;; esac
            fi
            promptkd_teacher "$1"
            prepared_opts=(TRAINER.MODAL "$modal" TRAINER.PROMPTKD.TEACHER_NAME "$TEACHER"
                           TRAINER.PROMPTKD.TEACHER_CKPT "$TEACHER_RUN" TRAINER.PROMPTKD.TEMPERATURE 1.0
                           TRAINER.PROMPTKD.KD_WEIGHT "$kd") ;;
    esac
}

# promptkd_teacher DATASET: PromptKD's teacher in TEACHER_RUN: TEACHER_CKPT where set (a
# PromptSRC run or checkpoint, or zero_shot), else PromptSRC tuned on TEACHER (an OpenAI CLIP
# or an open_clip model) (configs/trainers/PromptSRC/vit_l14_c2_ep20_batch8_4+4ctx.yaml),
# seed 1, TEACHER_SHOTS (16) images of each base class of DATASET (cross-dataset: of every
# class of SOURCE), in $OUT/promptkd_teacher/DATASET/{base,all}/seed1
promptkd_teacher() {
    local dataset=$1 subsample=base cfg=configs/trainers/PromptSRC/vit_l14_c2_ep20_batch8_4+4ctx.yaml dataset_cfg
    if [ -n "${TEACHER_CKPT:-}" ]; then
        TEACHER_RUN=$TEACHER_CKPT
        return 0
    fi
    if [ "$PROTOCOL" = cross_dataset ]; then
        dataset=$SOURCE subsample=all
    fi
    dataset_cfg=configs/datasets/$dataset.yaml
    TEACHER_RUN=$OUT/promptkd_teacher/$dataset/$subsample/seed1
    extra_for PROMPTSRC
    TRAINER=PromptSRC train_run "$TEACHER_RUN" "$(max_epoch "$dataset_cfg" "$cfg" ${prep_extra[@]+"${prep_extra[@]}"})" \
        --root "$DATA" --seed 1 --trainer PromptSRC --dataset-config-file "$dataset_cfg" --config-file "$cfg" \
        MODEL.BACKBONE.NAME "$TEACHER" DATASET.NUM_SHOTS "${TEACHER_SHOTS:-16}" DATASET.SUBSAMPLE_CLASSES "$subsample" \
        ${prep_extra[@]+"${prep_extra[@]}"}
}

# The ImageNet variants of domain generalisation: test sets only
DG_TARGETS="imagenetv2 imagenet_sketch imagenet_a imagenet_r"

# train_run DIR EPOCHS ARGS...: train.py unless DIR holds a finished training (its log has
# "Finish training" and a result, and the final checkpoint exists); an unfinished one resumes.
train_run() {
    local dir=$1 epochs=$2
    shift 2
    if [ -f "$dir/log.txt" ] && grep -q "Finish training" "$dir/log.txt" && grep -q "=> result" "$dir/log.txt" \
            && compgen -G "$dir/*/model.pth.tar-$epochs" >/dev/null; then
        echo "$TRAINER: finished in $dir, skipping"
    else
        echo "$TRAINER -> $dir"
        "$PYTHON" train.py --output-dir "$dir" "$@"
    fi
}

# eval_run DIR ARGS...: an --eval-only run unless DIR's log already has its result
eval_run() {
    local dir=$1
    shift
    if [ -f "$dir/log.txt" ] && grep -q "=> result" "$dir/log.txt"; then
        echo "$TRAINER: evaluated in $dir, skipping"
    else
        echo "$TRAINER (evaluation) -> $dir"
        "$PYTHON" train.py --output-dir "$dir" --eval-only "$@"
    fi
}
