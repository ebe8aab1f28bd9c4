"""Layer parallelism: the assembled model split into contiguous stages, one per torchrun process.

``torchrun --standalone --nproc_per_node=2 train.py parallel.stages=2 step.mode=layerwise ...``: process ``s``
holds stage ``s``, a contiguous run of the model's layers with their optimizers. Stage 0 reads the batches and
runs the signal and the first hidden layers; the last stage holds the output layer, its loss and its optimizer.
Each stage sends ``(h, t, labels)`` of a batch to the next with point-to-point messages (``isend``/``irecv``)
and goes on with the next batch while they travel; nothing flows backward.

Why this is exact: a SigProp layer's update needs only its own input, the signal and its own weights, and
every layer's input is detached. In ``step.mode=layerwise`` one process runs, for batch ``i``, every layer in
turn, each stepping its own optimizer. Here stage ``s+1`` receives for batch ``i`` exactly what stage ``s``
computed for batch ``i`` (with its weights after batch ``i-1``), whatever stage ``s`` has done since: the
same inputs, the same weights, the same updates, in the same order per layer.

With ``nproc_per_node = stages × replicas`` every stage is also data-parallel over its replicas: rank
``stage × replicas + replica``; each replica takes its slice of every batch and exchanges it with the same
replica of the next stage, and the replicas of a stage average only that stage's gradients (within its own
process group) before each of its optimizers steps, as ``parallel.DataParallel`` does for the whole model.

Evaluation runs the same pipeline without updates. Every layer's metrics are gathered once per phase (never
per step); after a training phase rank 0 receives the other stages' weights and optimizer states, so its
checkpoint has the single-process format (a pipelined run resumes in one process and the other way round).
"""
from __future__ import annotations

import atexit
import contextlib
import copy
import datetime
import functools
import itertools
import logging
import math
import statistics
import time
import types
import warnings
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from .. import models, propagators
from ..monitors.monitor import LossAccuracySums
from ..utils import one_line
from .config import ConfigError
from .outcome import JobFailed
from .parallel import Shards, torchrun_world
from .step import Batches, Metrics, OutputMeter, TrainStep

log = logging.getLogger(__name__)

MODES = ("layerwise", "lowmem")  # the modes whose layers step their own optimizers inside the forward pass
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64, torch.int32)
MAX_DIMS = 5
SLOT = 3 + MAX_DIMS  # per tensor of a message: present, dtype, ndim, shape
HEADER = 3 * SLOT + 1  # three tensors, then the whole batch's size (the replicas' share of it)
IN_FLIGHT = 2  # batches a stage may have sent that the next has not yet received
AUTO = "auto"  # parallel.split: by the layers' times, measured in a few training steps at the start
TIMED_STEPS = 3  # training steps timed for parallel.split=auto, after one untimed (the median of each layer's times)


def stages_of(cfg: DictConfig) -> int:
    """``parallel.stages`` (1 where the config has no ``parallel`` node)."""
    node = cfg.get("parallel")
    return int(node.stages) if node is not None else 1


def check_stages(cfg: DictConfig) -> Pipeline | None:
    """This process's ``Pipeline`` when ``parallel.stages`` > 1 (``None`` for 1); a ``ConfigError`` in one line for
    settings a pipeline cannot run: no torchrun, a process count the stages do not divide, a batch size the replicas
    of a stage cannot split, a step other than ``layerwise``/``lowmem``, a split that does not list one start per
    later stage."""
    stages = stages_of(cfg)
    if stages == 1:
        return None
    setting = f"parallel.stages={stages}"
    world = torchrun_world()
    if world is None:
        raise ConfigError(
            f"{setting}: needs one process per stage started by torchrun "
            f"(torchrun --standalone --nproc_per_node={stages} train.py {setting} ...; docs/scaling.md)"
        )
    rank, size, local_rank = world
    if size % stages:
        raise ConfigError(
            f"{setting}: torchrun started {size} processes, which the stages do not divide; start stages × replicas "
            f"processes (--nproc_per_node={stages}, {2 * stages}, ...)"
        )
    replicas = size // stages
    if cfg.batch_size % replicas:
        raise ConfigError(
            f"batch_size={cfg.batch_size}: must be divisible by the {replicas} replicas of each stage "
            f"({size} processes for {stages} stages)"
        )
    mode = getattr(cfg.step.mode, "value", cfg.step.mode)
    if mode not in MODES:
        raise ConfigError(
            f"step.mode={mode}: {setting} needs step.mode=layerwise or lowmem (each stage steps its own layers' "
            "optimizers; fused applies every layer's loss in one step over the whole model)"
        )
    split = cfg.parallel.get("split")
    if split is not None and split != AUTO:
        split = [int(i) for i in split]
        if len(split) != stages - 1 or any(b <= a for a, b in zip(split, split[1:])) or split[0] < 0:
            raise ConfigError(
                f"parallel.split=[{','.join(map(str, split))}]: must list {stages - 1} increasing layer indices, where "
                f"stages 1 to {stages - 1} start (or auto: by the layers' measured times; null: equal numbers of layers "
                "with parameters)"
            )
    return Pipeline(rank, size, local_rank, split, stages, float(cfg.parallel.timeout))


