"""The torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and the
few collectives the trainer needs. One process is a world of one and needs no process group.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Topology:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Topology:
        return cls(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")),
                   int(env.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def device_for(topology: Topology) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(topology.local_rank)
        return torch.device("cuda", topology.local_rank)
    return torch.device("cpu")


def start(topology: Topology, device: torch.device, *, deepspeed: bool) -> None:
    """Joins the process group (NCCL on GPUs, gloo on CPU). DeepSpeed brings its own init,
    which also sets up its communication backend."""
    if not topology.distributed and not deepspeed:
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not topology.distributed:
        # DeepSpeed always wants a process group: a single process is a world of one.
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if deepspeed:
        import deepspeed as ds
        from deepspeed import ops as ds_ops

        if device.type == "cpu":
            # On CPU DeepSpeed JIT-compiles shared-memory collectives, which needs a C++
            # toolchain the trainer image does not ship; gloo does the same work without one.
            ds_ops.__compatible_ops__["deepspeed_shm_comm"] = False
        ds.init_distributed(dist_backend=backend, timeout=timedelta(minutes=30))
    else:
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def sum_across(values: list[float], device: torch.device) -> list[float]:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return [float(v) for v in tensor.tolist()]
