"""The fast paths make the same updates as the straightforward ones, on real CIFAR-10 images.

* fused (one backward, one step) vs layer-wise (the reference's order): bit-for-bit the same
  arithmetic per layer, so fp32 is compared directly.
* per-class signal vs per-sample signal, and low-memory (recomputed) vs layer-wise: the same
  updates in exact arithmetic, but different summation orders. In fp32, Adam's first steps are
  ``lr * sign(g)`` for elements whose gradient is at rounding level (e.g. conv biases before an
  instance norm, whose exact gradient is 0), and v15's top-k flips between near-tied targets, so
  two fp32 runs that differ only in summation order drift apart by 1e-3..1e-1 within 20 steps —
  as much as two per-sample runs that only batch ``h`` and ``t`` differently. These checks run in
  float64, where the rule's equivalence shows without that noise; fp32 is checked on the first
  step's gradients.
"""
from __future__ import annotations

import functools

import pytest
import torch

from sigprop import loss as L
from sigprop import propagators
from sigprop.engine import TrainStep, assemble
from sigprop.engine.signals import projection_context_input
from sigprop.nets import cnn, mlp, vgg

STEPS = 20
BATCH = 32
SIZE = 16  # CIFAR-10 images average-pooled to 16x16: the same code paths at a quarter of the cost


def small_vgg8():
    return vgg("vgg8", (3, SIZE, SIZE), 10, feat_mult=0.0625, num_hidden=32, norm="instance", nonlin="leakyrelu")


def make(mode: str, per_class: bool, dtype: torch.dtype = torch.float32, loss=None, optimizer=None, network=small_vgg8) -> TrainStep:
    torch.manual_seed(0)
    net = network()
    learner = TrainStep(assemble(
        net,
        functools.partial(projection_context_input, per_class=per_class),
        propagators.Loss,
        loss if loss is not None else L.v15_input_target_topk(6),
        optimizer or functools.partial(torch.optim.Adam, lr=5e-4),
        mode=mode,
        recompute_chunk=12,
    ))
    if dtype != torch.float32:
        learner.model.to(dtype)
        # The label formatters make float32 one-hot rows; cast them like the rest of the model.
        learner.model.signal.module[0].register_forward_hook(lambda m, i, o: (o[0], o[1].to(dtype)))
    return learner


def train(learner: TrainStep, data, dtype: torch.dtype = torch.float32, steps: int = STEPS) -> dict[str, torch.Tensor]:
    x, y = data[0], data[1]
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (BATCH,), generator=g)
        learner.train_step(x[idx].to(dtype), y[idx])
    return {k: v.detach().clone() for k, v in learner.model.state_dict().items()}


def max_relative(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest over tensors of ``max|a - b| / max|b|``."""
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)) for k in a if b[k].numel())


@pytest.fixture(scope="module")
def cifar(cifar10_subset):
    x_train, y_train = cifar10_subset[0][:1000], cifar10_subset[1][:1000]
    return torch.nn.functional.avg_pool2d(x_train, 32 // SIZE), y_train


@pytest.mark.parametrize("per_class", [False, True])
def test_fused_equals_layerwise_fp32(cifar, per_class: bool) -> None:
    fused = train(make("fused", per_class), cifar)
    layerwise = train(make("layerwise", per_class), cifar)
    assert max_relative(fused, layerwise) <= 1e-5


def test_per_class_equals_per_sample_fp64(cifar) -> None:
    per_sample = train(make("fused", False, torch.float64), cifar, torch.float64)
    per_class = train(make("fused", True, torch.float64), cifar, torch.float64)
    assert max_relative(per_class, per_sample) <= 1e-5


# The networks of the CPU reproduction tables (conf/experiment/repro_*), narrower: no batch statistics, no dropout.
TABLE_NETWORKS = {
    "mlp": lambda: mlp((1, 28, 28), 10, num_layers=3, num_hidden=64, norm="none"),
    "cnn": lambda: cnn((1, 28, 28), 10, channels=(8, 16, 32), norm="instance"),
}


@pytest.mark.parametrize("network", TABLE_NETWORKS)
def test_per_class_equals_per_sample_on_the_table_networks_fp64(mnist, network: str) -> None:
    """What the repro presets rely on: with their networks the per-class signal makes the per-sample signal's updates."""
    data = mnist[0][:1000], mnist[1][:1000]
    steps = {pc: make("fused", pc, torch.float64, network=TABLE_NETWORKS[network]) for pc in (False, True)}
    assert all(propagators.fusable(m.module) for m in steps[True].model.modules() if isinstance(m, propagators.Loss))
    per_sample, per_class = (train(steps[pc], data, torch.float64, steps=10) for pc in (False, True))
    assert max_relative(per_class, per_sample) <= 1e-5


def test_lowmem_equals_layerwise_fp64(cifar) -> None:
    layerwise = train(make("layerwise", True, torch.float64), cifar, torch.float64)
    lowmem = train(make("lowmem", True, torch.float64), cifar, torch.float64)
    assert max_relative(lowmem, layerwise) <= 1e-5


@pytest.mark.parametrize("loss", [L.v9_input_target_max_all, L.v14_input_target_max_rand, L.v15_input_target_topk(6)])
def test_per_class_first_step_gradients_fp32(cifar, loss) -> None:
    """Same losses and gradients in fp32 at the first step, for every input-target loss."""
    grads = []
    for per_class in (False, True):
        learner = make("fused", per_class, loss=loss, optimizer=functools.partial(torch.optim.SGD, lr=0.0))
        idx = torch.randperm(len(cifar[1]), generator=torch.Generator().manual_seed(2))[:BATCH]
        learner.train_step(cifar[0][idx], cifar[1][idx])
        params = {n: p for n, p in torch.nn.Module.named_parameters(learner.model) if p.grad is not None}
        grads.append(({n: p.grad.clone() for n, p in params.items()}, learner.monitor.values()))
    (g_ps, m_ps), (g_pc, m_pc) = grads
    assert g_ps.keys() == g_pc.keys() and len(g_ps) > 10
    # Relative to the norm of each gradient: rounding differs (other summation orders), and an
    # element on the LeakyReLU's kink may fall on either side of it.
    # Some tensors' exact gradients are 0 (rounding-level values): they are held to the whole norm.
    norm = sum(float(g.norm() ** 2) for g in g_ps.values()) ** 0.5
    for name in g_ps:
        diff = float((g_pc[name] - g_ps[name]).norm())
        assert diff <= 1e-4 * float(g_ps[name].norm()) + 1e-7 * norm, (name, diff)
    total = sum(float((g_pc[n] - g_ps[n]).norm() ** 2) for n in g_ps) ** 0.5
    assert total <= 1e-5 * norm
    for layer in m_ps:
        assert m_pc[layer]["loss"] == pytest.approx(m_ps[layer]["loss"], rel=1e-5)


def test_per_class_batch_of_exactly_k_samples(cifar) -> None:
    """A batch as large as the number of classes is still read as one row per class."""
    idx = torch.randperm(len(cifar[1]), generator=torch.Generator().manual_seed(3))[:10]
    x, y = cifar[0][idx], cifar[1][idx]
    losses = []
    for per_class in (False, True):
        learner = make("fused", per_class, optimizer=functools.partial(torch.optim.SGD, lr=0.0))
        learner.train_step(x, y)
        losses.append(learner.monitor.values())
    for layer in losses[0]:
        assert losses[1][layer]["loss"] == pytest.approx(losses[0][layer]["loss"], rel=1e-5)