class Pipeline:
    """One of ``world_size`` torchrun processes, each training one stage of the model (``stage`` splits it), on
    its slice of every batch when a stage has several replicas (``world_size = stages × replicas``).

    Plays ``DataParallel``'s part in a job: which rank writes the run's files, and this rank's device. ``split`` and
    ``timeout`` (seconds) are ``parallel.split`` and ``parallel.timeout``."""

    def __init__(
        self, rank: int, world_size: int, local_rank: int, split: list[int] | str | None, stages: int, timeout: float
    ) -> None:
        self.rank, self.world_size, self.local_rank, self.split = rank, world_size, local_rank, split
        self.timeout = datetime.timedelta(seconds=timeout)
        self.stages = stages
        self.replicas = world_size // self.stages  # processes per stage, each on its slice of every batch
        self.stage_index, self.replica = divmod(rank, self.replicas)
        close_process_group_at_exit()

    @functools.cached_property
    def everyone(self) -> Any:
        """All ranks' process group, waiting at most ``parallel.timeout`` for any message or gathering: the
        pipeline's every exchange goes through it, so a stage that hangs is found as one that died. Created on first
        use, which every rank reaches at the same point (torch.distributed requires it)."""
        return dist.new_group(timeout=self.timeout)

    def rank_of(self, stage: int) -> int:
        """The rank of ``stage``'s process that exchanges batches with this one (the same replica)."""
        return stage * self.replicas + self.replica

    @property
    def writes(self) -> bool:
        """Whether this rank writes the run's files: rank 0 (stage 0), after gathering every stage's state."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: ``cuda:<local rank>`` for ``cuda``, the CPU as it is."""
        if device.type != "cuda":
            return device
        device = torch.device("cuda", self.local_rank)
        torch.cuda.set_device(device)
        return device

    def sum_metrics(self, sums: Sequence[Any]) -> None:
        """Nothing: a pipelined phase gathers its stages' metrics itself (``StagedStep.run_phase``)."""

    def plan(self, model: nn.Module) -> list[int] | None:
        """Where the stages start (``split_bounds``), or ``None`` for ``parallel.split=auto``, whose split is measured
        once the data is loaded (``measure_split``); a ``ConfigError`` for a model that cannot be split so."""
        if self.split == AUTO:
            split_bounds(model, self.stages, None)  # refuses what the default split refuses: the same layers can split
            return None
        return split_bounds(model, self.stages, self.split)  # type: ignore[arg-type]

    def measure_split(self, step: TrainStep, batches: Batches, generator: torch.Generator) -> list[int]:
        """The split of ``parallel.split=auto``: every rank times each layer in a few training steps on the first
        training batch (its replica's slice), the ranks share their times, and the stages are the contiguous runs
        of layers whose busiest takes least (``balanced_bounds``). The model, its optimizers, the random state and
        the order of the batches are as they were before, so the run trains as it would without the timing."""
        with random_state_kept(generator):  # the first epoch draws the order and augmentation it would have drawn
            x, y = next(iter(batches))
            x, y = x.tensor_split(self.replicas)[self.replica], y.tensor_split(self.replicas)[self.replica]
            mine = layer_times(step, x, y)
        ranks: list[Any] = [None] * self.world_size
        with talking_to(None):
            dist.all_gather_object(ranks, mine, group=self.everyone)
        signal = statistics.median(times[0] for times in ranks)
        costs = [statistics.median(times[1][i] for times in ranks) for i in range(len(mine[1]))]
        bounds = balanced_bounds(signal, costs, self.stages)
        if self.writes:
            log.info(measured_split(step.model, signal, costs, bounds))
        return bounds

    def stage(self, step: TrainStep, bounds: list[int]) -> StagedStep:
        """This rank's stage of ``step``'s model, the stages starting at ``bounds`` (``plan``, ``measure_split``)."""
        # Every rank creates every stage's group of replicas, in the same order (torch.distributed requires it).
        if self.replicas == 1:
            return StagedStep(step, self, bounds)
        groups = [dist.new_group(list(range(s * self.replicas, (s + 1) * self.replicas)), timeout=self.timeout)
                  for s in range(self.stages)]
        return StagedStep(step, self, bounds, groups[self.stage_index])


