# Shared by the CasPL scripts (sourced): resolves DATA, OUT, BACKBONE, TEACHER and PYTHON
# (relative paths taken from the caller's directory), moves to the repository root, splits
# EXTRA into the array `extra`, and defines max_epoch.
PYTHON=${PYTHON:-python}
: "${DATA:?set DATA to the dataset root (see: bash $0 with no arguments)}"

absolute() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
DATA=$(absolute "$DATA")
BACKBONE=${BACKBONE:-ViT-B/16}
TEACHER=${TEACHER:-ViT-L/14}
[ -f "$BACKBONE" ] && BACKBONE=$(absolute "$BACKBONE")
[ -f "$TEACHER" ] && TEACHER=$(absolute "$TEACHER")
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

# OPTIM.MAX_EPOCH of the YAML files, unless a trailing option sets it
max_epoch() {
    "$PYTHON" -c '
import sys, yaml
files, opts = sys.argv[1:3], sys.argv[3:]
epoch = None
for f in files:
    epoch = ((yaml.safe_load(open(f)) or {}).get("OPTIM") or {}).get("MAX_EPOCH", epoch)
for key, value in zip(opts[0::2], opts[1::2]):
    if key == "OPTIM.MAX_EPOCH":
        epoch = int(value)
print(10 if epoch is None else epoch)' "$@"
}
export DATA OUT BACKBONE TEACHER PYTHON
