# An EMA of sharded parameters on a 2-process gloo CPU mesh: python examples/dtensor_ema.py
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import safe_ops


def run(rank, world_size):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    from torch.distributed.tensor import Shard, distribute_tensor, init_device_mesh

    mesh = init_device_mesh("cpu", (world_size,))
    torch.manual_seed(0)
    param, ema = torch.randn(8, 4), torch.zeros(8, 4)
    d_param = distribute_tensor(param, mesh, [Shard(0)])
    d_ema = distribute_tensor(ema, mesh, [Shard(0)])
    out = safe_ops.lerp_(d_ema, d_param, 0.1)  # written in place, shard by shard, no communication
    assert out is d_ema
    full = d_ema.full_tensor()
    if rank == 0:
        torch.testing.assert_close(full, torch.lerp(ema, param, 0.1))
        print("ema ok", tuple(d_ema.placements))
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(run, args=(2,), nprocs=2, join=True)