_CLOSING: list[bool] = []


def close_process_group_at_exit() -> None:
    """Destroy the process group before the interpreter shuts down: gloo's point-to-point messages leave a
    thread in its context that, torn down with the process, aborts it ("terminate called without an active
    exception") after the run has finished, and torchrun reports the run as failed."""
    if not _CLOSING:
        _CLOSING.append(True)
        atexit.register(lambda: dist.destroy_process_group() if dist.is_initialized() else None)


def units(model: nn.Module) -> list[nn.Module]:
    """The layers a pipeline splits: the wrapped layers of a ``models.Forward`` in order (the output layer last).
    ``ConfigError`` for any other model, and for layers trained end to end (their gradients flow backward)."""
    if type(model) is not models.Forward or not isinstance(model.model, nn.Sequential):
        raise ConfigError(
            f"parallel.stages: the model is a {type(model).__name__}, not a plain sequence of layers "
            "(models.Forward over an nn.Sequential); only such a model can be split into stages"
        )
    layers = list(model.model)
    if any(isinstance(m, propagators.Identity) for m in layers[:-1]):
        raise ConfigError(
            "parallel.stages: propagator=backprop trains the hidden layers through one backward pass from the output, "
            "which cannot be split into stages; use a propagator that trains each layer locally (loss, fixed)"
        )
    return layers


def layer_name(layer: nn.Module, output: bool) -> str:
    """A layer's name in reports: its metrics' (``layer01``), ``output``, or its module's type."""
    if output:
        return "output"
    monitor = getattr(layer, "loss", None)
    return getattr(monitor, "name", "") or type(getattr(layer, "module", layer)).__name__


def has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def split_bounds(model: nn.Module, stages: int, split: list[int] | None) -> list[int]:
    """Where each stage's layers start and the last ends, as indices into ``units(model)``: ``split`` (the starts
    of stages 1...), or by default equal numbers of layers with parameters per stage (the signal counts as one of
    stage 0's when it learns; a layer without parameters stays with the one before it)."""
    layers = units(model)
    if split is not None:
        if split[-1] >= len(layers):
            raise ConfigError(
                f"parallel.split=[{','.join(map(str, split))}]: the model has {len(layers)} layers (indices 0 to "
                f"{len(layers) - 1}, the output layer last)"
            )
        return [0, *split, len(layers)]
    learning = [i for i, layer in enumerate(layers) if has_parameters(layer)]
    signal = any(p.requires_grad for p in model.signal.parameters())  # type: ignore[union-attr]
    count = len(learning) + int(signal)
    if stages > count:
        raise ConfigError(
            f"parallel.stages={stages}: more stages than the {count} layers with parameters "
            f"({'the signal and ' if signal else ''}{len(learning)} layers of the network)"
        )
    # Entry k of `order` is the k-th learning unit; -1 stands for the signal (always stage 0's).
    order = ([-1] if signal else []) + learning
    starts = [order[round(k * count / stages)] for k in range(1, stages)]
    return [0, *starts, len(layers)]


