#!/usr/bin/env bash
# One GPU call for the CoT studies (docs/studies/: cot-noise, cot-lambda, cot-pattern, cot-depth)
# and the GPU step times (docs/BENCHMARKS.md), run from the repository root on a machine whose
# python3 has CUDA PyTorch; pydantic and its dependencies travel as wheels in .whl/
# (device_setup.sh).
#
#   1. `reasonlab bench step --device cuda` alone on the GPU: the quick shape, the wide shape, the
#      paper's shape (8 x 768, 12 heads, batch 512 x 6), fp32 and bf16; the wide Mamba;
#   2. then at once, each run in a process of its own (--jobs), each study stopped after
#      $STUDY_S seconds (completed runs are kept):
#      - cot-twohop, preset paper (auto precision: bf16 on CUDA), one seed: time to result;
#      - cot-noise, cot-pattern, cot-depth, cot-lambda, preset cpu with their 3 seeds, in fp32
#        as on a CPU without bf16 units, no checkpoints kept.
# What comes back (at most 8 files): OUT/logs.tgz with the benchmarks' JSON and every log, and
# one .tgz per study holding its summary, report and plots and, for every completed run,
# config.json, summary.json and metrics.jsonl. As measured on 2026-11-26 (H100), the four cpu
# studies need about 450 s and the paper preset more than the rest of a 15-minute lease: run it
# with STUDY_S=450 and expect the paper runs to stop part-way.
source "$(dirname "$0")/device_setup.sh"
nvidia-smi -L
python3 -c "import torch, reasonlab; print(torch.__version__, torch.cuda.get_device_name())" || exit 1

echo "== bench $(date +%T)"
bench() { timeout -k 5 "$1" python3 -m reasonlab bench step --device cuda "${@:3}" \
    > "$OUT/bench-$2.json" 2>> "$OUT/bench.log"; echo "bench $2 rc $? $(date +%T)"; }
bench 40 quick --precision both
bench 40 wide --precision both --shape wide
bench 40 paper --precision both --layers 8 --width 768 --heads 12 --batch 512 --seq-len 6
bench 60 mamba-wide --model mamba --shape wide

echo "== studies $(date +%T)"
S=${STUDY_S:-330}
CPU=(--set train.precision=fp32 --set log.checkpoints=none --set log.progress=false)
study() { timeout --foreground -k 30 "$S" python3 -m reasonlab study "$@" > "$OUT/$1.log" 2>&1; \
    echo "$1 rc $? $(date +%T)"; }
study cot-twohop --preset paper --seeds 1 --jobs 3 --out runs/cot-twohop-paper \
    --set log.checkpoints=none --set log.progress=false &
study cot-noise --jobs 5 --out runs/cot-noise "${CPU[@]}" &
study cot-pattern --jobs 6 --out runs/cot-pattern "${CPU[@]}" &
study cot-depth --jobs 2 --out runs/cot-depth "${CPU[@]}" &
study cot-lambda --jobs 2 --out runs/cot-lambda "${CPU[@]}" &
sleep 60; nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv
wait
echo "== done $(date +%T)"
for d in runs/*/; do
    name=$(basename "$d")
    files=$(cd runs && ls "$name"/*.json "$name"/*.html "$name"/*.png 2>/dev/null)
    for run in "$d"runs/*/; do  # completed runs only: an interrupted one is trained again
        grep -q '"status": "completed"' "$run/summary.json" 2>/dev/null || continue
        files="$files $(cd runs && ls "$name/runs/$(basename "$run")"/*.json*)"
    done
    tar czf "$OUT/$name.tgz" -C runs $files
done
(cd "$OUT" && tar czf logs.tgz ./*.json ./*.log && rm -f ./*.json ./*.log)
ls -la "$OUT"
