"""The MNIST subset shipped in the package (``mnist_small.npz``, read by ``sigprop.data.datasets.Embedded``) and
its builder: ``python -m sigprop.data.embedded --source DIR`` rebuilds it from the full MNIST files (``build.py``)."""