def signal_state(step: TrainStep, x: Tensor, y: Tensor) -> tuple[Any, Any, Any]:
    """``(h, t, labels)`` of batch ``(x, y)`` after the signal: what stage 0 passes to its first layer."""
    x = step._input(x)
    with step._autocast(x):
        h, t = step.model.signal((x, y, y))  # type: ignore[operator]
    return h, t, y


def layer_times(step: TrainStep, x: Tensor, y: Tensor, steps: int = TIMED_STEPS) -> tuple[float, list[float]]:
    """Seconds per batch of the signal and of each layer of ``units(step.model)``, its update included (the output
    layer's loss and optimizer step too): the median over ``steps`` training steps on ``(x, y)`` after one untimed,
    as ``step.mode=layerwise`` runs them. The model's weights and buffers and the optimizers' states are restored
    afterwards (the random state is not: ``random_state_kept``)."""
    saved = copy.deepcopy(step.state_dict())
    cuda = x.device.type == "cuda"
    layers = units(step.model)
    signal_times: list[float] = []
    times: list[list[float]] = [[] for _ in layers]

    def clock() -> float:
        if cuda:  # only here, at the start: the timing needs the device's work done
            torch.cuda.synchronize(x.device)
        return time.perf_counter()

    step.train(True)
    for _ in range(steps + 1):
        begin = clock()
        state = signal_state(step, x, y)
        signal_times.append(clock() - begin)
        for k, layer in enumerate(layers):
            begin = clock()
            with step._autocast(state[0]):
                state = layer(state)
                if k == len(layers) - 1:  # the output layer's loss and update, as StagedStep.run_phase
                    step.update_output(F.cross_entropy(state[0].float(), y))
            times[k].append(clock() - begin)
    step.load_state_dict(saved)
    for optimizer in step.optimizers:
        optimizer.zero_grad(set_to_none=True)
    return statistics.median(signal_times[1:]), [statistics.median(t[1:]) for t in times]


@contextlib.contextmanager
def random_state_kept(generator: torch.Generator) -> Iterator[None]:
    """Restore ``generator``, torch's global generator and the GPUs' (dropout, augmentation on a GPU) on leaving."""
    saved = generator.get_state(), torch.get_rng_state()
    gpus = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        generator.set_state(saved[0])
        torch.set_rng_state(saved[1])
        if gpus is not None:
            torch.cuda.set_rng_state_all(gpus)


def balanced_bounds(signal: float, costs: Sequence[float], stages: int) -> list[int]:
    """The split of layers costing ``costs`` (the signal's ``signal`` on stage 0) into ``stages`` contiguous
    non-empty runs whose busiest costs least, as ``split_bounds`` gives it: the first layer of every stage, and
    ``len(costs)``. Of equally busy splits, the one whose stages start earliest."""
    n = len(costs)
    if not 1 <= stages <= n:
        raise ValueError(f"cannot split {n} layers into {stages} stages")
    ends = list(itertools.accumulate(costs, initial=0.0))

    def cost(start: int, stop: int) -> float:
        return ends[stop] - ends[start] + (signal if start == 0 else 0.0)

    # busiest[k][j]: the least busiest stage of layers 0..j-1 in k stages; cut[k][j] where its last stage starts.
    busiest = [[math.inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    busiest[0][0] = 0.0
    for k in range(1, stages + 1):
        for j in range(k, n + 1):
            for i in range(k - 1, j):
                value = max(busiest[k - 1][i], cost(i, j))
                if value < busiest[k][j]:
                    busiest[k][j], cut[k][j] = value, i
    bounds = [n]
    for k in range(stages, 0, -1):
        bounds.append(cut[k][bounds[-1]])
    return bounds[::-1]


def measured_split(model: nn.Module, signal: float, costs: Sequence[float], bounds: Sequence[int]) -> str:
    """The log line of ``parallel.split=auto``: each layer's measured time, the stages' and what they allow."""
    layers = units(model)
    named = [f"{layer_name(layer, i == len(layers) - 1)} {cost * 1e3:.1f}" for i, (layer, cost) in enumerate(zip(layers, costs))]
    stages = [sum(costs[a:b]) + (signal if a == 0 else 0.0) for a, b in zip(bounds, bounds[1:])]
    ceiling = (signal + sum(costs)) / max(stages)
    return (f"pipeline split by measured time per batch (ms): signal {signal * 1e3:.1f}, {', '.join(named)}; "
            f"parallel.split=[{','.join(map(str, bounds[1:-1]))}], stages {', '.join(f'{t * 1e3:.1f}' for t in stages)} "
            f"ms: at most {ceiling:.2f}x one process's speed")


def sum_over(group: Any, sums: Sequence[LossAccuracySums]) -> None:
    """Add up ``sums`` (loss sum, correct, count) across the processes of ``group``, in place, in one all-reduce."""
    if not sums:
        return
    device = next((s.loss_sum.device for s in sums if isinstance(s.loss_sum, Tensor)), torch.device("cpu"))
    values = torch.stack([
        torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in (s.loss_sum, s.correct, s.count)])
        for s in sums
    ])
    with talking_to(None):
        dist.all_reduce(values, group=group)
    counts = values[:, 2].tolist()
    for s, row, count in zip(sums, values, counts, strict=True):
        s.loss_sum, s.correct, s.count = row[0], row[1], int(count)


