"""Scaling out: how many CPU threads one job of a parallel sweep may use, and one run on several processes.

Hydra's joblib launcher runs ``n_jobs`` jobs side by side on one machine, and submitit's launchers
give each job ``cpus_per_task`` cores. A job whose ``threads`` setting is left at ``null`` then
takes its share of the cores instead of torch's default (one thread per core in every job), so
parallel jobs do not wait on each other's OpenMP threads.

``torchrun --nproc_per_node=N train.py`` trains one model on N processes (``DataParallel``).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.distributed as dist

from ..data.loader import TensorLoader


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a SLURM allocation), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def job_threads(launcher: Mapping[str, Any] | None, cores: int | None = None) -> int | None:
    """Torch threads for one job started by ``launcher`` (Hydra's ``hydra.launcher`` node): ``cpus_per_task``
    when a submitit launcher sets it; ``cores // n_jobs`` for the joblib launcher (``n_jobs=-1``: one job per
    core, joblib's rule for negative values); ``None`` (torch's default) for one job at a time."""
    if not launcher:
        return None
    cores = cores or available_cores()
    cpus = launcher.get("cpus_per_task")
    if cpus:
        return int(cpus)
    n_jobs = launcher.get("n_jobs")
    if n_jobs is None:
        return None
    n_jobs = int(n_jobs)
    if n_jobs < 0:
        n_jobs = max(cores + 1 + n_jobs, 1)
    return max(cores // max(n_jobs, 1), 1)


# ----------------------------------------------------------------------------- data parallelism (torchrun)


def torchrun_world() -> tuple[int, int, int] | None:
    """``(rank, world size, local rank)`` when started by torchrun with more than one process, else ``None``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world < 2:
        return None
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def start_process_group() -> None:
    """Join torchrun's processes (gloo for CPU tensors, NCCL for CUDA ones where there is a GPU)."""
    if torchrun_world() is not None and not dist.is_initialized():
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")


def leave_together() -> None:
    """End a finished run's process group once every process has finished: a process that closes its
    connections while another still holds messages of the group makes gloo abort that one ("terminate called
    without an active exception"), and torchrun reports the finished run as failed."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def agree(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (``value`` itself without a process group)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class DataParallel:
    """One model trained by ``world_size`` processes: every rank takes its slice of each batch, the gradients of
    every optimizer are averaged across ranks before it steps (weighted by slice size: the step equals the
    single-process one on the whole batch), and the summed metrics are added up across ranks before they are read.

    SigProp's updates are layer-local: each layer's gradient comes from its own input and the signal, so
    averaging each layer's gradient where its optimizer steps (``layerwise``/``lowmem``: inside the forward pass;
    ``fused``: once per batch) needs no other communication.
    """

    def __init__(self, rank: int, world_size: int, local_rank: int) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.share = 1.0  # this rank's fraction of the current batch

    @property
    def writes(self) -> bool:
        """Whether this rank writes the run's files (metrics, checkpoint, summary, W&B): rank 0 only."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: ``cuda:<local rank>`` for ``cuda``, the CPU as it is."""
        if device.type != "cuda":
            return device
        device = torch.device("cuda", self.local_rank)
        torch.cuda.set_device(device)
        return device

    def shard(self, batches: TensorLoader) -> Shards:
        """This rank's slices of ``batches``."""
        return Shards(batches, self)

    def shard_loaders(self, loaders: Any) -> Any:
        """``loaders`` (``parts.Loaders``) with every phase's batches split among the processes."""
        val = self.shard(loaders.val) if loaders.val is not None else None
        return dataclasses.replace(loaders, train=self.shard(loaders.train), test=self.shard(loaders.test), val=val)

    def attach(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Average the gradients across ranks just before each optimizer steps."""
        for optimizer in optimizers:
            optimizer.register_step_pre_hook(self._average_gradients)

    def _average_gradients(self, optimizer: torch.optim.Optimizer, *args: Any) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        for grad in grads:  # one all-reduce per tensor: exact, simple; a bucketed one is faster on many layers
            grad.mul_(self.share)
            dist.all_reduce(grad)

    def broadcast_model(self, module: torch.nn.Module) -> None:
        """Rank 0's weights and buffers on every rank (they start equal from the seed; this makes it certain)."""
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)

    def sum_metrics(self, sums: Sequence[Any]) -> None:
        """Add up ``LossAccuracySums`` (loss sum, correct, count) across ranks, in place: one all-reduce of one
        stacked float64 tensor on the sums' device (no read to the host before it)."""
        if not sums:
            return
        device = next((s.loss_sum.device for s in sums if isinstance(s.loss_sum, torch.Tensor)), torch.device("cpu"))
        values = torch.stack([
            torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in (s.loss_sum, s.correct, s.count)])
            for s in sums
        ])
        dist.all_reduce(values)
        counts = values[:, 2].tolist()  # the one read: counts are plain ints
        for s, row, count in zip(sums, values, counts, strict=True):
            s.loss_sum, s.correct, s.count = row[0], row[1], int(count)


class Shards:
    """This rank's contiguous slice of every batch of ``batches`` (all ranks draw the same batches: the same seeded
    order and augmentation), with the slice's share of the batch set on ``parallel`` for the gradient average. A
    batch with fewer samples than ranks (a last one) is skipped by every rank."""

    def __init__(self, batches: TensorLoader, parallel: DataParallel) -> None:
        self.batches, self.parallel = batches, parallel

    def __len__(self) -> int:
        n = len(self.batches)
        last = self.batches.num_samples - (n - 1) * self.batches.batch_size if n else 0
        return n - int(0 < last < self.parallel.world_size)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        p = self.parallel
        for x, y in self.batches:
            n = len(y)
            if n < p.world_size:
                continue
            x, y = x.tensor_split(p.world_size)[p.rank], y.tensor_split(p.world_size)[p.rank]
            p.share = len(y) / n
            yield x, y


def data_parallel() -> DataParallel | None:
    """The ``DataParallel`` of this process when torchrun started several and ``start_process_group`` ran."""
    world = torchrun_world()
    if world is None or not dist.is_initialized():
        return None
    return DataParallel(*world)
