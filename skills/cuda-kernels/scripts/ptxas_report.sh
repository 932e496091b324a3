#!/usr/bin/env bash
# Registers, stack and spills of every kernel in a .cu file (no GPU needed).
# Usage: ptxas_report.sh FILE.cu [sm_90] [extra nvcc flags...]
set -euo pipefail
src=$1; arch=${2:-sm_90}; shift $(( $# >= 2 ? 2 : 1 ))
digits=${arch#sm_}
nvcc -std=c++17 -O3 "-gencode=arch=compute_${digits},code=sm_${digits}" -Xptxas -v -c "$src" -o /dev/null "$@" 2>&1 |
  awk '/Function properties for/ {f=$NF} /spill stores/ {spill=$5} /Used [0-9]+ registers/ {print $5 "\tregs\t" spill "\tspill-bytes\t" f}' |
  c++filt | sort -k5
