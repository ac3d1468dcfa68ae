"""Two ranks with the gloo backend on CPU give exactly the single-process metrics."""

from __future__ import annotations

import json
import socket

import pytest
import torch.multiprocessing as tmp_mp
from engine_refmethods import build_oracle, run_rank

from llmseg.errors import ConfigError
from llmseg.stage2.engine.distributed import DistInfo, device_for_rank, env_info, shard
from llmseg.stage2.engine.runner import RunConfig, evaluate


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


def test_device_for_rank_gives_each_of_four_ranks_its_own_gpu():
    infos = [DistInfo(rank=r, world_size=4, local_rank=r) for r in range(4)]
    assert [device_for_rank("cuda", i, cuda_available=True, cuda_count=4) for i in infos] == [f"cuda:{r}" for r in range(4)]
    assert [device_for_rank("cpu", i, cuda_available=True, cuda_count=4) for i in infos] == ["cpu"] * 4
    assert [device_for_rank("cpu", i, cuda_available=False, cuda_count=0) for i in infos] == ["cpu"] * 4
    for info in infos:  # one named GPU for several ranks: refused, with the way out named
        with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES"):
            device_for_rank("cuda:1", info, cuda_available=True, cuda_count=4)
    # two nodes of two GPUs: LOCAL_RANK, not RANK, picks the GPU
    assert device_for_rank("cuda", DistInfo(rank=3, world_size=4, local_rank=1), cuda_available=True, cuda_count=2) == "cuda:1"
    with pytest.raises(ConfigError, match="LOCAL_RANK 3"):
        device_for_rank("cuda", infos[3], cuda_available=True, cuda_count=2)
    with pytest.raises(ConfigError, match="no CUDA"):
        device_for_rank("cuda", infos[0], cuda_available=False, cuda_count=0)


def test_single_process_keeps_the_configured_device():
    for device in ("cpu", "cuda", "cuda:1", "mps"):
        assert device_for_rank(device, DistInfo(), cuda_available=False, cuda_count=0) == device


def test_env_info_reads_torchrun_variables():
    assert env_info({}) == DistInfo()
    assert env_info({"WORLD_SIZE": "1", "RANK": "0"}) == DistInfo()
    info = env_info({"WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1"})
    assert (info.rank, info.world_size, info.local_rank, info.enabled) == (5, 8, 1, True)


def test_runner_refuses_a_backbone_on_another_ranks_gpu():
    from types import SimpleNamespace

    from llmseg.stage2.engine.runner import RunError, _check_method_device

    method = SimpleNamespace(backbone=SimpleNamespace(device="cuda:0"))
    _check_method_device(method, "cuda:0", DistInfo(rank=0, world_size=2, local_rank=0))
    _check_method_device(method, "cuda:1", DistInfo())  # one process: its device is the user's business
    with pytest.raises(RunError, match="cuda:0 but this rank computes on cuda:1"):
        _check_method_device(method, "cuda:1", DistInfo(rank=1, world_size=2, local_rank=1))
