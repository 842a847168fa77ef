#!/usr/bin/env bash
# Builds the seed corpora into fuzz/corpus/<target>/ (gitignored) from the shared corpus next to the
# checkout (../shared/corpus, or $NETSLEUTH_CORPUS), the repository's fixtures and the hostile inputs.
#
#   fuzz/seed.sh            # add seeds to fuzz/corpus/*
#   fuzz/seed.sh --clean    # start from empty corpora
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
corpus="${NETSLEUTH_CORPUS:-}"
if [ -z "$corpus" ]; then
  for c in "$root/../shared/corpus" /work/shared/corpus; do
    if [ -f "$c/INDEX.tsv" ]; then corpus="$c"; break; fi
  done
fi
if [ -z "$corpus" ] || [ ! -f "$corpus/INDEX.tsv" ]; then
  echo "seed.sh: shared corpus not found (set NETSLEUTH_CORPUS to its directory)" >&2
  exit 1
fi
if [ "${1:-}" = "--clean" ]; then
  rm -rf "$here/corpus"
fi
mkdir -p "$here/corpus"
python3 "$here/seedgen.py" "$corpus" "$root" "$here/corpus"