def to_cpu(value: Any) -> Any:
    """``value`` (a state dict, nested) with every tensor copied to the CPU, to travel between processes."""
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value


class StagedStep:
    """This rank's stage of a ``TrainStep``: the same interface for the epoch loop (``run_phase``, ``epoch_end``,
    ``lr``, ``state_dict``, ``model``), running only the stage's layers and exchanging batches with its neighbours.

    Every rank holds the whole ``TrainStep`` (built from the same seed, and restored from a checkpoint alike); a
    rank runs and updates only its stage's layers, and rank 0's copy of the other layers is refreshed with their
    stages' state after every training phase, for the checkpoint.
    """

    def __init__(self, step: TrainStep, pipeline: Pipeline, bounds: list[int], group: Any = None) -> None:
        self.step, self.pipeline, self.group = step, pipeline, group
        self.model = step.model
        self.optimizers = step.optimizers
        self.monitor = step.monitor
        stage, stages = pipeline.stage_index, pipeline.stages
        self.first, self.last = stage == 0, stage == stages - 1
        start, stop = bounds[stage], bounds[stage + 1]
        self.layers = units(step.model)[start:stop]
        self.bounds = bounds
        mine: list[nn.Module] = ([step.model.signal] if self.first else []) + self.layers  # type: ignore[list-item]
        params = {id(p) for m in mine for p in m.parameters()}
        # The optimizers this stage steps: the layers' own, and the output layer's on the last stage.
        self.owned_optimizers = [
            i for i, o in enumerate(step.optimizers) if any(id(p) in params for g in o.param_groups for p in g["params"])
        ]
        monitors = {id(m.loss) for module in mine for m in module.modules() if hasattr(m, "loss")}
        self.owned_monitors = [m for m in step.monitor.monitors if id(m) in monitors]
        prefixes = (["signal."] if self.first else []) + [f"model.{i}." for i in range(start, stop)]
        self.owned_keys = [k for k in step.model.state_dict() if k.startswith(tuple(prefixes))]
        self.inbox = None if self.first else Inbox(pipeline.rank_of(stage - 1), pipeline.everyone)
        self.outbox = None if self.last else Outbox(pipeline.rank_of(stage + 1), pipeline.everyone)
        self.share = 1.0  # this replica's fraction of the current batch
        self.waiting = 0.0  # seconds of the current phase spent waiting for the stage before or after
        if group is not None:  # replicas of this stage average their gradients before each of its optimizers steps
            for i in self.owned_optimizers:
                step.optimizers[i].register_step_pre_hook(self._average_gradients)

    def _average_gradients(self, optimizer: torch.optim.Optimizer, *args: Any) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        with talking_to(None):
            for grad in grads:  # weighted by slice size: the step equals the one on the whole batch
                grad.mul_(self.share)
                dist.all_reduce(grad, group=self.group)

    def describe(self) -> str:
        """Which layers each stage holds (by their metrics' names), for the log."""
        layers = units(self.model)
        stages = []
        for s, (start, stop) in enumerate(zip(self.bounds, self.bounds[1:])):  # noqa: B007
            names = ["signal"] if s == 0 else []
            names += [layer_name(layer, i == len(layers) - 1) for i, layer in enumerate(layers) if start <= i < stop]
            stages.append(f"stage {s}: {', '.join(names)}")
        return "pipeline: " + "; ".join(stages)

    # The epoch loop's interface, as TrainStep's.
    def epoch_end(self) -> None:
        """Every schedule advances on every rank (so rank 0's checkpoint has them all), also those of optimizers
        this stage never steps: torch's warning about a schedule stepped before its optimizer does not apply."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            self.step.epoch_end()

    def lr(self) -> float:
        return self.step.lr()

    def train(self, mode: bool = True) -> None:
        self.step.train(mode)

    def eval(self) -> None:
        self.step.eval()

    def state_dict(self) -> dict[str, Any]:
        """The whole model's state as one process has it (complete on rank 0 after a training phase)."""
        return self.step.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step.load_state_dict(state)

    def run_phase(
        self,
        batches: Batches,
        phase: str,
        progress: bool = False,
        refresh_every: int = 20,
        desc: str = "",
        combine: Callable[[list[LossAccuracySums]], None] | None = None,
    ) -> Metrics:
        """One pass over ``batches`` through the pipeline (``TrainStep.run_phase``'s metrics, on every rank):
        stage 0 reads them, every stage runs its layers, the last computes the output loss. ``combine`` is not
        used: the stages' metrics are gathered here, once."""
        del progress, refresh_every, desc, combine  # no progress bar: each stage sees only its part
        training = phase == "train"
        step = self.step
        step.train(training)
        step.monitor.reset()
        meter = OutputMeter()
        # This replica's slice of every batch (the whole batch with one replica per stage), as data parallelism's.
        view = types.SimpleNamespace(world_size=self.pipeline.replicas, rank=self.pipeline.replica, share=1.0)
        slices = Shards(batches, view)  # type: ignore[arg-type]
        count = len(slices)
        if self.inbox is not None:
            self.inbox.device = next(self.model.named_parameters())[1].device  # received tensors go where the layers are
        start = time.perf_counter()
        self.waiting = 0.0
        grad = contextlib.nullcontext() if training else torch.no_grad()
        with grad:
            source: Iterator[tuple[Tensor, Tensor]] | None = iter(slices) if self.first else None
            posted = self.inbox.post(0) if self.inbox is not None and count else None
            for i in range(count):
                if source is not None:
                    x, y = next(source)
                    self.share = view.share
                    state: tuple[Any, Any, Any] = signal_state(step, x, y)
                else:
                    assert self.inbox is not None and posted is not None
                    waited = time.perf_counter()
                    state, self.share = self.inbox.take(posted, i)
                    self.waiting += time.perf_counter() - waited
                    if i + 1 < count:
                        posted = self.inbox.post(i + 1)  # the next batch's header may arrive while this one runs
                with step._autocast(state[0]):
                    for layer in self.layers:
                        state = layer(state)
                    if self.last:
                        logits = state[0].float()
                        loss = F.cross_entropy(logits, state[2])
                if self.outbox is not None:
                    waited = time.perf_counter()
                    self.outbox.send(i, state, self.share)  # waits while IN_FLIGHT batches are unreceived
                    self.waiting += time.perf_counter() - waited
                    continue
                if training:
                    step.update_output(loss)
                meter.add_batch(loss.detach(), logits.detach(), state[2])
        if self.outbox is not None:
            waited = time.perf_counter()
            self.outbox.flush()
            self.waiting += time.perf_counter() - waited
        if training:
            self.gather_state()
        return self.gather_metrics(phase, meter, time.perf_counter() - start)

    def gather_state(self) -> None:
        """Rank 0's copy of the whole model and every optimizer made current: every other stage sends its layers'
        weights and buffers and its optimizers' states (one message per stage, once per training phase)."""
        state = self.step.model.state_dict()
        mine = {  # the replicas of a stage hold the same state: the first one sends it
            "model": to_cpu({k: state[k] for k in self.owned_keys}),
            "optimizers": {i: to_cpu(self.step.optimizers[i].state_dict()) for i in self.owned_optimizers},
        } if self.pipeline.replica == 0 else None
        gathered: list[Any] | None = [None] * self.pipeline.world_size if self.pipeline.rank == 0 else None
        with talking_to(None):
            dist.gather_object(mine, gathered, dst=0, group=self.pipeline.everyone)
        if gathered is None:
            return
        for other in gathered[1:]:
            if other is None:
                continue
            missing = set(other["model"]) - set(state)
            if missing:
                raise RuntimeError(f"stage state names layers rank 0 does not have: {sorted(missing)[:3]}")
            self.step.model.load_state_dict(other["model"], strict=False)
            for i, optimizer_state in other["optimizers"].items():
                self.step.optimizers[i].load_state_dict(optimizer_state)

    def gather_metrics(self, phase: str, meter: OutputMeter, elapsed: float) -> Metrics:
        """``TrainStep.run_phase``'s metrics, in its order, on every rank: each stage's layers' values and the last
        stage's output loss and accuracy, exchanged once."""
        if self.group is not None:  # this stage's replicas add up their sums first
            sum_over(self.group, [meter, *self.owned_monitors] if self.last else list(self.owned_monitors))
        mine: dict[str, Any] = {"layers": {m.name: m.values() for m in self.owned_monitors}, "elapsed": elapsed,
                                "waiting": self.waiting}
        if self.last:
            mine |= {"output": meter.values(), "count": meter.count}
        everyone: list[Any] = [None] * self.pipeline.world_size
        with talking_to(None):
            dist.all_gather_object(everyone, mine, group=self.pipeline.everyone)
        layers = {name: values for stage in everyone for name, values in stage["layers"].items()}
        output, samples = everyone[-1]["output"], everyone[-1]["count"]
        metrics: Metrics = {f"{phase}/loss": output["loss"], f"{phase}/acc": output["acc"]}
        for monitor in self.step.monitor.monitors:  # the single process's order: signal, layer01, ...
            for key, value in layers.get(monitor.name, {"loss": math.nan, "acc": math.nan}).items():
                metrics[f"{phase}/{monitor.name}/{key}"] = value
        slowest = max(stage["elapsed"] for stage in everyone)
        metrics[f"{phase}/samples_per_s"] = samples / slowest if slowest > 0 else math.nan
        if phase == "train" and self.pipeline.writes:
            log.info(stage_times([stage["elapsed"] for stage in everyone], [stage["waiting"] for stage in everyone],
                                 self.pipeline.replicas))
        return metrics


