"""The evaluation engine: `runner` (a method over a benchmark), `distributed` (several GPUs or processes),
`results` (the results files), `run_folder` (run folders, their locks and resumption), `worker_life` (worker
processes that die with their parent) and `metrics` (confusion matrices, mIoU as MMSegmentation computes it).
"""
