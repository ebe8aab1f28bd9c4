"""Propagators: no gradient crosses a learning layer, each layer's optimizer moves only that layer,
and the non-learning propagators, the functional forms, deferred updates and fused calls behave
as documented. Networks are small MLPs on real MNIST images."""
from __future__ import annotations

import copy
from typing import Any, Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import sigprop
from sigprop import propagators as P
from sigprop.functional import propagators as FP
from sigprop_steps import train_step

LOSS = sigprop.loss.v9_input_target_max_all
WIDTH = 32


@pytest.fixture(scope="module")
def batches(mnist) -> list[tuple[Tensor, Tensor]]:
    """Four real MNIST batches of 32 images (flattened) and labels."""
    x, y = mnist[0][:128].flatten(1), mnist[1][:128]
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)]


class Parts:
    """A signal, two hidden layers and an output layer, wrapped into a ``models.Forward``."""

    def __init__(self, seed: int = 0, deferred: P.LocalLosses | None = None, lr: float = 0.05) -> None:
        torch.manual_seed(seed)
        self.input_module = nn.Sequential(nn.Linear(28 * 28, WIDTH), nn.ReLU())
        self.generator = sigprop.signals.ProjectionContextInput(nn.Linear(10, WIDTH), self.input_module, (10,), (WIDTH,))
        self.signal_module = nn.Sequential(sigprop.signals.LabelNumberToOnehot(10), self.generator)
        self.layer1 = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU())
        self.output = nn.Linear(WIDTH, 10)

        def sgd(module: nn.Module) -> torch.optim.Optimizer | None:
            return None if deferred is not None else torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9)

        self.signal = P.signals.Loss(self.signal_module, sgd(self.signal_module), LOSS, deferred=deferred)
        self.prop1 = P.Loss(self.layer1, sgd(self.layer1), LOSS, deferred=deferred)
        self.prop2 = P.Loss(self.layer2, sgd(self.layer2), LOSS, deferred=deferred)
        self.model = sigprop.models.Forward(nn.Sequential(self.prop1, self.prop2, P.Identity(self.output)), self.signal)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9)

    def learners(self) -> dict[str, nn.Module]:
        return {"signal": self.signal_module, "layer1": self.layer1, "layer2": self.layer2}

    def all_modules(self) -> dict[str, nn.Module]:
        return {**self.learners(), "output": self.output}


def snapshot(modules: dict[str, nn.Module]) -> dict[str, dict[str, Tensor]]:
    return {k: {n: p.detach().clone() for n, p in m.named_parameters()} for k, m in modules.items()}


def changed(before: dict[str, dict[str, Tensor]], modules: dict[str, nn.Module]) -> set[str]:
    """Names of the modules of which any parameter differs from the snapshot."""
    after = snapshot(modules)
    return {k for k in before if any(not torch.equal(before[k][n], after[k][n]) for n in before[k])}


def graph_leaves(t: Tensor) -> Iterator[Tensor]:
    """The leaf tensors (parameters, inputs) that ``t``'s autograd graph reaches."""
    stack, seen = [t.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):
            yield fn.variable
        stack.extend(next_fn for next_fn, _ in fn.next_functions)


def record_inputs(modules: dict[str, nn.Module]) -> dict[str, list[Tensor]]:
    """Every tensor each module receives from now on (``h`` and ``t``, or both fused)."""
    seen: dict[str, list[Tensor]] = {k: [] for k in modules}
    for name, module in modules.items():
        module.register_forward_pre_hook(lambda m, args, name=name: seen[name].append(args[0]))
    return seen


def test_no_gradient_crosses_a_loss_propagator(batches) -> None:
    parts = Parts()
    parts.model.train()
    received = record_inputs({"input": parts.input_module, "layer1": parts.layer1, "layer2": parts.layer2, "output": parts.output})
    x, y = batches[0]
    output = parts.model(x, y)

    # The output's graph reaches only the output layer's parameters.
    leaves = {id(t) for t in graph_leaves(output)}
    assert leaves == {id(p) for p in parts.output.parameters()}

    # The global backward leaves the local gradients (set by each layer's own step) untouched.
    local_grads = {n: p.grad.clone() for n, p in parts.model.named_parameters() if p.grad is not None}
    assert len(local_grads) == len([p for m in parts.learners().values() for p in m.parameters()])
    F.cross_entropy(output, y).backward()
    parts.optimizer.step()
    for n, p in parts.model.named_parameters():
        if n in local_grads:
            assert torch.equal(p.grad, local_grads[n]), n
    assert all(p.grad is not None for p in parts.output.parameters())

    # What every layer received carries no graph and got no gradient.
    assert len(received["layer1"]) == len(received["layer2"]) == 1  # h and t fused into one call
    assert received["layer1"][0].shape[0] == 2 * x.shape[0]
    for name, inputs in received.items():
        assert inputs, name
        for t in inputs:
            assert not t.requires_grad and t.grad is None, name


