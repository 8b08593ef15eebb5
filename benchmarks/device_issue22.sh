#!/usr/bin/env bash
# One GPU call for what the CPU could not check of packed runs, the parallel scan and the step
# (docs/BENCHMARKS.md, "Many small runs"), run from the repository root on a machine whose python3
# has CUDA PyTorch; the wheels device_setup.sh installs travel in .whl/. About 8 minutes on an H100.
#
#   1. the CUDA tests of the parallel scan (parity with the reference on the GPU; with mamba-ssm's
#      kernel where it imports) and the pack tests, on the GPU's torch;
#   2. the scan against mambapy at the COPY and the wide shape, forward + backward;
#   3. a training step of the GPT (quick shape) and of the Mamba (COPY shape) against Hugging Face
#      and mambapy;
#   4. the cot-noise cpu preset (45 runs) packed (auto: 8) against unpacked, training only.
# Everything it prints goes to $OUT/*.txt and *.json; record the card (nvidia-smi -L) with them.
source "$(dirname "$0")/device_setup.sh"
nvidia-smi -L | tee "$OUT/card.txt"
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" || exit 1

python3 -m pytest -q -p no:cacheprovider tests/models/test_scan_parallel.py \
    tests/training/test_pack.py 2>&1 | tail -5 | tee "$OUT/tests.txt"
for shape in --copy --wide; do
    timeout 120 python3 -m reasonlab.bench.scan --device cuda $shape \
        > "$OUT/scan${shape#-}.json" 2> "$OUT/scan${shape#-}.txt"
done
timeout 120 python3 -m reasonlab bench step --device cuda --shape quick --precision both \
    > "$OUT/step-gpt.json" 2> "$OUT/step-gpt.txt"
timeout 120 python3 -m reasonlab bench step --device cuda --model mamba --width 128 --batch 64 \
    --seq-len 41 > "$OUT/step-mamba.json" 2> "$OUT/step-mamba.txt"
timeout 300 python3 -m reasonlab bench study cot-noise --preset cpu --pack 8 \
    > "$OUT/study-cot-noise.json" 2> "$OUT/study-cot-noise.txt"
tail -n 4 "$OUT"/*.txt
