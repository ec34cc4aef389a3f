#!/usr/bin/env bash
# An ablation sweep from one command: a protocol script run once per value of one config key,
# each into its own output root $OUT/sweep/KEY=VALUE, then one table of every run
# (tools/parse_test_res.py --tree over $OUT/sweep).
#
#   KEY=TRAINER.COOP.N_CTX VALUES="4 8 16" DATA=/data bash scripts/sweep.sh scripts/CoOp/few_shot.sh eurosat 1 16
#
# The script and its arguments follow; KEY VALUE is appended to EXTRA, so every other
# variable of the protocol scripts (OUT, BACKBONE, SEEDS, ...) works as usual. Context length
# (TRAINER.COOP.N_CTX), CasPL's boosting tokens and depth (TRAINER.CASPL.N_CTX_TEXT, ...) and
# the adapting tokens of any method are config keys, so each is a sweep.
set -euo pipefail
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] && [ -n "${KEY:-}" ] && [ -n "${VALUES:-}" ] || usage
SCRIPT=$1
shift
[ -f "$SCRIPT" ] || { echo "error: no script $SCRIPT" >&2; exit 2; }
case ${OUT:-} in /*) ;; "") OUT=$PWD/output ;; *) OUT=$PWD/$OUT ;; esac
for value in $VALUES; do
    echo "==== $KEY = $value"
    OUT="$OUT/sweep/$KEY=$value" EXTRA="${EXTRA:-} $KEY $value" bash "$SCRIPT" "$@"
done
"${PYTHON:-python}" "$(dirname "$0")/../tools/parse_test_res.py" --tree "$OUT/sweep" --seeds ${SEEDS:-1}
