#!/usr/bin/env bash
# One GPU call for the Mamba studies (docs/studies/: mamba-copy, mamba-dp, mamba-cost,
# mamba-locality), run from the repository root on a machine whose python3 has CUDA PyTorch.
# pydantic and its three dependencies, missing from that machine's image, travel as wheels in
# .whl/ (downloaded beside the checkout with pip download).
#
#   1. mamba-cost, preset paper (8 x 512 models) with 200 training steps, alone on the GPU so that
#      the decoding times are not disturbed (the timings need a trained-enough model, not a good one);
#   2. at once, each run in a process of its own (--jobs), all in fp32 as on a CPU:
#      - mamba-copy, preset cpu as it was then (evaluation every 250 steps on 200 strings), 3 seeds;
#      - mamba-dp-b: mamba-dp's medium preset (GPT 3 x 96, Mamba 5 x 96) on LIS of 12 values,
#        arithmetic with 2 operators, edit distance of 4 letters, 1500 steps, 3 seeds;
#      - mamba-dp-c: the same tasks with smaller models (GPT 2 x 64, Mamba 3 x 64), 3 seeds.
# Every study stops at its time limit; its completed runs are kept (and resumable).
source "$(dirname "$0")/device_setup.sh"
nvidia-smi -L
python3 -c "import torch, reasonlab; print(torch.__version__, torch.cuda.get_device_name())" || exit 1

python3 - <<'EOF'
import copy
from pathlib import Path

import yaml

studies = Path("src/reasonlab/studies")
base = yaml.safe_load((studies / "mamba_dp.yaml").read_text())
sizes = {"lis": 12, "arithmetic": 2, "ed": 4}
for suffix, gpt, mamba in [("b", (3, 96), (5, 96)), ("c", (2, 64), (3, 64))]:
    spec = copy.deepcopy(base)
    spec["name"] = f"mamba-dp-{suffix}"
    preset = spec["presets"]["cpu"]
    preset["model"].update(n_layers=gpt[0], d_model=gpt[1])
    preset["train"]["steps"] = 1500
    preset["eval"]["every"] = 250
    for name, settings in spec["variants"].items():
        family, problem, _ = name.split("-")
        settings["task.length"] = sizes[problem]
        if family == "mamba":
            settings.update({"model.n_layers": mamba[0], "model.d_model": mamba[1]})
    (studies / f"mamba_dp_{suffix}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
EOF

echo "== mamba-cost paper (200 steps) $(date +%T)"
timeout --foreground -k 20 150 python3 -m reasonlab study mamba-cost --preset paper --set train.steps=200 \
    --out runs/mamba-cost-paper > "$OUT/cost.log" 2>&1
echo "rc $? $(date +%T)"
echo "== studies $(date +%T)"
S=${STUDY_S:-330}
timeout --foreground -k 30 "$S" python3 -m reasonlab study mamba-copy --set train.precision=fp32 --seeds 3 --jobs 4 \
    --set eval.every=250 --set task.num_test=200 --out runs/mamba-copy > "$OUT/copy.log" 2>&1 &
timeout --foreground -k 30 "$S" python3 -m reasonlab study mamba-dp-c --set train.precision=fp32 --seeds 3 --jobs 5 \
    --out runs/mamba-dp-c > "$OUT/dp-c.log" 2>&1 &
timeout --foreground -k 30 "$S" python3 -m reasonlab study mamba-dp-b --set train.precision=fp32 --seeds 3 --jobs 5 \
    --out runs/mamba-dp-b > "$OUT/dp-b.log" 2>&1 &
wait
echo "done $(date +%T)"
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv
for d in runs/*/; do tar czf "$OUT/$(basename "$d").tgz" -C runs "$(basename "$d")"; done
ls -la "$OUT"