def stage_times(elapsed: Sequence[float], waiting: Sequence[float], replicas: int = 1) -> str:
    """The log line of a training phase's time per stage: busy (its own work) and waiting for its neighbours, and
    the speed-up over one process that the split allows at most, the stages' busy time over the busiest's
    (ranks are ``stage × replicas + replica``; a stage's first replica stands for it)."""
    busy = [max(e - w, 0.0) for e, w in zip(elapsed[::replicas], waiting[::replicas])]
    stages = "; ".join(f"stage {s} busy {b:.1f} s, waiting {w:.1f} s" for s, (b, w) in enumerate(zip(busy, waiting[::replicas])))
    ceiling = sum(busy) / max(busy) if max(busy) > 0 else math.nan
    return f"pipeline time: {stages}; this split allows at most {ceiling:.2f}x one process's speed"


# ----------------------------------------------------------------------------- messages between stages


class StageLost(JobFailed):
    """A stage of the pipeline stopped (its process died or its connection broke): the others stop too, with
    one line naming it, instead of waiting for it."""


@contextlib.contextmanager
def talking_to(peer: int | None) -> Iterator[None]:
    """Turn a failed message to or from ``peer`` (``None``: one of the stages, in a collective) into ``StageLost``."""
    try:
        yield
    except RuntimeError as err:  # gloo and NCCL raise RuntimeError (DistBackendError) for a broken connection
        who = f"stage {peer} of the pipeline" if peer is not None else "a stage of the pipeline"
        hint = "; a stage that is slow rather than stuck needs a longer parallel.timeout" if "timed out" in str(err).lower() else ""
        raise StageLost(f"{who} stopped answering ({one_line(err)[:200]}){hint}") from err



