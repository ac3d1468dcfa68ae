"""Parity of the dense presets with the peers' released code: the figures of tests/parity/test_parity_dense.py.

For each case (sclip, clearclip, its centre-padding path, naclip slide and whole image, sclip whole
image) and original size, the method's result is compared with the test's independent float64
re-derivation of the peer's pipeline: max |diff| of the normalised input, of the first window's
patch features, of the class scores at the original size, and the label agreement (all pixels, and
those whose reference top-2 margin exceeds 1e-5). Appends a table to benchmarks/RESULTS.md.

    python benchmarks/bench_parity.py          # ~15 s on 2 CPU cores
"""

from __future__ import annotations

import importlib.util
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _results import append_results, cpu_name  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    import torch

    torch.set_num_threads(2)
    spec = importlib.util.spec_from_file_location("parity", ROOT / "tests" / "parity" / "test_parity_dense.py")
    assert spec is not None and spec.loader is not None, "tests/parity/test_parity_dense.py is missing"
    parity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(parity)
    rows = []
    for case in parity.CASES:
        for size in parity.SIZES:
            f = parity.parity_figures(case, size)
            rows.append(
                f"| {f['case']} | {f['size']} | {f['input_max_abs']:.1e} | {f['features_max_abs']:.1e} | "
                f"{f['scores_max_abs']:.1e} | {100 * f['label_agreement']:.4f} | {100 * f['label_agreement_decided']:.1f} "
                f"| {f['undecided_pixels']} |"
            )
            print(rows[-1], flush=True)
    cores = os.cpu_count()
    section = f"""
## Dense presets vs the peers' released code (bench_parity.py, issue 15)

- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC
- device: {cpu_name()}, {cores} cores (CPU), method in float32, reference in float64
- command: `python benchmarks/bench_parity.py` (the same figures as `pytest tests/parity -s`)
- what: the method (`build_method(MethodConfig(random_weights=True, preset=...))`, assembly `none`, 4 class names) vs an independent
  float64 re-derivation of each peer's pipeline (mmcv rescale + cv2 INTER_LINEAR on uint8, the configs' 0..255
  mean/std, mmseg slide windows, bicubic pos-embed with scale_factor (g+0.1)/14, the last-block rule, per-crop
  logits upsampling with ClearCLIP's centre padding or SCLIP/NACLIP's conv truncation, average, upsampling,
  softmax and max over names). Model: random open_clip ViT in OpenAI's layout (QuickGELU, 224 px, patch 16,
  14x14 native grid) with width 128 and 3 layers. naclip with PAMR off (PAMR is refine.py's, tested there);
  clearclip-pad = crop 200 / stride 100 (crops not a multiple of 16); *-whole = crop 0.
  "decided" = pixels where the reference's two best classes differ by more than 1e-5.

| case | image (HxW) | input max abs | features max abs | scores max abs | labels agree (%) | decided agree (%) | undecided px |
|---|---|---:|---:|---:|---:|---:|---:|
""" + "\n".join(rows) + "\n"
    append_results(section)


if __name__ == "__main__":
    main()
