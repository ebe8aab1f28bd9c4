"""Datasets for the training application: torchvision builders, the embedded default, offline import."""