def test_each_layer_optimizer_moves_only_its_own_parameters(batches) -> None:
    parts = Parts()
    x, y = batches[0]
    with torch.no_grad():
        parts.model.eval()
        h0, t0 = parts.signal((x, y, y))
        h1, t1, _ = parts.prop1((h0, t0, y))
    inputs: dict[str, tuple[nn.Module, Any]] = {
        "signal": (parts.signal, (x, y, y)),
        "layer1": (parts.prop1, (h0, t0, y)),
        "layer2": (parts.prop2, (h1, t1, y)),
    }
    for name, (propagator, state) in inputs.items():
        before = snapshot(parts.all_modules())
        propagator.train()
        propagator(state)
        assert changed(before, parts.all_modules()) == {name}

    # A whole training pass: every local learner moves, the output waits for the user's optimizer.
    before = snapshot(parts.all_modules())
    parts.model.train()
    output = parts.model(x, y)
    assert changed(before, parts.all_modules()) == {"signal", "layer1", "layer2"}
    F.cross_entropy(output, y).backward()
    parts.optimizer.step()
    assert changed(before, parts.all_modules()) == {"signal", "layer1", "layer2", "output"}


def test_loss_propagator_output_and_eval_mode(batches) -> None:
    parts = Parts()
    x, y = batches[0]
    h0 = torch.randn(32, WIDTH, requires_grad=True)
    t0 = torch.randn(32, WIDTH, requires_grad=True)
    calls: list[tuple] = []

    def loss(sp_learn, h1, t1, h0_, t0_, context):
        calls.append((sp_learn, h1, t1, h0_, t0_, context))
        return LOSS(sp_learn, h1, t1, h0_, t0_, context)

    prop = P.Loss(parts.layer1, torch.optim.SGD(parts.layer1.parameters(), lr=0.1), loss)
    before = snapshot({"layer1": parts.layer1})
    expected_h1, expected_t1 = parts.layer1(h0).detach(), parts.layer1(t0).detach()
    prop.eval()
    h1, t1, context = prop((h0, t0, y))
    # Evaluation: the loss is computed (with the layer's outputs and detached inputs), no step.
    assert len(calls) == 1 and calls[0][0] is prop and calls[0][5] is not None
    torch.testing.assert_close(calls[0][3], h0.detach())
    assert not calls[0][3].requires_grad and not calls[0][4].requires_grad
    assert changed(before, {"layer1": parts.layer1}) == set()
    torch.testing.assert_close(h1, expected_h1)
    torch.testing.assert_close(t1, expected_t1)
    assert not h1.requires_grad and not t1.requires_grad
    assert torch.equal(context, y)
    prop.train()
    prop((h0, t0, y))
    assert len(calls) == 2 and changed(before, {"layer1": parts.layer1}) == {"layer1"}
    assert h0.grad is None and t0.grad is None


def test_inference_without_a_signal_skips_the_signal_path(batches) -> None:
    parts = Parts()
    x, y = batches[0]

    def forbidden(*args):
        raise AssertionError("no loss may be computed without a signal")

    for propagator in (parts.signal, parts.prop1, parts.prop2):
        propagator.loss = forbidden
    before = snapshot(parts.all_modules())
    parts.model.train()  # even in training mode: no signal, no learning
    for out in (parts.model(x), parts.model(x, None), parts.model((x, None))):
        assert out.shape == (32, 10)
    assert changed(before, parts.all_modules()) == set()

    h1, t1, context = parts.prop1((torch.ones(4, WIDTH), None, None))
    assert t1 is None and context is None
    torch.testing.assert_close(h1, parts.layer1(torch.ones(4, WIDTH)))
    out = parts.signal((x, None, None))
    assert len(out) == 2 and out[1] is None
    torch.testing.assert_close(out[0], parts.input_module(x))


