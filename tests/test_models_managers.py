"""Models (input forms, global parameters, loop-back), managers (wrapping, dropped arguments, call
order), monitors, signal formatters and generators, and ``utils.shape_numel``."""
from __future__ import annotations

import contextlib

import math
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import sigprop
from sigprop import propagators as P
from sigprop import signals as S
from sigprop.functional import signals as FS
from sigprop.utils import shape_numel

LOSS = sigprop.loss.v9_input_target_max_all
WIDTH = 64


def build_optimizer(module: nn.Module, lr: float = 1e-3) -> torch.optim.Optimizer | None:
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=lr) if params else None


@pytest.fixture(scope="module")
def digits(mnist) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """3,000 real MNIST training images and 1,000 test images, flattened."""
    x_train, y_train, x_test, y_test = mnist
    return x_train[:3000].flatten(1), y_train[:3000], x_test[:1000].flatten(1), y_test[:1000]


def snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def moved(before: dict[str, Tensor], module: nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if not torch.equal(before[n], p)}


def build_mlp(
    seed: int = 0, monitor: sigprop.monitors.Group | None = None, builder: Callable = build_optimizer
) -> tuple[nn.Module, sigprop.managers.Preset]:
    """signal (784 -> WIDTH) -> hidden (WIDTH -> WIDTH) -> output (WIDTH -> 10), through a ``Preset``."""
    torch.manual_seed(seed)
    manager = sigprop.managers.Preset(
        sigprop.models.Forward,
        P.Loss,
        P.signals.Loss,
        builder,
        sigprop.monitors.loss.LabelMetrics if monitor is not None else None,
        monitor,
    )
    manager.config_signal(loss=LOSS)
    manager.config_propagator(loss=LOSS)
    manager.set_signal(
        nn.Sequential(
            S.LabelNumberToOnehot(10),
            S.ProjectionContextInput(
                nn.Linear(10, WIDTH), nn.Sequential(nn.Linear(784, WIDTH), nn.ReLU()), (10,), (WIDTH,)
            ),
        )
    )
    network = nn.Sequential(
        manager.add_propagator(nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU())),
        manager.add_propagator(nn.Linear(WIDTH, 10), P.Identity),
    )
    return manager.set_model(network), manager


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


# --- models ----------------------------------------------------------------------------------


def test_model_input_forms(digits) -> None:
    x, y = digits[0][:32], digits[1][:32]
    monitor = sigprop.monitors.Group()
    model, _ = build_mlp(monitor=monitor)
    model.eval()
    with torch.no_grad():
        outputs = [model((x, y)), model(x, y), model([x, y]), model(x), model(x, None), model((x, None))]
    for out in outputs:
        assert out.shape == (32, 10)
        torch.testing.assert_close(out, outputs[0])  # evaluation: the signal does not change h
    # Only the three calls with labels measured the local losses (signal and one hidden layer).
    assert set(monitor.values()) == {"signal", "layer01"}
    assert all(m.count == 3 * 32 for m in monitor.monitors)
    with pytest.raises(ValueError, match="a model takes"):
        model((x, y, y))


def test_training_call_learns_and_inference_call_does_not(digits) -> None:
    x, y = digits[0][:32], digits[1][:32]
    model, _ = build_mlp()
    model.train()
    before = snapshot(model)
    model(x)
    model(x, None)
    assert moved(before, model) == set()
    model(x, y)
    assert {n.split(".")[0] for n in moved(before, model)} == {"signal", "model"}
    assert not any(n.startswith("model.1.") for n in moved(before, model)), "the output waits for the user"


def test_a_training_call_with_labels_under_no_grad_is_refused(digits) -> None:
    """It could not update anything: a clear error instead of a silent step without learning."""
    x, y = digits[0][:32], digits[1][:32]
    model, _ = build_mlp()
    model.train()
    before = snapshot(model)
    for context in (torch.no_grad, torch.inference_mode):
        with context(), pytest.raises(RuntimeError, match=r"training mode and got labels under torch.no_grad"):
            model(x, y)
    assert moved(before, model) == set()
    with torch.no_grad():
        assert model(x).shape == (32, 10)  # inference without labels is fine in either mode
        model.eval()
        assert model(x, y).shape == (32, 10)  # so is measuring the local losses in evaluation mode
    # The low-memory path of propagators.Loss refuses it too.
    hidden = model.model[0]
    hidden.train()
    hidden.recompute_chunk = 8
    with torch.no_grad(), pytest.raises(RuntimeError, match="torch.no_grad"):
        hidden((torch.zeros(4, WIDTH), torch.zeros(4, WIDTH), y[:4]))


class Scale(nn.Module):
    """A layer of the network outside any propagator: a learned scale of ``h``, graph kept."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, input: tuple[Tensor, Tensor | None, Tensor | None]):
        h, t, context = input
        return h * self.scale, t, context


def test_model_parameters_are_the_identity_wrapped_ones_as_in_the_reference() -> None:
    torch.manual_seed(0)
    hidden, frozen, out1, out2 = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 3)
    unwrapped = Scale()
    signal_module = S.ProjectionContext(nn.Linear(3, 8), (3,), (8,))
    out2.bias.requires_grad_(False)  # a frozen parameter of an output layer
    model = sigprop.models.Forward(
        nn.Sequential(
            P.Loss(hidden, build_optimizer(hidden), LOSS),
            P.Fixed(frozen),
            P.Identity(nn.Sequential(out1, nn.ReLU())),
            P.Forward(nn.Identity()),
            unwrapped,
            P.Identity(out2),
        ),
        P.signals.Loss(signal_module, build_optimizer(signal_module), LOSS),
    )
    params = model.parameters()
    expected = [out1.weight, out1.bias, out2.weight, out2.bias]
    assert isinstance(params, list) and len(params) == len(expected)
    assert all(a is b for a, b in zip(params, expected))
    assert model.parameters(recurse=False) == []
    # requires_grad_ goes through parameters(): it can freeze and unfreeze the output layers.
    model.requires_grad_(False)
    assert not any(p.requires_grad for p in expected)
    model.requires_grad_(True)
    assert all(p.requires_grad for p in expected)
    assert all(p.requires_grad for p in hidden.parameters())  # trained by its own propagator
    # The explicit helpers: everything the user's optimizer must train (unwrapped layers too), and the rest.
    out2.bias.requires_grad_(False)
    assert {id(p) for p in P.global_parameters(model)} == {
        id(p) for p in [out1.weight, out1.bias, out2.weight, *unwrapped.parameters()]
    }
    assert {id(p) for p in P.local_parameters(model.model, model.signal)} == {
        id(p) for p in [*hidden.parameters(), *signal_module.parameters()]
    }


def one_hot_error(output: Tensor, context: Tensor) -> Tensor:
    """``softmax(output) - one_hot(label)``: the loop-back models' error signal."""
    labels = context.argmax(1) if context.dim() > 1 else context
    return F.softmax(output, 1) - F.one_hot(labels, output.shape[1]).float()


