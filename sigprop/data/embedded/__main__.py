"""``python -m sigprop.data.embedded --source DIR``: rebuild the shipped MNIST subset (see ``build.py``)."""
from .build import main

main()
