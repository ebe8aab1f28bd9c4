"""The README's quick start, executed as written: its python blocks run on real MNIST and CIFAR-10.

The blocks between ``<!-- quickstart:start -->`` and ``<!-- quickstart:end -->`` are
(1) building blocks, (2) the model through a manager, (3) training, (4) inference; the block
between the ``quickstart-option2`` markers replaces (2). The test supplies the names the README
says are the user's: ``train_loader``, ``test_loader``, ``input_ch``, ``input_dim``, ``num_classes``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import sigprop

README = Path(__file__).resolve().parents[1] / "README.md"
API = README.parent / "docs" / "api.md"  # the extension examples
USER_NAMES = ("train_loader", "test_loader", "input_ch", "input_dim", "num_classes")
HEADER = (
    "# sigprop\n\n"
    "Signal Propagation (SigProp): learning and inference in a forward pass (Kohan, Rietman & Siegelmann, "
    "[arXiv 2204.01723](https://arxiv.org/abs/2204.01723)).\n\n"
    "<!-- commands:start -->\n"
)


def readme_blocks(section: str, page: Path = README) -> list[str]:
    """The ```python blocks between ``<!-- {section}:start -->`` and ``<!-- {section}:end -->`` of ``page``."""
    text = page.read_text(encoding="utf-8")
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    assert text.count(start) == 1 and text.count(end) == 1, f"{page.name} needs exactly one {start} ... {end}"
    body = text[text.index(start) + len(start) : text.index(end)]
    return re.findall(r"^```python\n(.*?)^```\s*$", body, flags=re.S | re.M)


def quickstart_blocks() -> dict[str, str]:
    """The quick start's blocks by role: ``setup``, ``manager``, ``train``, ``infer``, ``option2``, ``deferred``."""
    main = readme_blocks("quickstart")
    assert len(main) == 4, f"expected 4 quick start blocks (setup, manager, train, inference), found {len(main)}"
    option2 = readme_blocks("quickstart-option2")
    assert len(option2) == 1, f"expected 1 block for option 2, found {len(option2)}"
    deferred = readme_blocks("quickstart-deferred")
    assert len(deferred) == 1, f"expected 1 block for option 3, found {len(deferred)}"
    return dict(zip(("setup", "manager", "train", "infer", "option2", "deferred"), (*main, *option2, *deferred)))


def run_blocks(blocks: list[str], namespace: dict[str, Any]) -> dict[str, Any]:
    """Execute README blocks in order in ``namespace`` (tracebacks name the block)."""
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md quickstart block {i}", "exec"), namespace)
    return namespace


def user_names(x_train, y_train, x_test, y_test, num_classes: int = 10, seed: int = 0) -> dict[str, Any]:
    """What the README asks the user to provide, built from real tensors."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "train_loader": DataLoader(TensorDataset(x_train, y_train), batch_size=64, shuffle=True, generator=generator),
        "test_loader": DataLoader(TensorDataset(x_test, y_test), batch_size=500),
        "input_ch": x_train.shape[1],
        "input_dim": x_train.shape[2],
        "num_classes": num_classes,
    }


def run_quickstart(names: dict[str, Any], model_block: str = "manager", seed: int = 0) -> dict[str, Any]:
    """Setup, the given model block, one epoch of training and inference; the namespace after.

    The ``deferred`` block (option 3) trains by itself, so it replaces the training block too.
    """
    blocks = quickstart_blocks()
    torch.manual_seed(seed)
    train = [] if model_block == "deferred" else [blocks["train"]]
    return run_blocks([blocks["setup"], blocks[model_block], *train, blocks["infer"]], dict(names))


def parameter_snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def test_readme_layout() -> None:
    text = README.read_text(encoding="utf-8")
    assert text.startswith(HEADER)
    assert "## Quick start (library)" in text and "[Library API](docs/api.md)" in text
    assert (README.parent / "docs" / "api.md").read_text(encoding="utf-8").startswith("# Library API\n")
    prose = text[text.index("## Quick start (library)") : text.index("<!-- quickstart:start -->")]
    for name in USER_NAMES:
        assert f"`{name}`" in prose, f"the quick start must tell the user that `{name}` is theirs"
    code = "\n".join(quickstart_blocks().values())
    for name in USER_NAMES:
        assert re.search(rf"^{name}\s*=", code, flags=re.M) is None, f"the quick start must not define {name}"
    assert "input_ch, hidden_ch" in code, "the signal's input module must take input_ch channels"


@pytest.fixture(scope="module")
def mnist_quickstart(mnist) -> dict[str, Any]:
    x_train, y_train, x_test, y_test = mnist
    names = user_names(x_train[:2000], y_train[:2000], x_test[:2000], y_test[:2000])
    return run_quickstart(names)


def test_quickstart_mnist(mnist_quickstart: dict[str, Any]) -> None:
    ns = mnist_quickstart
    print(f"README quick start, MNIST (2,000 images, 1 epoch): test accuracy {ns['accuracy']:.4f}")
    assert ns["accuracy"] >= 0.80  # chance is 0.10; tests/test_learning.py checks >= 0.90 on 6,000 images
    # The signal and the hidden layers learned locally: each one's label-match accuracy over
    # the epoch is well above chance (0.10).
    values = ns["monitor"].values()
    assert set(values) == {"signal", "layer01", "layer02"}
    for name, v in values.items():
        assert v["acc"] >= 0.3, f"{name} local accuracy {v['acc']:.3f}"
    # The user's optimizer holds only the output layer's parameters.
    output_params = {id(p) for p in ns["model"].model[2].module.parameters()}
    assert {id(p) for g in ns["optimizer"].param_groups for p in g["params"]} == output_params


def test_quickstart_option2_is_the_manager_path(mnist, mnist_quickstart: dict[str, Any]) -> None:
    """Option 2 (layers wrapped by hand) builds and trains the very same model as the manager."""
    x_train, y_train, x_test, y_test = mnist
    names = user_names(x_train[:2000], y_train[:2000], x_test[:2000], y_test[:2000])
    ns = run_quickstart(names, model_block="option2")
    print(f"README option 2, MNIST: test accuracy {ns['accuracy']:.4f} (manager: {mnist_quickstart['accuracy']:.4f})")
    assert abs(ns["accuracy"] - mnist_quickstart["accuracy"]) <= 0.002
    theirs, ours = parameter_snapshot(mnist_quickstart["model"]), parameter_snapshot(ns["model"])
    assert theirs.keys() == ours.keys()
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-4, atol=1e-4, msg=name)


def test_quickstart_option3_deferred_is_the_same_update(mnist, mnist_quickstart: dict[str, Any]) -> None:
    """Option 3 (one backward and one step for all local losses) trains the same model as the per-layer steps."""
    x_train, y_train, x_test, y_test = mnist
    names = user_names(x_train[:2000], y_train[:2000], x_test[:2000], y_test[:2000])
    ns = run_quickstart(names, model_block="deferred")
    print(f"README option 3, MNIST: test accuracy {ns['accuracy']:.4f} (manager: {mnist_quickstart['accuracy']:.4f})")
    assert len(ns["deferred"]) == 0
    assert abs(ns["accuracy"] - mnist_quickstart["accuracy"]) <= 0.005
    theirs, ours = parameter_snapshot(mnist_quickstart["model"]), parameter_snapshot(ns["model"])
    assert theirs.keys() == ours.keys()
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-3, atol=1e-3, msg=name)


def test_quickstart_cifar10(cifar10_subset) -> None:
    """The same code, unchanged, on 3-channel 32x32 images."""
    x_train, y_train, x_test, y_test = cifar10_subset
    names = user_names(x_train, y_train, x_test, y_test)
    torch.manual_seed(0)
    ns = run_blocks([quickstart_blocks()["setup"], quickstart_blocks()["manager"]], dict(names))
    before = parameter_snapshot(ns["model"])
    ns = run_blocks([quickstart_blocks()["train"], quickstart_blocks()["infer"]], ns)
    print(f"README quick start, CIFAR-10 subset (3,000 images, 1 epoch): test accuracy {ns['accuracy']:.4f}")
    assert ns["model"].signal.module[1].module_input[0].in_channels == 3
    after = parameter_snapshot(ns["model"])
    assert all(not torch.equal(before[k], after[k]) for k in before), "every layer must have learned"
    assert ns["accuracy"] >= 0.25  # chance is 0.10


def test_readme_extension_examples(mnist) -> None:
    """The README's custom loss, signal and propagator, put together, learn on MNIST."""
    ns = run_blocks(readme_blocks("extending", API), {})
    x, y = mnist[0][:1024], mnist[1][:1024]
    torch.manual_seed(0)
    codes = ns["ClassCodes"](10, (1, 28, 28))
    signal = sigprop.propagators.signals.Fixed(codes)
    h1, t1 = signal((x[:6], y[:6], y[:6]))
    assert torch.equal(h1, x[:6]) and set(t1.unique().tolist()) == {-1.0, 1.0}
    for i in range(6):  # one code per class
        assert torch.equal(t1[i], codes.codes[y[i]])
    assert signal((x[:6], None, None))[1] is None

    layer = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 256), torch.nn.ReLU())
    metrics = sigprop.monitors.loss.LabelMetrics("layer01", ns["v_cosine"])
    hidden = ns["ClippedLoss"](layer, optimizer=torch.optim.Adam(layer.parameters(), lr=1e-3), loss=metrics)
    model = sigprop.models.Forward(torch.nn.Sequential(hidden, sigprop.propagators.Identity(torch.nn.Linear(256, 10))), signal)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = parameter_snapshot(layer)
    local = []
    model.train()
    for i in range(0, 1024, 64):
        output = model(x[i : i + 64], y[i : i + 64])
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in layer.parameters()]))
        assert grad_norm <= 1.0 + 1e-4  # ClippedLoss clipped the layer's gradient before its step
        loss = torch.nn.functional.cross_entropy(output, y[i : i + 64])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i % 512 == 448:
            local.append(metrics.values()["acc"])
            metrics.reset()
    assert all(not torch.equal(before[k], p) for k, p in layer.named_parameters())
    print(f"README extension examples: hidden layer's label-match accuracy per 512 images {local}")
    assert local[-1] > local[0] and local[-1] >= 0.5  # chance: 0.1


def test_readme_names_the_test_data_files_as_the_skip_message_does() -> None:
    """A skipped test says which files ``$SIGPROP_TEST_DATA`` must hold in the README's words."""
    from conftest import TEST_DATA, TEST_DATA_FILES

    text = README.read_text(encoding="utf-8")
    assert f"`{TEST_DATA}=DIR` (a folder" in text
    for pattern in TEST_DATA_FILES.split(" and "):
        assert f"`{pattern}`" in text, pattern


def test_readme_quickstart_figures_describe_the_data_the_example_loads() -> None:
    """The sentence under the quick start names the data its example (the shipped subset, all of it) trains and
    tests on."""
    from sigprop.data import Embedded

    data = Embedded(mean=[0.1307], std=[0.3081]).load()
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert f"all {len(data.train_labels):,} training images of the shipped subset" in text
    assert f"on its {len(data.test_labels):,} test images" in text