def build_loop_back(model_cls: type, seed: int, monitor: sigprop.monitors.Group) -> nn.Module:
    """The MLP of ``build_mlp`` whose signal projects a 10-vector (the label or the error)."""
    torch.manual_seed(seed)
    manager = sigprop.managers.Preset(
        model_cls, P.Loss, P.signals.Loss, build_optimizer, sigprop.monitors.loss.LabelMetrics, monitor
    )
    manager.config_signal(loss=LOSS)
    manager.config_propagator(loss=LOSS)
    manager.config_model(error=one_hot_error)
    manager.set_signal(
        S.ProjectionContextInput(nn.Linear(10, WIDTH), nn.Sequential(nn.Linear(784, WIDTH), nn.ReLU()), (10,), (WIDTH,))
    )
    network = nn.Sequential(
        manager.add_propagator(nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU())),
        manager.add_propagator(nn.Linear(WIDTH, 10), P.Identity),
    )
    return manager.set_model(network)


@pytest.mark.parametrize("model_cls", [sigprop.models.LoopBack, sigprop.models.ForwardLoopBack])
def test_loop_back_models_run_and_learn(digits, model_cls: type) -> None:
    x, y, x_test, y_test = digits
    onehot = F.one_hot(y, 10).float()  # the signal projects 10-vectors: labels one-hot, errors as they are
    monitor = sigprop.monitors.Group()
    model = build_loop_back(model_cls, seed=0, monitor=monitor)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = snapshot(model)
    start_accuracy = accuracy(model, x_test, y_test)
    local_accuracy = []
    for epoch in range(2):
        model.train()
        monitor.reset()
        for i in range(0, len(x), 64):
            output = model(x[i : i + 64], onehot[i : i + 64])
            loss = F.cross_entropy(output, y[i : i + 64])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        local_accuracy.append(monitor.values()["layer01"]["acc"])
    final_accuracy = accuracy(model, x_test, y_test)
    print(f"{model_cls.__name__}: test accuracy {start_accuracy:.3f} -> {final_accuracy:.3f}, hidden layer {local_accuracy}")
    assert all(n in moved(before, model) for n in before), "every layer learned"
    assert final_accuracy >= 0.7  # chance: 0.1
    # The hidden layer learns from the signal: its own outputs separate the classes better each epoch.
    assert local_accuracy[-1] > local_accuracy[0] and local_accuracy[-1] >= 0.3
    out = model(x_test[:8])  # inference: one pass, no signal
    assert out.shape == (8, 10)


# --- per-class signal: a setting, never read from the shapes ---------------------------------


def build_projection_mlp(
    per_class: bool, monitor: sigprop.monitors.Group, seed: int = 0, loss=LOSS, dtype: torch.dtype = torch.float32,
    rows_per_class: bool | None = None,
) -> nn.Module:
    """``build_mlp`` with a projection signal of one row per sample or (``per_class``) one per class.

    Both have the same weights; the per-class one says so through the manager's settings.
    ``rows_per_class``: the signal's form when it differs from what the settings say.
    """
    torch.manual_seed(seed)
    manager = sigprop.managers.Preset(
        sigprop.models.Forward, P.Loss, P.signals.Loss, build_optimizer, sigprop.monitors.loss.LabelMetrics, monitor
    )
    manager.config_signal(loss=loss, per_class_signal=per_class)
    manager.config_propagator(loss=loss, per_class_signal=per_class)
    # The one-hot formatter gives float32 rows: a float64 model takes its labels one-hot already.
    formatters = [] if dtype == torch.float64 else [S.LabelNumberToOnehot(10)]
    formatters += [S.DistinctBatchLabelsOnehot()] if (per_class if rows_per_class is None else rows_per_class) else []
    generator = S.ProjectionContextInput(
        nn.Linear(10, WIDTH), nn.Sequential(nn.Linear(784, WIDTH), nn.ReLU()), (10,), (WIDTH,)
    )
    manager.set_signal(nn.Sequential(*formatters, generator))
    network = nn.Sequential(
        manager.add_propagator(nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU())),
        manager.add_propagator(nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU())),
        manager.add_propagator(nn.Linear(WIDTH, 10), P.Identity),
    )
    return manager.set_model(network).to(dtype)


def local_losses(
    model: nn.Module, monitor: sigprop.monitors.Group, x: Tensor, y: Tensor, precision: str = "fp32"
) -> dict[str, float]:
    model.eval()  # the losses only, no update
    monitor.reset()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        model(x, y)
    return {name: v["loss"] for name, v in monitor.values().items()}


def test_per_class_signal_setting_reaches_every_propagator() -> None:
    assert P.Loss(nn.Linear(4, 4), None, LOSS).per_class_signal is False  # the reference's form
    assert P.signals.Loss(nn.Identity(), None, LOSS).per_class_signal is False
    model = build_projection_mlp(True, sigprop.monitors.Group())
    assert model.signal.per_class_signal is True and model.model[0].per_class_signal is True


