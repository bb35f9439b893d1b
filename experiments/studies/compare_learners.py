"""The degradation-learner comparison of docs/degradation.md, on the embedded demo (CPU, ~15 min).

For each learner (junyanz's CycleGAN as the 0.2 quickstart had it; the same CycleGAN with the
identity-initialised residual G; frequency separation = the quickstart's default), at the quickstart's
stage budget (``cyclegan.iters``): train the stage (``csrgan train cyclegan``'s code path), read its
fidelity and gate verdict, then train the quickstart's SRResNet pre-training at ``p = 1`` on its
cached LR and evaluate it. Reference rows: ``p = 0`` (bicubic only) and the oracle (``lr_source:
pipeline``, the demo's true degradation). One seed each: read the spread from the sweep's seeds.

    .venv/bin/python experiments/studies/compare_learners.py --out results/compare_learners
    .venv/bin/python experiments/studies/compare_learners.py --iters 300,600,1200 --only frequency_separation

``--iters`` with several values gives the gain-vs-budget curve of the chosen learners.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from csrgan.config import load_config  # noqa: E402
from csrgan.data.layout import resolve_data  # noqa: E402
from csrgan.train.degradation import judge_stage  # noqa: E402
from csrgan.train.launch import InProcess, launch  # noqa: E402

#: learner name -> overrides of the quickstart's cyclegan section
LEARNERS: dict[str, list[str]] = {
    "junyanz": [
        "cyclegan.learner=cyclegan",
        "cyclegan.generator={type: resnet, ngf: 16, n_blocks: 3}",
        "cyclegan.discriminator={type: patchgan, ndf: 16, n_layers: 2}",
        "cyclegan.batch_size=4",
        "cyclegan.lr=2.0e-4",
    ],
    "residual_cycle": [
        "cyclegan.learner=cyclegan",
        "cyclegan.discriminator={type: patchgan, ndf: 16, n_layers: 2}",
        "cyclegan.batch_size=4",
        "cyclegan.lr=2.0e-4",
    ],
    "frequency_separation": [],
}


def _cfg(overrides: list[str]) -> Any:
    return resolve_data(load_config(ROOT / "experiments" / "quickstart.yaml", overrides), base=ROOT)


def _sr(out: Path, name: str, overrides: list[str], inputs: dict[str, Path]) -> dict[str, Any]:
    sr = ["sr.gan.iters=0", "search=null", *overrides]
    cfg = _cfg(sr)
    t0 = time.time()
    m = launch("pretrain", cfg, out / name, inputs, InProcess()).metrics
    return {k: v for k, v in m.items() if k.endswith(("/psnr", "/ssim"))} | {"sr_s": round(time.time() - t0)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "compare_learners")
    ap.add_argument("--iters", default="600", help="comma-separated stage budgets (iterations)")
    ap.add_argument("--only", default=",".join(LEARNERS), help="comma-separated learner names")
    ap.add_argument("--no-references", action="store_true", help="skip the p = 0 and oracle rows")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    if not args.no_references:
        rows.append({"learner": "none (p = 0)", **_sr(args.out, "sr_p0", ["sr.mix_prob=0.0"], {})})
        oracle = ["sr.lr_source=pipeline", "sr.mix_prob=1.0"]
        rows.append({"learner": "oracle (pipeline, p = 1)", **_sr(args.out, "sr_oracle", oracle, {})})
    for learner in args.only.split(","):
        for iters in (int(i) for i in args.iters.split(",")):
            over = [*LEARNERS[learner], f"cyclegan.iters={iters}", f"cyclegan.eval_every={iters}",
                    f"cyclegan.checkpoint_every={iters}"]  # fmt: skip
            cfg = _cfg(over)
            t0 = time.time()
            stage = launch("cyclegan", cfg, args.out / f"{learner}_{iters}", {}, InProcess())
            stage_s = round(time.time() - t0)
            assert stage.final is not None
            q = judge_stage(stage.final, cfg)
            m = stage.metrics
            row = {
                "learner": learner, "iters": iters, "stage_s": stage_s, "verdict": q["verdict"],
                **{k: round(float(q[k]), 3) for k in ("lowfreq_psnr", "gx_psnr", "hf_w1_ratio", "noise_g")},
                "noise_real": round(float(q["noise_real"]), 2),
                "table2_g_psnr": round(float(m.get("unknown/g_psnr", float("nan"))), 2),
                "table2_bicubic_psnr": round(float(m.get("unknown/bicubic_psnr", float("nan"))), 2),
            }  # fmt: skip
            sr = [*over, "sr.mix_prob=1.0", "cyclegan.accept_poor=true"]
            row |= _sr(args.out, f"sr_{learner}_{iters}", sr, {"cyclegan": stage.final})
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.json").write_text(json.dumps(rows, indent=1))
    cols = list(dict.fromkeys(k for r in rows for k in r))
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
