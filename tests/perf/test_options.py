"""bf16 autocast, channels-last and the low-memory mode run and learn on real MNIST."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from sigprop import loss as L
from sigprop import propagators
from sigprop.engine import TrainStep, assemble
from sigprop.engine.signals import projection_context_input
from sigprop.nets import vgg


@pytest.fixture(scope="module")
def small_mnist(mnist):
    """MNIST average-pooled to 14x14 (the same code paths at a quarter of the cost)."""
    x_train, y_train, x_test, y_test = mnist
    return F.avg_pool2d(x_train[:6000], 2), y_train[:6000], F.avg_pool2d(x_test[:1000], 2), y_test[:1000]


def network():
    torch.manual_seed(0)
    return vgg("vgg6", (1, 14, 14), 10, feat_mult=0.0625, num_hidden=64, norm="instance", nonlin="leakyrelu")


def train_and_test(learner, data, steps: int) -> float:
    x, y, x_test, y_test = data
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (64,), generator=g)
        loss, logits = learner.train_step(x[idx], y[idx])
        assert torch.isfinite(loss) and logits.dtype == torch.float32
    learner.eval()
    _, logits = learner.eval_step(x_test, y_test)
    learner.train()
    return float((logits.argmax(1) == y_test).float().mean())


@pytest.mark.parametrize(
    "mode,precision,channels_last",
    [("fused", "bf16", True), ("fused", "fp32", True), pytest.param("lowmem", "bf16", False, marks=pytest.mark.slow)],
)
def test_sigprop_options_learn(small_mnist, mode: str, precision: str, channels_last: bool) -> None:
    assembly = assemble(
        network(), functools.partial(projection_context_input, per_class=True), propagators.Loss,
        L.v15_input_target_topk(6), functools.partial(torch.optim.Adam, lr=2e-3), mode=mode,
    )
    learner = TrainStep(assembly, precision=precision, channels_last=channels_last)
    acc = train_and_test(learner, small_mnist, 100)
    assert acc > 0.2, acc  # chance is 0.1; this small SigProp net is at 0.25-0.45 after 100 steps
    params = list(learner.model.state_dict().values())
    assert all(p.dtype == torch.float32 for p in params if p.is_floating_point())  # autocast keeps fp32 weights
    conv = [p for p in params if p.dim() == 4]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert conv and all(p.is_contiguous(memory_format=fmt) for p in conv)
    values = learner.monitor.values()
    assert all(v["acc"] == v["acc"] for v in values.values())  # the monitors saw every layer


def test_backprop_bf16_channels_last_learns(small_mnist) -> None:
    """propagator=backprop: every layer in propagators.Identity, one optimizer, trained end to end."""
    assembly = assemble(
        network(), projection_context_input, propagators.Identity, L.v15_input_target_topk(6),
        functools.partial(torch.optim.Adam, lr=2e-3),
    )
    assert len(assembly.optimizers) == 1 and not list(propagators.local_parameters(assembly.model))
    learner = TrainStep(assembly, precision="bf16", channels_last=True)
    assert train_and_test(learner, small_mnist, 40) > 0.5


def test_unknown_precision_is_rejected() -> None:
    assembly = assemble(network(), projection_context_input, propagators.Identity, L.v15_input_target_topk(6), torch.optim.Adam)
    with pytest.raises(ValueError, match="precision"):
        TrainStep(assembly, precision="fp8")


def test_signal_builds_on_a_network_already_on_its_device() -> None:
    """The projection signal measures the stem's output shape on the stem's own device (here ``meta``)."""
    net = network()
    net.stem.to("meta")
    assert net.stem_shape() == (8, 14, 14)


def test_compile_covers_every_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each compiled layer gets its own compiled versions: dynamo's per-function bound is raised to fit them."""
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append((self, kw)))
    # The bound's name: recompile_limit (torch >= 2.6), cache_size_limit before.
    limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    monkeypatch.setattr(torch._dynamo.config, limit, 8)
    assembly = assemble(network(), projection_context_input, propagators.Loss, L.v15_input_target_topk(6), torch.optim.Adam)
    learner = TrainStep(assembly, compile=True)
    layers = [m.module for m in learner.model.modules() if isinstance(m, (propagators.Learn, propagators.Identity))]
    assert len(compiled) == len(layers) > 2 and all(kw == {"dynamic": False} for _, kw in compiled)
    assert getattr(torch._dynamo.config, limit) >= 4 * len(layers)