# Per-class and per-sample signals give the same losses up to rounding: the per-sample one computes
# each class's rows once per sample (kernels may round them apart), the per-class one once. Largest
# relative difference measured over these cases with one and two threads and with the AVX2 kernels of
# ATen, MKL and oneDNN (ATEN_CPU_CAPABILITY, MKL_CBWR, ONEDNN_MAX_CPU_ISA) on an AVX-512 CPU: float64
# 3e-16, float32 1.1e-7, bf16 0. Allowed: 1e-13, 1e-5, and for bf16 1e-2, since another CPU's bf16
# kernel may round an entry of a per-sample row one bf16 ulp (2**-8) away from the per-class row.
PRECISIONS = {"float64": (torch.float64, "fp32", 1e-13), "float32": (torch.float32, "fp32", 1e-5), "bf16": (torch.float32, "bf16", 1e-2)}


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("loss", ["v9", "v14", "v15"])
@pytest.mark.parametrize("batch", [1, 7, 10, 16, 64])
def test_per_class_signal_gives_the_per_sample_losses_whatever_the_batch_size(digits, batch: int, loss: str, precision: str) -> None:
    """With 10 classes, a batch of 10 (as many samples as classes) is read as the setting says; in
    every precision the two signals give the same targets, so the same losses."""
    x, y = digits[0][:batch], digits[1][:batch]
    if batch == 10:
        assert len(y.unique()) < 10, "some class is absent and another repeated: rows of t and samples differ"
    dtype, autocast, rel = PRECISIONS[precision]
    loss_fn = {"v9": sigprop.loss.v9_input_target_max_all, "v14": sigprop.loss.v14_input_target_max_rand,
               "v15": sigprop.loss.v15_input_target_topk(6)}[loss]
    labels = torch.eye(10, dtype=dtype)[y] if dtype == torch.float64 else y
    per_sample, per_class = sigprop.monitors.Group(), sigprop.monitors.Group()
    expected = local_losses(build_projection_mlp(False, per_sample, loss=loss_fn, dtype=dtype), per_sample, x.to(dtype), labels, autocast)
    got = local_losses(build_projection_mlp(True, per_class, loss=loss_fn, dtype=dtype), per_class, x.to(dtype), labels, autocast)
    assert got == pytest.approx(expected, rel=rel)
    assert all(v > 0 for v in got.values()) or batch == 1


def test_a_signal_contradicting_the_setting_is_a_clear_error(digits) -> None:
    x, y = digits[0][:16], digits[1][:16]
    monitor = sigprop.monitors.Group()
    model = build_projection_mlp(True, monitor)
    # The same per-class signal with propagators left at one row per sample.
    for propagator in (model.signal, model.model[0]):
        propagator.per_class_signal = False
    with pytest.raises(ValueError, match="per_class_signal=True"):
        model(x, y)


@pytest.mark.parametrize("batch", [8, 16])
def test_per_class_propagators_refuse_a_signal_of_one_row_per_sample(digits, batch: int) -> None:
    """The settings say one row per class, the signal has one per sample: refused at the signal, whose labels
    have as many rows as the batch, whether the batch is larger or smaller than the 10 classes."""
    x, y = digits[0][:batch], digits[1][:batch]
    model = build_projection_mlp(True, sigprop.monitors.Group(), rows_per_class=False)
    with pytest.raises(ValueError, match=rf"^per_class_signal=True, but the signal's labels have {batch} rows for 10 classes"):
        model(x, y)


def test_v1_refuses_a_signal_of_one_row_per_sample(digits) -> None:
    x, y = digits[0][:16], digits[1][:16]
    model = build_projection_mlp(False, sigprop.monitors.Group(), loss=sigprop.loss.v1_input_label_direct)
    with pytest.raises(ValueError, match="^v1_input_label_direct reads the signal's rows as classes"):
        model(x, y)
    # With one row per class it trains: the first layer's rows match their classes more often than chance.
    monitor = sigprop.monitors.Group()
    model = build_projection_mlp(True, monitor, loss=sigprop.loss.v1_input_label_direct)
    for start in range(0, 1024, 64):
        model(digits[0][start : start + 64], digits[1][start : start + 64])
    assert monitor.values()["signal"]["acc"] > 0.2


@pytest.mark.parametrize("per_class", [False, True])
def test_labels_of_one_column_are_refused(digits, per_class: bool) -> None:
    """Labels shaped (B, 1) are neither class indices nor one-hot rows: read as one-hot they would put every
    sample in class 0 (and every label match right)."""
    x, y = digits[0][:16], digits[1][:16]
    model = build_projection_mlp(per_class, sigprop.monitors.Group())
    with pytest.raises(ValueError, match=r"^the labels have shape \(16, 1\): one-hot encoding takes class indices \(16,\)"):
        model(x, y[:, None])
    # Called directly, a layer's metrics and a per-class loss refuse them too (its label match would be 1.0).
    h = digits[0][:16, :WIDTH]
    metrics = sigprop.monitors.loss.LabelMetrics("layer01", LOSS)
    with pytest.raises(ValueError, match=r"^the labels \(context\) have shape \(16, 1\) for a batch of 16"):
        metrics(P.Loss(nn.Identity(), None, LOSS, per_class_signal=per_class), h, h[:10] if per_class else h, h, h, y[:, None])


# --- managers --------------------------------------------------------------------------------


def test_preset_wraps_layers_with_their_own_optimizers() -> None:
    built: list[nn.Module] = []

    def builder(module: nn.Module) -> torch.optim.Optimizer | None:
        built.append(module)
        return build_optimizer(module)

    monitor = sigprop.monitors.Group()
    model, manager = build_mlp(monitor=monitor, builder=builder)
    signal, (hidden, output) = model.signal, list(model.model)
    assert isinstance(model, sigprop.models.Forward)
    assert isinstance(signal, P.signals.Loss) and isinstance(hidden, P.Loss) and isinstance(output, P.Identity)
    # The builder saw the signal and the hidden layer, not the output layer (Identity takes no optimizer).
    assert built == [signal.module, hidden.module]
    for propagator in (signal, hidden):
        opt_params = {id(p) for g in propagator.optimizer.param_groups for p in g["params"]}
        assert opt_params == {id(p) for p in propagator.module.parameters()}
    # Each loss is wrapped in a monitor named after its place.
    assert [m.name for m in monitor.monitors] == ["signal", "layer01"]
    assert hidden.loss is monitor.monitors[1] and hidden.loss.loss is LOSS
    assert manager.propagators == [hidden, output] and manager.model is model and manager.signal is signal


