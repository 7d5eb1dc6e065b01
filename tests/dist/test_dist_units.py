"""Pure parts of detfn.dist: launcher environments, bucket plans, shard merging, lr scaling."""

from __future__ import annotations

import pytest
import torch

from detfn.dist.buckets import pack, plan_buckets, unpack
from detfn.dist.evaluation import merge_strided_shards
from detfn.dist.launch import DistEnv, choose_backend, env_from_slurm, first_host, resolve_env
from detfn.dist.lr_scaling import scaled_lr

TORCHRUN = {
    "RANK": "5",
    "WORLD_SIZE": "8",
    "LOCAL_RANK": "1",
    "MASTER_ADDR": "10.0.0.2",
    "MASTER_PORT": "29400",
}


def test_pytorch_launcher_reads_torchrun_variables():
    # torchrun --nnodes 2 --nproc_per_node 4: rank 5 is the second process of the second node
    assert resolve_env("pytorch", TORCHRUN) == DistEnv(5, 8, 1, "10.0.0.2", 29400)
    no_port = {k: v for k, v in TORCHRUN.items() if k != "MASTER_PORT"}
    assert resolve_env("pytorch", no_port).master_port == 29500
    assert resolve_env("none", TORCHRUN) == DistEnv()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORLD_SIZE": "2"}, "--launcher pytorch: environment variable RANK is not set"),
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, r"DistEnv.rank must be in \[0, 2\), got 2"),
    ],
)
def test_bad_torchrun_environments_name_the_variable(env, message):
    with pytest.raises(ValueError, match=message):
        resolve_env("pytorch", env)


def test_unknown_launcher_is_one_clear_line():
    with pytest.raises(ValueError, match="--launcher must be one of .*got 'mpi'"):
        resolve_env("mpi", {})


SLURM = {
    "SLURM_PROCID": "6",
    "SLURM_NTASKS": "16",
    "SLURM_LOCALID": "2",
    "SLURM_NODELIST": "gpu[03-04,09]-ib,login1",
}


def test_slurm_launcher_derives_rank_world_and_master():
    got = env_from_slurm(SLURM, use_scontrol=False)
    assert got == DistEnv(6, 16, 2, "gpu03-ib", 29500)
    assert (
        env_from_slurm({**SLURM, "MASTER_PORT": "12345"}, use_scontrol=False).master_port == 12345
    )
    assert (
        env_from_slurm({**SLURM, "MASTER_ADDR": "head"}, use_scontrol=False).master_addr == "head"
    )


@pytest.mark.parametrize(
    ("nodelist", "host"),
    [
        ("node7", "node7"),
        ("node7,node9", "node7"),
        ("n[1-2,5],m[3]", "n1"),
        ("rack[2-3]-node[08-10]", "rack2-node08"),
    ],
)
def test_first_host_of_slurm_node_lists(nodelist, host):
    assert first_host(nodelist, use_scontrol=False) == host


def test_slurm_without_nodelist_fails_clearly():
    env = {k: v for k, v in SLURM.items() if k != "SLURM_NODELIST"}
    with pytest.raises(ValueError, match="SLURM_NODELIST is not set"):
        env_from_slurm(env, use_scontrol=False)
    with pytest.raises(ValueError, match="cannot parse SLURM_NODELIST"):
        first_host("gpu[1-2", use_scontrol=False)


def test_backend_is_nccl_on_cuda_and_gloo_on_cpu():
    assert choose_backend("cuda:1") == "nccl"
    assert choose_backend(torch.device("cpu")) == "gloo"


def _params():
    return {
        "conv.weight": torch.zeros(8, 3, 3, 3),  # 216 floats = 864 bytes
        "conv.bias": torch.zeros(8),
        "fc.weight": torch.zeros(4, 8),
        "fc.bias": torch.zeros(4),
        "head.weight": torch.zeros(2, 4, dtype=torch.float64),
    }


def test_buckets_follow_reverse_order_cap_and_dtype():
    buckets = plan_buckets(_params(), cap_bytes=200)
    names = [b.names for b in buckets]
    # reverse registration order; a new bucket at the dtype change and at the 200-byte cap
    assert names == [
        ("head.weight",),
        ("fc.bias", "fc.weight", "conv.bias"),  # 16 + 128 + 32 bytes; conv.weight would pass
        ("conv.weight",),  # larger than the cap: a bucket of its own
    ]
    assert buckets[0].dtype == torch.float64
    assert buckets[1].offsets == (0, 4, 36) and buckets[1].size == 44


def test_pack_and_unpack_average_and_flag_presence():
    (bucket,) = plan_buckets({"a": torch.zeros(2), "b": torch.zeros(3), "c": torch.zeros(1)})
    rank0 = pack(bucket, {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0, 4.0, 5.0])})
    rank1 = pack(bucket, {"a": torch.tensor([3.0, 6.0]), "c": torch.tensor([8.0])})
    out = unpack(bucket, rank0 + rank1, world_size=2)  # what the all-reduce sum gives
    assert set(out) == {"a", "b", "c"}
    torch.testing.assert_close(out["a"], torch.tensor([2.0, 4.0]))
    torch.testing.assert_close(out["b"], torch.tensor([1.5, 2.0, 2.5]))
    torch.testing.assert_close(out["c"], torch.tensor([4.0]))
    alone = unpack(bucket, pack(bucket, {"a": torch.ones(2)}), world_size=1)
    assert set(alone) == {"a"}  # a gradient on no rank stays absent


def test_merge_strided_shards_restores_order_and_drops_padding():
    # 7 items on 3 ranks as indices[rank::3]: [0, 3, 6], [1, 4], [2, 5]
    assert merge_strided_shards([[0, 3, 6], [1, 4], [2, 5]], 7) == list(range(7))
    # a padded sampler repeats items at the end of short shards: cut at the dataset length
    assert merge_strided_shards([[0, 3, 6], [1, 4, 0], [2, 5, 1]], 7) == list(range(7))
    with pytest.raises(ValueError, match="hold 5 items, dataset has 7"):
        merge_strided_shards([[0, 3, 6], [1, 4]], 7)


def test_auto_scale_lr_is_linear_in_the_total_batch():
    # mmdetection: 0.02 for 8 GPUs x 2 images; 4 GPUs x 2 images -> 0.01
    assert scaled_lr(0.02, 4, 2, 16) == pytest.approx(0.01)
    assert scaled_lr(0.02, 8, 4, 16) == pytest.approx(0.04)
    with pytest.raises(ValueError, match="samples_per_gpu must be >= 1"):
        scaled_lr(0.02, 8, 0, 16)


def test_the_context_destroys_the_group_also_after_an_error(tmp_path):
    from dist_workers import group_after_error, run_ranks

    records = run_ranks(group_after_error, tmp_path, bare=True)
    for rank, record in enumerate(records):
        assert record["ok"], record.get("trace")
        assert record["result"] == {
            "inside": [True, 2, rank],
            "after": False,
            "message": "boom",
        }
