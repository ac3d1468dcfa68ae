"""Two ranks with the gloo backend on CPU give exactly the single-process metrics."""

from __future__ import annotations

import json
import socket

import pytest
import torch.multiprocessing as tmp_mp
from engine_refmethods import build_oracle, run_rank

from llmseg.stage2.distributed import DistInfo, shard
from llmseg.stage2.runner import RunConfig, evaluate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shard_is_disjoint_and_covering():
    items = list(range(11))
    parts = [shard(items, DistInfo(rank=r, world_size=3)) for r in range(3)]
    assert sorted(x for p in parts for x in p) == items
    assert all(len(p) in (3, 4) for p in parts)
    assert shard(items, DistInfo()) == items


@pytest.mark.slow
def test_two_gloo_ranks_equal_single_process(synthetic, tmp_path):
    root = synthetic("pascal_voc20", n=7)
    spec, method = build_oracle("pascal_voc20", root)
    single = evaluate(method, spec, root, RunConfig(out=str(tmp_path / "single"), num_workers=0, progress=False))
    out = tmp_path / "ddp"
    tmp_mp.spawn(run_rank, args=(2, _free_port(), "pascal_voc20", str(root), str(out)), nprocs=2, join=True)
    report = json.loads((out / "metrics.json").read_text())
    for key in ("mIoU", "mAcc", "aAcc", "num_images", "per_class"):
        assert report[key] == single[key], key
    assert report["settings"]["world_size"] == 2 and report["num_images"] == 7
    rank0 = json.loads((out / "checkpoint.rank0.json").read_text())["finished"]
    rank1 = json.loads((out / "checkpoint.rank1.json").read_text())["finished"]
    assert len(rank0) == 4 and len(rank1) == 3 and not set(rank0) & set(rank1)
    assert json.loads((out / "confusion.json").read_text()) == json.loads((tmp_path / "single" / "confusion.json").read_text())
