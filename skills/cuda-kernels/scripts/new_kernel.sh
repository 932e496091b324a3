#!/usr/bin/env bash
# Start a new kernel project from kernels/qwen3-rmsnorm (run from the lab root).
# Usage: new_kernel.sh NEW-NAME   (lowercase, digits, '-')
set -euo pipefail
new=$1; py=${new//-/_}
[[ $new =~ ^[a-z0-9][a-z0-9-]*$ ]] || { echo "name must be lowercase letters, digits and '-'" >&2; exit 2; }
[ -e "kernels/$new" ] && { echo "kernels/$new exists" >&2; exit 2; }
cp -r kernels/qwen3-rmsnorm "kernels/$new"
rm -rf "kernels/$new/results" "kernels/$new/build"
mv "kernels/$new/torch-ext/qwen3_rmsnorm" "kernels/$new/torch-ext/$py"
grep -rl 'qwen3[-_]rmsnorm' "kernels/$new" | xargs sed -i "s/qwen3-rmsnorm/$new/g; s/qwen3_rmsnorm/$py/g"
echo "kernels/$new created; next: edit csrc/, the binding and the wrappers, then: lab kernel check $new"