def test_arguments_a_propagator_does_not_take_are_dropped() -> None:
    manager = sigprop.managers.Preset(sigprop.models.Forward, P.Loss, P.signals.Loss, build_optimizer)
    manager.config_propagator(loss=LOSS, fuse_ht=False, not_an_argument=3)
    signal = manager.set_signal(S.ProjectionContext(nn.Linear(10, 8), (10,), (8,)), loss=LOSS, also_unknown=1)
    hidden = manager.add_propagator(nn.Linear(8, 8))
    flat = manager.add_propagator(nn.Flatten(), P.Forward)  # takes neither loss nor optimizer
    fixed = manager.add_propagator(nn.ReLU(), P.Fixed, loss=LOSS)
    out = manager.add_propagator(nn.Linear(8, 10), P.Identity, optimizer="never used")
    assert hidden.fuse_ht is False and hidden.loss is LOSS and hidden.optimizer is not None
    assert isinstance(flat, P.Forward) and isinstance(fixed, P.Fixed) and isinstance(out, P.Identity)
    assert signal.loss is LOSS

    prepared = sigprop.managers.Prepared(sigprop.models.Forward, P.Loss, P.signals.Fixed)
    layer = nn.Linear(8, 8)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    signal = prepared.set_signal(S.ProjectionContext(nn.Linear(10, 8), (10,), (8,)), optimizer=opt, loss=LOSS)
    assert isinstance(signal, P.signals.Fixed)
    hidden = prepared.add_propagator(layer, optimizer=opt, loss=LOSS, bogus=1)
    assert hidden.optimizer is opt
    out = prepared.add_propagator(nn.Linear(8, 10), P.Identity, optimizer=opt, loss=LOSS)
    model = prepared.set_model(nn.Sequential(hidden, out))
    assert model(torch.randn(4, 8), F.one_hot(torch.arange(4), 10).float()).shape == (4, 10)


class MyPropagator(P.Propagator):
    """The custom propagator of the reference package's README, as written there."""

    def __init__(self, module):
        super().__init__()

        self.module = module

    def forward(self, input):
        h0, t0, y_onehot = input

        h1 = self.module(h0)
        t1 = t0

        return (h1, t1, y_onehot)


def test_a_propagator_written_against_the_reference_runs(digits) -> None:
    x, y = digits[0][:64], digits[1][:64]
    assert isinstance(P.Propagator(), nn.Module)
    torch.manual_seed(0)
    hidden = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU())
    signal_module = nn.Sequential(
        S.LabelNumberToOnehot(10),
        S.ProjectionContextInput(nn.Linear(10, WIDTH), nn.Sequential(nn.Linear(784, WIDTH), nn.ReLU()), (10,), (WIDTH,)),
    )
    model = sigprop.models.Forward(
        nn.Sequential(P.Loss(hidden, build_optimizer(hidden), LOSS), MyPropagator(nn.Linear(WIDTH, 10))),
        P.signals.Loss(signal_module, build_optimizer(signal_module), LOSS),
    )
    out = model(x, y)
    F.cross_entropy(out, y).backward()  # the custom propagator keeps the graph: the output layer learns
    assert all(p.grad is not None for p in model.model[1].module.parameters())
    assert model.model[1].trained_by == "global" and len(list(model.parameters())) == 2


def test_manage_wraps_through_the_manager() -> None:
    """``cls.manage(manager, module, **kwargs)`` on propagators, signal propagators and models."""
    monitor = sigprop.monitors.Group()
    manager = sigprop.managers.Preset(
        sigprop.models.Forward, P.Loss, P.signals.Loss, build_optimizer, sigprop.monitors.loss.LabelMetrics, monitor
    )
    manager.config_propagator(loss=LOSS)
    signal = P.signals.Loss.manage(manager, S.ProjectionContext(nn.Linear(10, 8), (10,), (8,)), loss=LOSS)
    hidden = P.Loss.manage(manager, nn.Linear(8, 8))
    fixed = P.Fixed.manage(manager, nn.ReLU())
    out = P.Identity.manage(manager, nn.Linear(8, 10))
    model = sigprop.models.Forward.manage(manager, nn.Sequential(hidden, fixed, out))
    assert manager.signal is signal and isinstance(signal, P.signals.Loss) and signal.optimizer is not None
    assert manager.propagators == [hidden, fixed, out] and manager.model is model
    assert isinstance(hidden, P.Loss) and hidden.loss is monitor.monitors[1] and hidden.optimizer is not None
    assert isinstance(fixed, P.Fixed) and isinstance(out, P.Identity)
    other = sigprop.managers.Prepared(sigprop.models.Forward, P.Loss, P.signals.Loss)
    assert isinstance(P.signals.Fixed.manage(other, S.FixedDrawContext(1)), P.signals.Fixed)


def fresh() -> sigprop.managers.Preset:
    return sigprop.managers.Preset(sigprop.models.Forward, P.Loss, P.signals.Loss, build_optimizer)


def signal_module() -> nn.Module:
    return S.ProjectionContext(nn.Linear(10, 8), (10,), (8,))


def after_signal(m: sigprop.managers.Preset) -> sigprop.managers.Preset:
    m.set_signal(signal_module(), loss=LOSS)
    return m


def after_layer(m: sigprop.managers.Preset) -> sigprop.managers.Preset:
    after_signal(m).add_propagator(nn.Linear(8, 8), loss=LOSS)
    return m


def after_model(m: sigprop.managers.Preset) -> sigprop.managers.Preset:
    after_layer(m).set_model(nn.Sequential(*m.propagators))
    return m