def test_identity_keeps_the_graph() -> None:
    layer = nn.Linear(4, 3)
    h0 = torch.randn(5, 4, requires_grad=True)
    t0, context = torch.randn(5, 4), torch.arange(5)
    h1, t1, c1 = P.Identity(layer)((h0, t0, context))
    assert t1 is t0 and c1 is context  # the signal is passed on untouched
    torch.testing.assert_close(h1, layer(h0))
    h1.sum().backward()
    torch.testing.assert_close(h0.grad, layer.weight.sum(0).expand(5, 4))
    assert layer.weight.grad is not None
    assert P.Identity.trained_by == "global"


def test_fixed_runs_without_learning() -> None:
    layer = nn.Linear(4, 3)
    h0 = torch.randn(5, 4, requires_grad=True)
    t0 = torch.randn(5, 4, requires_grad=True)
    h1, t1, c1 = P.Fixed(layer)((h0, t0, None))
    torch.testing.assert_close(h1, layer(h0).detach())
    torch.testing.assert_close(t1, layer(t0).detach())
    assert not h1.requires_grad and not t1.requires_grad and c1 is None
    h1, t1, _ = P.Fixed(layer)((h0, None, None))
    assert t1 is None
    model = sigprop.models.Forward(nn.Sequential(P.Fixed(layer), P.Identity(nn.Linear(3, 2))), P.signals.Fixed(nn.Identity()))
    assert not any(p is layer.weight or p is layer.bias for p in model.parameters())


def test_forward_keeps_the_graph_of_h_and_t() -> None:
    h0 = torch.randn(5, 2, 3, requires_grad=True)
    t0 = torch.randn(5, 2, 3, requires_grad=True)
    h1, t1, c1 = P.Forward(nn.Flatten())((h0, t0, "ctx"))
    assert h1.shape == t1.shape == (5, 6) and c1 == "ctx"
    (h1.sum() + 2 * t1.sum()).backward()
    torch.testing.assert_close(h0.grad, torch.ones_like(h0))
    torch.testing.assert_close(t0.grad, 2 * torch.ones_like(t0))
    h1, t1, _ = P.Forward(nn.Flatten())((h0, None, None))
    assert t1 is None and h1.requires_grad


def test_functional_propagators() -> None:
    h0 = torch.tensor([[1.0, -2.0]], requires_grad=True)
    t0 = torch.tensor([[3.0, 4.0]], requires_grad=True)

    def double(x: Tensor) -> Tensor:
        return 2 * x

    h1, t1, c = FP.identity((h0, t0, 7), double)
    assert torch.equal(h1, torch.tensor([[2.0, -4.0]])) and h1.requires_grad and t1 is t0 and c == 7
    h1, t1, c = FP.fixed((h0, t0, 7), double)
    assert torch.equal(t1, torch.tensor([[6.0, 8.0]])) and not h1.requires_grad and not t1.requires_grad
    assert FP.fixed((h0, None, 7), double)[1] is None
    h1, t1, c = FP.forward((h0, t0, 7), double)
    assert torch.equal(t1, torch.tensor([[6.0, 8.0]])) and h1.requires_grad and t1.requires_grad
    assert FP.forward((h0, None, 7), double)[1] is None
    assert (P.functional.identity, P.functional.fixed, P.functional.forward) == (FP.identity, FP.fixed, FP.forward)


def test_signal_propagators_return_h1_t1(batches) -> None:
    x, y = batches[0]
    parts = Parts()
    before = snapshot({"signal": parts.signal_module})
    with torch.no_grad():  # the generator's outputs before the step
        expected_h1 = parts.input_module(x)
        expected_t1 = parts.generator.module_context(F.one_hot(y, 10).float())
    parts.signal.train()
    out = parts.signal((x, y, y))
    assert isinstance(out, tuple) and len(out) == 2
    h1, t1 = out
    assert h1.shape == t1.shape == (32, WIDTH) and not h1.requires_grad and not t1.requires_grad
    torch.testing.assert_close(h1, expected_h1)
    torch.testing.assert_close(t1, expected_t1)
    assert changed(before, {"signal": parts.signal_module}) == {"signal"}  # its own modules learned

    parts = Parts()
    fixed = P.signals.Fixed(parts.signal_module)
    before = snapshot({"signal": parts.signal_module})
    h1, t1 = fixed((x, y, y))
    torch.testing.assert_close(h1, parts.input_module(x))
    torch.testing.assert_close(t1, parts.generator.module_context(F.one_hot(y, 10).float()))
    assert not h1.requires_grad and not t1.requires_grad
    assert changed(before, {"signal": parts.signal_module}) == set()
    assert fixed((x, None, None))[1] is None


