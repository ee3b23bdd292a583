"""A plug-in model for bpt: a factory in the entry-point group bpt.models."""

from torch import nn


def tiny_cnn(input_shape, num_classes):
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * (height // 2) * (width // 2), 64), nn.ReLU(), nn.Linear(64, num_classes),
    )
