"""SigProp learns on real MNIST, each run beside backpropagation on the very same network.

Run with ``pytest -s`` to see the accuracies. The backprop network is built from the same
modules with the same initial weights and trained end to end by cross-entropy.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import sigprop
from test_readme_quickstart import quickstart_blocks, run_blocks, run_quickstart, user_names


def accuracy(model: Callable[[torch.Tensor], torch.Tensor], loader: Iterable) -> float:
    """Test accuracy of ``model(data)`` (inference: no signal) in evaluation mode."""
    model.eval()  # type: ignore[attr-defined]
    correct = total = 0
    with torch.no_grad():
        for data, target in loader:
            correct += (model(data).argmax(1) == target).sum().item()
            total += target.numel()
    return correct / total


def train_backprop_epoch(net: nn.Module, optimizer: torch.optim.Optimizer, loader: Iterable) -> None:
    net.train()
    for data, target in loader:
        loss = F.cross_entropy(net(data), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_quickstart_cnn_mnist_one_epoch(mnist) -> None:
    """(a) The README's CNN, one epoch on the first 6,000 MNIST images, tested on all 10,000."""
    x_train, y_train, x_test, y_test = mnist
    names = user_names(x_train[:6000], y_train[:6000], x_test, y_test, seed=0)

    start = time.perf_counter()
    sp = run_quickstart(names, seed=0)
    sp_time = time.perf_counter() - start

    # Backprop: the same modules, rebuilt from the same seed, as one plain network.
    torch.manual_seed(0)
    blocks = quickstart_blocks()
    built = run_blocks([blocks["setup"], blocks["manager"]], dict(user_names(x_train[:6000], y_train[:6000], x_test, y_test, seed=0)))
    model = built["model"]
    net = nn.Sequential(model.signal.module[1].module_input, *(propagator.module for propagator in model.model))
    start = time.perf_counter()
    train_backprop_epoch(net, torch.optim.Adam(net.parameters(), lr=1e-3), built["train_loader"])
    bp_accuracy = accuracy(net, built["test_loader"])
    bp_time = time.perf_counter() - start

    print(
        f"\nquick-start CNN, MNIST 6,000 images, 1 epoch: SigProp {sp['accuracy']:.4f} ({sp_time:.0f} s), "
        f"backprop {bp_accuracy:.4f} ({bp_time:.0f} s)"
    )
    assert sp["accuracy"] >= 0.90
    assert bp_accuracy >= 0.90


WIDTH = 1024


def build_mlp(seed: int) -> tuple[nn.Module, nn.Module, sigprop.monitors.Group]:
    """A 784-1024-1024-1024-10 MLP: ``(SigProp model, the same modules as a plain network, monitor)``.

    The first hidden layer is the signal's input module; the label is projected by a learned
    linear map to the first hidden width (``ProjectionContextInput``).
    """
    torch.manual_seed(seed)

    def build_optimizer(module: nn.Module) -> torch.optim.Optimizer | None:
        params = [p for p in module.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=1e-3) if params else None

    def hidden(in_features: int) -> nn.Module:
        return nn.Sequential(nn.Linear(in_features, WIDTH, bias=False), nn.BatchNorm1d(WIDTH), nn.ReLU())

    monitor = sigprop.monitors.Group()
    manager = sigprop.managers.Preset(
        sigprop.models.Forward,
        sigprop.propagators.Loss,
        sigprop.propagators.signals.Loss,
        build_optimizer,
        sigprop.monitors.loss.LabelMetrics,
        monitor,
    )
    manager.config_signal(loss=sigprop.loss.v9_input_target_max_all)
    manager.config_propagator(loss=sigprop.loss.v9_input_target_max_all)
    first = nn.Sequential(nn.Flatten(), hidden(28 * 28))
    manager.set_signal(
        nn.Sequential(
            sigprop.signals.LabelNumberToOnehot(10),
            sigprop.signals.ProjectionContextInput(
                nn.Sequential(nn.Linear(10, WIDTH, bias=False), nn.LayerNorm(WIDTH), nn.ReLU()), first, (10,), (WIDTH,)
            ),
        )
    )
    second, third, output = hidden(WIDTH), hidden(WIDTH), nn.Linear(WIDTH, 10)
    model = manager.set_model(
        nn.Sequential(
            manager.add_propagator(second),
            manager.add_propagator(third),
            manager.add_propagator(output, sigprop.propagators.Identity),
        )
    )
    return model, nn.Sequential(first, second, third, output), monitor


def test_mlp_projection_signal_mnist(mnist) -> None:
    """(b) A 3-hidden-layer MLP (1024 units each) on 10,000 MNIST images reaches 85% within 10 epochs.

    Trains at least 3 epochs, then stops at the first epoch at 85% or more; backprop gets as many epochs.
    """
    x_train, y_train, x_test, y_test = mnist
    train = TensorDataset(x_train[:10000], y_train[:10000])
    test_loader = DataLoader(TensorDataset(x_test, y_test), batch_size=1000)

    model, _, monitor = build_mlp(seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    sp_curve: list[float] = []
    for epoch in range(10):
        model.train()
        monitor.reset()
        for data, target in loader:
            loss = F.cross_entropy(model(data, target), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        sp_curve.append(accuracy(model, test_loader))
        if epoch + 1 >= 3 and sp_curve[-1] >= 0.85:
            break
    local = {name: round(v["acc"], 3) for name, v in monitor.values().items()}

    _, net, _ = build_mlp(seed=0)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loader = DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    bp_curve: list[float] = []
    for _ in sp_curve:
        train_backprop_epoch(net, optimizer, loader)
        bp_curve.append(accuracy(net, test_loader))

    print(
        f"\nMLP 3x{WIDTH}, MNIST 10,000 images, {len(sp_curve)} epochs: SigProp {sp_curve[-1]:.4f} "
        f"(per epoch {[round(a, 4) for a in sp_curve]}; last epoch's local accuracies {local}), "
        f"backprop {bp_curve[-1]:.4f} (per epoch {[round(a, 4) for a in bp_curve]})"
    )
    assert sp_curve[-1] >= 0.85
    assert bp_curve[-1] >= 0.90