def test_deferred_local_losses_match_immediate_steps(batches) -> None:
    """``LocalLosses``: one backward and one step over all layers equals the per-layer steps."""
    immediate = Parts(seed=3)
    deferred = P.LocalLosses()
    fused = Parts(seed=3, deferred=deferred)
    local_optimizer = torch.optim.SGD(P.local_parameters(fused.model), lr=0.05, momentum=0.9)
    assert {id(p) for p in P.local_parameters(fused.model)} == {
        id(p) for m in fused.learners().values() for p in m.parameters()
    }
    immediate.model.train()
    fused.model.train()
    for x, y in batches:
        out = immediate.model(x, y)
        immediate.optimizer.zero_grad()
        F.cross_entropy(out, y).backward()
        immediate.optimizer.step()

        before = snapshot(fused.all_modules())
        out = fused.model(x, y)
        assert len(deferred) == 3  # the signal and two layers, nothing stepped yet
        assert changed(before, fused.all_modules()) == set()
        total = deferred.pop_sum()
        assert total is not None and len(deferred) == 0
        local_optimizer.zero_grad()
        total.backward()
        local_optimizer.step()
        fused.optimizer.zero_grad()
        F.cross_entropy(out, y).backward()
        fused.optimizer.step()
    assert deferred.pop_sum() is None
    a, b = snapshot(immediate.all_modules()), snapshot(fused.all_modules())
    assert changed(snapshot(Parts(seed=3).all_modules()), fused.all_modules()) == {"signal", "layer1", "layer2", "output"}
    for name in a:
        for p in a[name]:
            torch.testing.assert_close(b[name][p], a[name][p], rtol=1e-5, atol=1e-6, msg=f"{name}.{p}")


def fine_grained(deferred: P.LocalLosses | None) -> tuple[nn.Module, list[nn.Module]]:
    """A CNN wrapped one operation at a time, as the reference's ``--sp-fine`` blocks: convolution
    and norm learn, the in-place activations are ``Fixed``; the last block is pre-activation (its
    in-place activation comes first inside the learning layer). Returns the model and its learners."""
    torch.manual_seed(4)

    def sgd(module: nn.Module) -> torch.optim.Optimizer | None:
        return None if deferred is not None else torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)

    manager = sigprop.managers.Preset(sigprop.models.Forward, P.Loss, P.signals.Loss, sgd)
    manager.config_signal(loss=LOSS, deferred=deferred)
    manager.config_propagator(loss=LOSS, deferred=deferred)
    generator = sigprop.signals.ProjectionContextInput(
        nn.Linear(10, 4 * 14 * 14), nn.Conv2d(1, 4, 3, 2, 1), (10,), (4, 14, 14)
    )
    manager.set_signal(nn.Sequential(sigprop.signals.LabelNumberToOnehot(10), generator))
    learners = [nn.Conv2d(4, 8, 3, 1, 1), nn.GroupNorm(2, 8), nn.Sequential(nn.LeakyReLU(0.1, inplace=True), nn.Conv2d(8, 8, 3, 2, 1))]
    network = nn.Sequential(
        manager.add_propagator(learners[0]),
        manager.add_propagator(learners[1]),
        manager.add_propagator(nn.ReLU(inplace=True), P.Fixed),
        manager.add_propagator(learners[2]),
        manager.add_propagator(nn.Hardtanh(-2, 2, inplace=True), P.Fixed),
        manager.add_propagator(nn.Flatten(), P.Forward),
        manager.add_propagator(nn.Linear(8 * 7 * 7, 10), P.Identity),
    )
    return manager.set_model(network), [generator, *learners]


def test_deferred_losses_with_in_place_activations(batches) -> None:
    """One backward for all layers works with in-place activations between and inside the layers,
    and makes the per-layer steps' update."""
    images = [(x.view(-1, 1, 28, 28), y) for x, y in batches]
    deferred = P.LocalLosses()
    results = []
    for collect in (None, deferred):
        model, learners = fine_grained(collect)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        local = torch.optim.SGD(P.local_parameters(model), lr=0.05, momentum=0.9) if collect is not None else None
        model.train()
        for x, y in images:
            train_step(model, x, y, y, optimizer, collect, local)
        results.append({n: p.detach().clone() for n, p in model.named_parameters()})
    for n in results[0]:
        torch.testing.assert_close(results[1][n], results[0][n], rtol=1e-5, atol=1e-6, msg=n)
    assert P.writes_input(nn.ReLU(inplace=True)) and P.writes_input(learners[3])
    assert not P.writes_input(nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(inplace=True)))