def tag(batch: int, part: int) -> int:
    """The message tag of ``part`` (0: header, 1-3: h, t, labels) of batch ``batch`` (tags wrap around)."""
    return (batch % 4096) * 4 + part


def header_of(tensors: Sequence[Tensor | None], batch_size: int) -> Tensor:
    """Shapes and dtypes of ``tensors`` in one int64 tensor, so the receiver can allocate before the data comes."""
    values: list[int] = []
    for t in tensors:
        if t is None:
            values += [0] * SLOT
            continue
        if t.dim() > MAX_DIMS or t.dtype not in DTYPES:
            raise ValueError(f"a stage's output of shape {tuple(t.shape)} and dtype {t.dtype} cannot be sent")
        values += [1, DTYPES.index(t.dtype), t.dim(), *t.shape, *[0] * (MAX_DIMS - t.dim())]
    return torch.tensor([*values, batch_size], dtype=torch.int64)


class Outbox:
    """Sends ``(h, t, labels)`` of each batch to the next stage without waiting, keeping at most ``IN_FLIGHT``
    batches unacknowledged (their tensors alive until sent)."""

    def __init__(self, peer: int, group: Any = None) -> None:
        self.peer, self.group = peer, group
        self.pending: list[tuple[list[Any], list[Tensor]]] = []

    def send(self, batch: int, state: Sequence[Tensor | None], share: float = 1.0) -> None:
        """Send ``state`` of ``batch``, a ``share`` of the whole batch (its labels' count over the batch's)."""
        tensors = [t.detach().contiguous() if t is not None else None for t in state]
        header = header_of(tensors, round(len(tensors[2]) / share) if tensors[2] is not None else 0)
        with talking_to(self.peer):
            works = [dist.isend(header, self.peer, self.group, tag=tag(batch, 0))]
            works += [dist.isend(t, self.peer, self.group, tag=tag(batch, k + 1)) for k, t in enumerate(tensors) if t is not None]
        self.pending.append((works, [header, *(t for t in tensors if t is not None)]))
        while len(self.pending) > IN_FLIGHT:
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        works, _ = self.pending.pop(0)
        with talking_to(self.peer):
            for work in works:
                work.wait()

    def flush(self) -> None:
        """Wait until every batch sent has left."""
        while self.pending:
            self._wait_oldest()


