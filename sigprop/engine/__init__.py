"""The training app's engine: settings, signal factories, the assembly, the training step, metrics, checkpoints."""
from .assemble import Assembly, assemble
from .step import TrainStep

__all__ = ["Assembly", "TrainStep", "assemble"]
