"""The training engine: learners (SigProp and backpropagation), the epoch loop, checkpoints."""
from .learners import BackpropLearner, Learner, SigpropLearner

__all__ = ["BackpropLearner", "Learner", "SigpropLearner"]