def conv_layer(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.ReLU())


@pytest.mark.parametrize("loss", [LOSS, sigprop.loss.v14_input_target_max_rand])
def test_fuse_ht_gives_the_same_result_as_separate_calls(mnist, loss) -> None:
    h0 = mnist[0][:16]  # real images, 1x28x28
    t0 = mnist[0][16:32]  # another batch as the signal
    context = mnist[1][:16]
    results = []
    for fuse in (True, False):
        layer = conv_layer(seed=5)
        prop = P.Loss(layer, torch.optim.Adam(layer.parameters(), lr=1e-2), loss, fuse_ht=fuse)
        calls = record_inputs({"layer": layer})
        outs = [prop((h0, t0, context)) for _ in range(3)]
        assert len(calls["layer"]) == (3 if fuse else 6)
        results.append((outs, {n: p.detach().clone() for n, p in layer.named_parameters()}))
    (fused_outs, fused_params), (separate_outs, separate_params) = results
    for (h_f, t_f, _), (h_s, t_s, _) in zip(fused_outs, separate_outs):
        torch.testing.assert_close(h_f, h_s, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(t_f, t_s, rtol=1e-4, atol=1e-4)
    for n in fused_params:
        torch.testing.assert_close(fused_params[n], separate_params[n], rtol=1e-4, atol=1e-4)


def test_fuse_ht_default_follows_batch_statistics(mnist) -> None:
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    normed = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    assert P.Loss(plain, None, LOSS).fuse_ht is True
    assert P.Loss(normed, None, LOSS).fuse_ht is False
    assert P.Loss(normed, None, LOSS, fuse_ht=True).fuse_ht is True
    assert P.Loss(plain, None, LOSS, fuse_ht=False).fuse_ht is False
    assert P.uses_batch_statistics(normed) and not P.uses_batch_statistics(plain)
    # Why: batch norm in training mode would mix the statistics of h and t.
    h0, t0 = mnist[0][:8], mnist[0][8:16]
    torch.manual_seed(0)
    normed.train()
    fused = P.Loss(copy.deepcopy(normed), None, LOSS, fuse_ht=True)((h0, t0, None))
    separate = P.Loss(copy.deepcopy(normed), None, LOSS)((h0, t0, None))
    torch.testing.assert_close(separate[0], normed(h0).detach())
    assert not torch.allclose(fused[0], separate[0], atol=1e-3)


class Doubled(nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        return 2 * super().forward(x)


class Block(nn.Sequential):
    """A subclass of a listed container that keeps its forward."""


def test_fusable_is_an_allow_list_checked_recursively() -> None:
    exact = [
        nn.Sequential(nn.Conv2d(1, 4, 3), nn.InstanceNorm2d(4, affine=True), nn.LeakyReLU(0.01, inplace=True)),
        nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.LayerNorm(4), nn.ReLU(), nn.Dropout(0.0)),
        nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.GELU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1)),
        Block(nn.Linear(4, 4), nn.Softmax(dim=1)),
        nn.Identity(),
    ]
    inexact = [
        nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)),  # batch statistics
        nn.InstanceNorm2d(4, track_running_stats=True),  # running statistics updated per call
        nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.2)),  # one mask for h and t instead of two
        nn.TransformerEncoderLayer(8, 2),  # dim 0 is the sequence
        nn.LSTM(4, 4),
        nn.utils.spectral_norm(nn.Linear(4, 4)),  # a power iteration per call (forward pre-hook)
        nn.utils.parametrizations.spectral_norm(nn.Linear(4, 4)),  # the same, as a parametrization
        nn.Sequential(nn.Linear(4, 4), Doubled(4, 4)),  # a listed type with a forward of its own
        nn.Flatten(0),
        nn.Softmax(),  # dim=None: dim 0 for 3-D inputs
    ]
    assert all(P.fusable(m) for m in exact)
    assert not any(P.fusable(m) for m in inexact)
    assert all(P.Loss(m, None, LOSS).fuse_ht is P.fusable(m) for m in exact + inexact)
    assert nn.Linear in P.FUSABLE_TYPES and nn.BatchNorm2d not in P.FUSABLE_TYPES