class Inbox:
    """Receives each batch's ``(h, t, labels)`` from the stage before: its header posted ahead, then the tensors."""

    def __init__(self, peer: int, group: Any = None) -> None:
        self.peer, self.group = peer, group
        self.device = torch.device("cpu")

    def post(self, batch: int) -> tuple[Tensor, Any]:
        header = torch.empty(HEADER, dtype=torch.int64)
        with talking_to(self.peer):
            return header, dist.irecv(header, self.peer, self.group, tag=tag(batch, 0))

    def take(self, posted: tuple[Tensor, Any], batch: int) -> tuple[tuple[Any, Any, Any], float]:
        """The batch's ``(h, t, labels)`` and this replica's share of the whole batch."""
        with talking_to(self.peer):
            return self._take(posted, batch)

    def _take(self, posted: tuple[Tensor, Any], batch: int) -> tuple[tuple[Any, Any, Any], float]:
        header, work = posted
        work.wait()
        values = header.tolist()
        buffers: list[Tensor | None] = []
        works = []
        for k in range(3):
            present, dtype, ndim, *shape = values[k * SLOT : (k + 1) * SLOT]
            if not present:
                buffers.append(None)
                continue
            buffer = torch.empty(shape[:ndim], dtype=DTYPES[dtype], device=self.device)
            works.append(dist.irecv(buffer, self.peer, self.group, tag=tag(batch, k + 1)))
            buffers.append(buffer)
        for w in works:
            w.wait()
        h, t, y = buffers
        whole = values[-1]
        return (h, t, y), (len(y) / whole if y is not None and whole else 1.0)
