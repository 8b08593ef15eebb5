#!/usr/bin/env bash
# The second GPU call (docs/studies/mamba-dp.md): the Mamba runs of mamba-dp's medium preset on LIS
# and arithmetic (3 seeds each, 12 runs at once, fp32), which a 2-core CPU cannot train in a
# session. Same run names and configs as `reasonlab study mamba-dp --preset medium --seeds 3 --set
# train.precision=fp32`, so that study reuses them (--reuse).
source "$(dirname "$0")/device_setup.sh"
python3 - <<'PY'
from pathlib import Path

import yaml

studies = Path("src/reasonlab/studies")
spec = yaml.safe_load((studies / "mamba_dp.yaml").read_text())
spec["name"] = "mamba-dp-mamba"
spec["variants"] = {
    name: settings
    for name, settings in spec["variants"].items()
    if name.startswith("mamba-") and "-ed-" not in name
}
(studies / "mamba_dp_mamba.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
PY
timeout --foreground -k 20 "${STUDY_S:-230}" python3 -m reasonlab study mamba-dp-mamba --preset medium \
    --set train.precision=fp32 --seeds 3 --jobs 12 --out runs/mamba-dp-mamba > "$OUT/dp.log" 2>&1
echo "rc $? $(date +%T)"
tar czf "$OUT/mamba-dp-mamba.tgz" --exclude='*.safetensors' --exclude='*.txt' -C runs mamba-dp-mamba
ls -la "$OUT"