WRONG_ORDER = {
    "set_model before set_signal": (lambda: fresh().set_model(nn.Sequential()), r"set_signal\(\) must be called before"),
    "set_signal twice": (lambda: after_signal(fresh()).set_signal(signal_module(), loss=LOSS), "already"),
    "config_signal after set_signal": (lambda: after_signal(fresh()).config_signal(loss=LOSS), r"config_signal"),
    "config_propagator after add_propagator": (
        lambda: after_layer(fresh()).config_propagator(loss=LOSS),
        r"config_propagator\(\) must come before",
    ),
    "add_propagator after set_model": (
        lambda: after_model(fresh()).add_propagator(nn.Linear(8, 8), loss=LOSS),
        r"before set_model",
    ),
    "set_model twice": (lambda: after_model(fresh()).set_model(nn.Sequential()), "already"),
    "config_model after set_model": (lambda: after_model(fresh()).config_model(), r"config_model"),
    "set_monitor after set_signal": (
        lambda: after_signal(fresh()).set_monitor(sigprop.monitors.loss.LabelMetrics, sigprop.monitors.Group()),
        r"set_monitor\(\) must come before",
    ),
    "set_monitor twice": (
        lambda: sigprop.managers.Prepared(
            sigprop.models.Forward, P.Loss, P.signals.Loss, sigprop.monitors.loss.LabelMetrics, sigprop.monitors.Group()
        ).set_monitor(sigprop.monitors.loss.LabelMetrics, sigprop.monitors.Group()),
        "already",
    ),
}


@pytest.mark.parametrize("case", list(WRONG_ORDER))
def test_wrong_call_order_raises_a_clear_error(case: str) -> None:
    call, message = WRONG_ORDER[case]
    with pytest.raises(RuntimeError, match=message):
        call()


def test_set_monitor_needs_a_group() -> None:
    with pytest.raises(ValueError, match="monitors.Group"):
        fresh().set_monitor(sigprop.monitors.loss.LabelMetrics, None)


def test_manager_interface_is_abstract() -> None:
    manager = sigprop.managers.Manager()
    for call in (lambda: manager.set_signal(nn.Identity()), lambda: manager.add_propagator(nn.Identity()),
                 lambda: manager.set_model(nn.Identity())):
        with pytest.raises(NotImplementedError):
            call()


# --- monitors --------------------------------------------------------------------------------


