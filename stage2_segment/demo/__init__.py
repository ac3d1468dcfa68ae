"""The offline demo world: the whole pipeline on generated shapes with a small CLIP trained on them.

- `generator`: seeded scenes of coloured, textured shapes with exact masks and fine-grained captions.
- `train`: the demo CLIP (an open_clip custom config in `assets/`) trained with open_clip's loss.
- `benchmark`: the demo benchmark in the VOC layout; coarse classes the CLIP never read.
- `run`: `llmseg demo run` (what `make demo` calls): stage one offline, stage two, the mIoU table.
"""