def sequence_first(images: Tensor) -> Tensor:
    """Images ``(B, 1, 28, 28)`` as sequences of their 28 rows, sequence first: ``(28, B, 28)``."""
    return images.squeeze(1).permute(1, 0, 2).contiguous()


def test_a_sequence_first_transformer_layer_is_not_fused(mnist) -> None:
    """Its dim 0 is the sequence: one call on ``cat([h, t])`` would attend across h and t."""
    h0, t0, context = sequence_first(mnist[0][:8]), sequence_first(mnist[0][8:16]), mnist[1][:8]
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(28, 4, dim_feedforward=32, dropout=0.0, batch_first=False)
    with torch.no_grad():
        expected = layer(h0), layer(t0)  # the reference: two calls
    prop = P.Loss(layer, None, LOSS)
    assert prop.fuse_ht is False
    h1, t1, _ = prop((h0, t0, context))
    torch.testing.assert_close(h1, expected[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(t1, expected[1], rtol=1e-6, atol=1e-6)
    h1_fused, t1_fused, _ = P.Loss(layer, None, LOSS, fuse_ht=True)((h0, t0, context))
    assert float((h1_fused - expected[0]).abs().max()) > 0.1  # why it is not the default


@pytest.mark.parametrize("norm", ["hook", "parametrization"])
def test_spectral_norm_runs_its_power_iterations_as_the_reference(mnist, norm: str) -> None:
    """Every call of a spectrally normalised layer in training mode runs one power iteration: the
    reference runs two per step (``h``, then ``t``), and a fused or recomputed call would not."""
    h0, t0, context = mnist[0][:16].flatten(1), mnist[0][16:32].flatten(1), mnist[1][:16]
    spectral_norm = nn.utils.spectral_norm if norm == "hook" else nn.utils.parametrizations.spectral_norm

    def layer() -> nn.Module:
        torch.manual_seed(1)
        return spectral_norm(nn.Linear(28 * 28, WIDTH))

    reference = layer()
    with torch.no_grad():
        expected = reference(h0), reference(t0)
    prop = P.Loss(layer(), None, LOSS)
    h1, t1, _ = prop((h0, t0, context))
    torch.testing.assert_close(h1, expected[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(t1, expected[1], rtol=1e-6, atol=1e-6)
    _, t1_fused, _ = P.Loss(layer(), None, LOSS, fuse_ht=True)((h0, t0, context))
    assert float((t1_fused - expected[1]).abs().max()) > 1e-3
    # Fixed: even when t's rows follow h's in memory (as after a fused layer), two calls.
    joined = torch.cat([h0, t0])
    h1, t1, _ = P.Fixed(layer())((joined[:16], joined[16:], context))
    torch.testing.assert_close(t1, expected[1], rtol=1e-6, atol=1e-6)
    # The low-memory update would rerun the layer: it is not used here, so it is the plain step.
    steps = []
    for chunk in (None, 4):
        module = layer()
        P.Loss(module, torch.optim.SGD(module.parameters(), lr=0.1), LOSS, recompute_chunk=chunk)((h0, t0, context))
        steps.append({n: p.detach().clone() for n, p in module.named_parameters()})
    for n in steps[0]:
        torch.testing.assert_close(steps[1][n], steps[0][n], rtol=0, atol=0)


def test_loss_propagator_around_a_frozen_signal_trains_without_error() -> None:
    """A fully frozen signal wrapped in a learning propagator measures its loss and updates nothing."""
    torch.manual_seed(0)
    generator = sigprop.signals.ProjectionContextInput(
        nn.Linear(3, 8, bias=False), nn.Linear(5, 8), (3,), (8,), fixed=True
    )
    signal = sigprop.propagators.signals.Loss(
        nn.Sequential(sigprop.signals.LabelNumberToOnehot(3), generator),
        torch.optim.SGD(generator.parameters(), lr=0.1),
        sigprop.loss.v9_input_target_max_all,
    )
    before = [p.clone() for p in generator.parameters()]
    h1, t1 = signal((torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([0, 1, 2, 0, 1, 2])))
    assert h1.shape == (6, 8) and t1.shape == (6, 8)
    assert all(torch.equal(a, b) for a, b in zip(before, generator.parameters()))