def test_label_metrics_accumulate_loss_and_accuracy() -> None:
    values = iter([2.0, 4.0])
    metrics = sigprop.monitors.loss.LabelMetrics("layer07", lambda *args: torch.tensor(next(values)))
    # y = h1 @ t1.T rows: [1,0,0,1] -> 0, [0,1,1,0] -> 1, [1,0,0,1] -> 0, [0,1,1,0] -> 1 (first max)
    h1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    t1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    # Sample i is right when the label of its best target equals its own: rows 0, 1 yes; rows 2, 3 no.
    out = metrics(None, h1, t1, h1, t1, labels)
    assert float(out) == 2.0
    assert metrics.values() == {"loss": 2.0, "acc": 0.5}
    # A second batch of 2, labels one-hot; both right.
    out = metrics(None, h1[:2], t1[:2], h1[:2], t1[:2], F.one_hot(labels[:2], 2).float())
    assert float(out) == 4.0
    assert metrics.values() == pytest.approx({"loss": (2.0 * 4 + 4.0 * 2) / 6, "acc": 4 / 6})
    assert metrics.metrics().startswith("[layer07]") and "0.6667" in metrics.metrics()
    # The reference package's attributes, still tensors (no wait for the device while recording).
    assert isinstance(metrics.acc_sum, torch.Tensor) and isinstance(metrics.loss_last, torch.Tensor)
    assert float(metrics.acc_sum) == 4 and float(metrics.acc_last) == 1.0 and float(metrics.loss_last) == 4.0
    assert float(metrics.loss_sum) == 16.0 and metrics.count == 6
    reference_line = "[{}] Acc: {:.4f} ({:.4f}, {}/{}) \t Loss: {:.4f} ({:.4f})".format(
        metrics.name, metrics.acc_last, metrics.acc_sum / (metrics.count + 1e-6), int(metrics.acc_sum),
        int(metrics.count), metrics.loss_last, metrics.loss_sum / (metrics.count + 1e-6),
    )
    assert reference_line == "[layer07] Acc: 1.0000 (0.6667, 4/6) \t Loss: 4.0000 (2.6667)"
    # One signal row per class: the best row is compared with the label directly.
    per_class = sigprop.monitors.loss.LabelMetrics("per_class", lambda *args: torch.tensor(1.0))
    t_classes = torch.eye(3)
    h = torch.tensor([[0.0, 0.0, 5.0], [3.0, 1.0, 0.0]])
    propagator = P.Loss(nn.Identity(), None, per_class, per_class_signal=True)
    per_class(propagator, h, t_classes, h, t_classes, torch.tensor([2, 1]))
    assert per_class.values()["acc"] == 0.5
    # The same call from a propagator of the default setting (one row per sample) is refused.
    with pytest.raises(ValueError, match="per_class_signal=True"):
        per_class(None, h, t_classes, h, t_classes, torch.tensor([2, 1]))
    # With as many samples as classes the setting decides. The best rows are 2, 0, 0: read as
    # samples their labels are 0, 2, 2 (none right); read as classes, samples 0 and 2 are right.
    labels = torch.tensor([2, 1, 0])
    h3 = torch.tensor([[0.0, 0.0, 5.0], [3.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    by_sample = sigprop.monitors.loss.LabelMetrics("s", lambda *args: torch.tensor(1.0))
    by_sample(P.Loss(nn.Identity(), None, by_sample), h3, t_classes, h3, t_classes, labels)
    by_class = sigprop.monitors.loss.LabelMetrics("c", lambda *args: torch.tensor(1.0))
    by_class(propagator, h3, t_classes, h3, t_classes, labels)
    assert by_sample.values()["acc"] == 0.0 and by_class.values()["acc"] == pytest.approx(2 / 3)
    metrics.reset()
    assert metrics.count == 0 and all(math.isnan(v) for v in metrics.values().values())
    assert metrics.acc_sum == 0 and metrics.acc_last == 0 and metrics.loss_last == 0


def test_label_metrics_pass_the_loss_through() -> None:
    h1 = torch.randn(4, 3, requires_grad=True)
    t1 = torch.randn(4, 3)
    t0 = F.one_hot(torch.tensor([0, 1, 0, 2]), 3).float()
    metrics = sigprop.monitors.loss.LabelMetrics("x", LOSS)
    out = metrics(None, h1, t1, h1, t0, torch.tensor([0, 1, 0, 2]))
    torch.testing.assert_close(out, LOSS(None, h1, t1, h1, t0, None))
    out.backward()
    assert h1.grad is not None


def test_float64_losses_are_summed_in_float64(digits) -> None:
    """A float64 run's metrics are exact to float64 rounding, not float32's."""
    x, y = digits[0][:320].double(), digits[1][:320]
    context = F.one_hot(y, 10).double()
    torch.manual_seed(0)
    signal_module = S.ProjectionContextInput(
        nn.Linear(10, WIDTH), nn.Sequential(nn.Linear(784, WIDTH), nn.ReLU()), (10,), (WIDTH,)
    ).double()
    hidden = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU()).double()
    metrics = {name: sigprop.monitors.loss.LabelMetrics(name, LOSS) for name in ("signal", "layer01")}
    returned: dict[str, list[tuple[float, int]]] = {name: [] for name in metrics}

    def recording(name: str) -> Callable:
        def loss(*args: Tensor) -> Tensor:
            value = metrics[name](*args)
            returned[name].append((float(value.detach()), args[1].shape[0]))
            return value

        return loss

    deferred = P.LocalLosses()
    model = sigprop.models.Forward(
        nn.Sequential(P.Loss(hidden, None, recording("layer01"), deferred=deferred), P.Identity(nn.Linear(WIDTH, 10).double())),
        P.signals.Loss(signal_module, None, recording("signal"), deferred=deferred),
    )
    model.train()
    for i in range(0, 320, 64):
        model(x[i : i + 64], context[i : i + 64])
        total = deferred.pop_sum()
        assert total.dtype == torch.float64
        assert float(total.detach()) == returned["signal"][-1][0] + returned["layer01"][-1][0]
    for name, m in metrics.items():
        expected = math.fsum(v * n for v, n in returned[name]) / 320
        assert m.loss_sum.dtype == torch.float64
        assert m.values()["loss"] == pytest.approx(expected, rel=1e-14, abs=0)


def test_group_collects_per_layer_metrics(digits) -> None:
    x, y = digits[0][:256], digits[1][:256]
    monitor = sigprop.monitors.Group()
    model, _ = build_mlp(monitor=monitor)
    model.train()
    losses = []
    for i in range(0, 256, 64):
        model(x[i : i + 64], y[i : i + 64])
        losses.append([float(m.loss_sum) for m in monitor.monitors])
    values = monitor.values()
    assert set(values) == {"signal", "layer01"}
    for m in monitor.monitors:
        assert m.count == 256
        assert 0.0 <= values[m.name]["acc"] <= 1.0 and values[m.name]["loss"] > 0
    assert monitor.metrics().splitlines()[0].startswith("[signal]")
    assert len(monitor.metrics().splitlines()) == 2
    monitor.reset()
    assert all(m.count == 0 for m in monitor.monitors)


# --- formatters ------------------------------------------------------------------------------


def test_formatters_and_their_functions() -> None:
    labels = torch.tensor([2, 0, 1, 2])
    h = torch.randn(4, 5)
    onehot = torch.tensor([[0.0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert torch.equal(FS.label_number_to_onehot(labels, 3), onehot)
    assert FS.label_number_to_onehot(labels, 5).shape == (4, 5)
    assert torch.equal(FS.label_number_to_onehot(labels, None), onehot)  # largest label + 1
    assert torch.equal(FS.distinct_batch_labels_onehot(onehot), torch.eye(3))
    assert torch.equal(FS.distinct_batch_labels(onehot), torch.tensor([0.0, 1.0, 2.0]))
    assert torch.equal(FS.label_vector_to_number(onehot), torch.tensor([[2.0], [0.0], [1.0], [2.0]]))
    for fn in (FS.distinct_batch_labels_onehot, FS.distinct_batch_labels, FS.label_vector_to_number):
        assert fn(None) is None
    assert FS.label_number_to_onehot(None, 3) is None

    for module, t0, expected in (
        (S.LabelNumberToOnehot(3), labels, onehot),
        (S.DistinctBatchLabelsOnehot(), onehot, torch.eye(3)),
        (S.DistinctBatchLabels(), onehot, torch.tensor([0.0, 1.0, 2.0])),
        (S.LabelVectorToNumber(), onehot, torch.tensor([[2.0], [0.0], [1.0], [2.0]])),
    ):
        h1, t1 = module((h, t0))
        assert h1 is h and torch.equal(t1, expected)
        assert module((h, None))[1] is None
        assert isinstance(module, S.Formatter)


# --- generators ------------------------------------------------------------------------------


def test_projection_context(digits) -> None:
    x, y = digits[0][:6].view(6, 1, 28, 28), digits[1][:6]
    torch.manual_seed(0)
    projection = nn.Linear(10, 2 * 4 * 4)
    generator = S.ProjectionContext(projection, (10,), (2, 4, 4))
    t0 = F.one_hot(y, 10).float()
    h1, t1, h0, t0_out = generator((x, t0))
    assert h1 is x and h0 is x and t0_out is t0
    torch.testing.assert_close(t1, projection(t0).view(6, 2, 4, 4))
    assert generator((x, None))[1] is None
    assert isinstance(generator, S.Generator)


@pytest.mark.parametrize("dataset", ["mnist", "cifar10_subset"])
def test_projection_context_input_takes_any_number_of_channels(dataset: str, request) -> None:
    x_train, y_train = request.getfixturevalue(dataset)[:2]
    spread = torch.arange(64) * (len(x_train) // 64)  # every class (the CIFAR-10 subset is ordered by class)
    x, y = x_train[spread], y_train[spread]
    assert len(y.unique()) == 10
    channels, dim = x.shape[1], x.shape[2]
    assert channels == (1 if dataset == "mnist" else 3)
    torch.manual_seed(0)
    shape = (4, dim, dim)
    module_context = nn.Sequential(nn.Linear(10, shape_numel(shape)), nn.ReLU())
    module_input = nn.Sequential(nn.Conv2d(channels, 4, 3, 1, 1), nn.ReLU())
    generator = S.ProjectionContextInput(module_context, module_input, (10,), shape)
    t0 = F.one_hot(y, 10).float()
    h1, t1, h0, t0_out = generator((x, t0))
    assert h1.shape == t1.shape == (64, *shape) and h0 is x and t0_out is t0
    torch.testing.assert_close(h1, module_input(x))
    torch.testing.assert_close(t1, module_context(t0).view(64, *shape))
    h1, t1, _, _ = generator((x, None))
    assert t1 is None and h1.shape == (64, *shape)

    # Wrapped in a learning signal propagator, both modules learn; with fixed=True neither does.
    for fixed in (False, True):
        torch.manual_seed(0)
        module = nn.Sequential(
            S.LabelNumberToOnehot(10),
            S.ProjectionContextInput(
                nn.Linear(10, shape_numel(shape)), nn.Conv2d(channels, 4, 3, 1, 1), (10,), shape, fixed=fixed
            ),
        )
        assert all(p.requires_grad is not fixed for p in module.parameters())
        propagator = P.signals.Loss(module, build_optimizer(module, lr=1e-2), LOSS)
        before = snapshot(module)
        for i in range(0, 64, 16):
            propagator((x[i : i + 16], y[i : i + 16], y[i : i + 16]))
        assert moved(before, module) == (set() if fixed else set(before))
        model = sigprop.models.Forward(nn.Sequential(P.Identity(nn.Flatten())), propagator)
        assert list(model.parameters()) == []
        assert len(list(P.local_parameters(model))) == (0 if fixed else 4)


def test_projection_context_fixed_freezes() -> None:
    projection = nn.Linear(10, 8)
    generator = S.ProjectionContext(projection, (10,), (8,), fixed=True)
    assert not any(p.requires_grad for p in projection.parameters())
    _, t1, _, _ = generator((torch.zeros(2, 8), torch.eye(10)[:2]))
    assert not t1.requires_grad


# Two glyphs written out (the others are checked through their placement): 1 is a vertical
# stroke in the middle column; 7 is the top row and the right column.
GLYPH_1 = ["0001000"] * 7
GLYPH_7 = ["1111111"] + ["0000001"] * 6


def glyph(rows: list[str]) -> Tensor:
    return torch.tensor([[1.0 if c == "1" else -1.0 for c in row] for row in rows])


def test_fixed_draw_context_draws_the_digits() -> None:
    draw = S.FixedDrawContext(1, layout="rows")
    h0 = torch.zeros(3, 2, 7, 7)
    h1, t1, h0_out, t0 = draw((h0, torch.tensor([1, 7, 1])))
    assert h1 is h0 and h0_out is h0 and t1.shape == (3, 2, 7, 7)
    for i, expected in enumerate((GLYPH_1, GLYPH_7, GLYPH_1)):
        for c in range(2):
            assert torch.equal(t1[i, c], glyph(expected))
    # One-hot labels draw the same; no target draws nothing.
    assert torch.equal(draw((h0, F.one_hot(torch.tensor([1, 7, 1]), 10).float()))[1], t1)
    assert draw((h0, None))[1] is None
    # The ten digits are distinct images.
    all_digits = draw((torch.zeros(10, 1, 7, 7), torch.arange(10)))[1].flatten(1)
    assert len({tuple(row.tolist()) for row in all_digits}) == 10


def test_fixed_draw_context_places_and_scales() -> None:
    single = S.FixedDrawContext(1, layout="rows")((torch.zeros(10, 1, 7, 7), torch.arange(10)))[1][:, 0]
    # A 28x28 image holds one 28x28 cell: every glyph pixel becomes a 4x4 block.
    big = S.FixedDrawContext(1, layout="rows")((torch.zeros(1, 1, 28, 28), torch.tensor([7])))[1][0, 0]
    assert torch.equal(big, glyph(GLYPH_7).repeat_interleave(4, 0).repeat_interleave(4, 1))
    # Two places side by side (7x14): label 12 is a 1 on the left and a 2 on the right.
    wide = S.FixedDrawContext(2, layout="rows")((torch.zeros(13, 1, 7, 14), torch.arange(13)))[1][:, 0]
    assert torch.equal(wide[12, :, :7], single[1]) and torch.equal(wide[12, :, 7:], single[2])
    # A one-digit label fills the first cell only; the rest of the image is 0.
    assert torch.equal(wide[7, :, :7], single[7]) and torch.equal(wide[7, :, 7:], torch.zeros(7, 7))
    # Stacked (14x7): top to bottom.
    tall = S.FixedDrawContext(2, layout="rows")((torch.zeros(13, 1, 14, 7), torch.arange(13)))[1][:, 0]
    assert torch.equal(tall[10, :7], single[1]) and torch.equal(tall[10, 7:], single[0])
    with pytest.raises(ValueError):
        S.FixedDrawContext(0)
    with pytest.raises(ValueError, match="layout"):
        S.FixedDrawContext(1, layout="columns")
    with pytest.raises(ValueError, match="digits"):
        S.FixedDrawContext(1, layout="rows")((torch.zeros(11, 1, 7, 7), torch.arange(11)))


def test_fixed_draw_context_reference_layout() -> None:
    """The default places the digits as the reference package: down the first column of cells;
    where the next cell would reach the bottom edge, the digit is skipped and the next column begins."""
    draw = S.FixedDrawContext(8)
    assert draw.layout == "reference"
    # 32x32 with 8 places: 11x11 cells (int(sqrt(128))); rows 0-10 and 11-21 fit, 22-32 would reach the edge.
    glyphs = S.FixedDrawContext(1, layout="rows")((torch.zeros(10, 1, 11, 11), torch.arange(10)))[1][:, 0]
    with pytest.warns(UserWarning, match="label 100"):
        images = draw((torch.zeros(3, 2, 32, 32), torch.tensor([7, 57, 123])))[1]
    assert torch.equal(images[:, 0], images[:, 1])
    expected = torch.zeros(3, 32, 32)
    expected[0, :11, :11] = glyphs[7]
    expected[1, :11, :11], expected[1, 11:22, :11] = glyphs[5], glyphs[7]  # top to bottom
    expected[2, :11, :11], expected[2, 11:22, :11] = glyphs[1], glyphs[2]  # the 3 is not drawn
    assert torch.equal(images[:, 0], expected)
    # One place in a square image: the cell is the image, it reaches the bottom edge, nothing is drawn.
    with pytest.warns(UserWarning, match="undrawn"):
        assert not S.FixedDrawContext(1)((torch.zeros(2, 1, 28, 28), torch.tensor([3, 8])))[1].any()
    # Numbers as a column (LabelVectorToNumber) and one-hot rows draw the same.
    numbers = S.LabelVectorToNumber()((None, F.one_hot(torch.tensor([7, 57]), 60).float()))[1]
    assert numbers.shape == (2, 1)
    assert torch.equal(draw((torch.zeros(2, 1, 32, 32), numbers))[1][:, 0], expected[:2])
    assert torch.equal(draw((torch.zeros(2, 1, 32, 32), F.one_hot(torch.tensor([7, 57]), 60).float()))[1][:, 0], expected[:2])
    with pytest.raises(ValueError, match="does not fit"):
        S.FixedDrawContext(1)((torch.zeros(1, 1, 30, 20), torch.tensor([1])))


def test_fixed_draw_context_as_a_fixed_signal(mnist) -> None:
    x, y = mnist[0][:16], mnist[1][:16]
    signal = P.signals.Fixed(S.FixedDrawContext(1, layout="rows"))
    h1, t1 = signal((x, y, y))
    assert h1.shape == t1.shape == (16, 1, 28, 28) and torch.equal(h1, x)
    assert set(t1.unique().tolist()) == {-1.0, 1.0}  # a single cell fills the whole image


# --- the reference package's import paths ----------------------------------------------------

REFERENCE_PATHS = {
    "sigprop.managers.manager": ["Manager", "Prepared", "Preset"],
    "sigprop.loss.functional": [
        "v1_input_label_direct", "v9_input_target_max_all", "v14_input_target_max_rand", "v15_input_target_topk",
        "soft_target_cross_entropy", "similarity_format", "similarity_matrix_x", "similarity_matrix_xy",
        "format_2dim_", "format_4dim_", "sim_2dim_", "sim_4dim_", "format_sim_2dim_", "format_sim_4dim_",
    ],
    "sigprop.loss.functional.input_label": ["v1_input_label_direct"],
    "sigprop.loss.functional.input_target": ["v9_input_target_max_all", "v14_input_target_max_rand", "v15_input_target_topk"],
    "sigprop.loss.functional.utils": ["soft_target_cross_entropy", "similarity_matrix_x", "format_sim_4dim_"],
    "sigprop.loss.loss": ["Loss"],
    "sigprop.propagators.functional": ["identity", "fixed", "forward"],
    "sigprop.propagators.functional_other": ["identity", "fixed", "forward"],
    "sigprop.propagators.propagator": ["Propagator"],
    "sigprop.propagators.learn": ["Learn", "Loss"],
    "sigprop.propagators.other": ["Identity", "Fixed", "Forward"],
    "sigprop.propagators.signals.learn": ["Learn", "Loss"],
    "sigprop.propagators.signals.other": ["Fixed"],
    "sigprop.signals.functional": ["label_number_to_onehot", "distinct_batch_labels_onehot", "distinct_batch_labels", "label_vector_to_number"],
    "sigprop.signals.functional_formatters": ["label_number_to_onehot", "label_vector_to_number"],
    "sigprop.signals.signal": ["Signal"],
    "sigprop.signals.formatters": ["Formatter", "LabelNumberToOnehot", "DistinctBatchLabelsOnehot"],
    "sigprop.signals.generators": ["Generator", "ProjectionContext", "ProjectionContextInput", "FixedDrawContext"],
    "sigprop.models.model": ["Model", "Forward"],
    "sigprop.models.loop_back": ["LoopBack", "ForwardLoopBack"],
    "sigprop.monitors.monitor": ["Monitor", "Group"],
    "sigprop.monitors.loss": ["Loss", "LabelMetrics"],
    "sigprop.utils": ["shape_numel"],
}


@pytest.mark.parametrize("path", list(REFERENCE_PATHS))
def test_reference_import_paths(path: str) -> None:
    """Code written against the reference package imports these modules and names; each is the
    library's own object, not a copy."""
    import importlib

    module = importlib.import_module(path)
    package = importlib.import_module(path.rsplit(".", 1)[0])
    for name in REFERENCE_PATHS[path]:
        obj = getattr(module, name)
        if hasattr(package, name):
            assert getattr(package, name) is obj, f"{path}.{name}"


def test_reference_attribute_paths() -> None:
    """Paths the reference's examples reach as attributes after ``import sigprop``."""
    from sigprop import functional as sigpropF

    assert sigprop.propagators.functional.forward is sigpropF.propagators.forward
    assert sigprop.signals.functional.label_number_to_onehot is sigpropF.signals.label_number_to_onehot
    assert sigprop.loss.functional.v9_input_target_max_all is sigprop.loss.v9_input_target_max_all
    assert sigprop.managers.manager.Preset is sigprop.managers.Preset


# --- utils -----------------------------------------------------------------------------------


def test_shape_numel() -> None:
    assert shape_numel((3, 4, 5)) == 60
    assert shape_numel([7]) == 7
    assert shape_numel(()) == 1
    assert shape_numel(torch.Size([2, 3])) == 6
    assert shape_numel(torch.zeros(2, 3, 4).shape[1:]) == 12
