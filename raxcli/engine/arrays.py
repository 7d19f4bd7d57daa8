"""Which array library an array belongs to: NumPy (the CPU engine) or CuPy (the GPU one).

The readable reference forms of the model's math (the delta rule, the norms) take either,
so the GPU engine runs the same expressions the CPU engine is tested against. CuPy is
looked up only if something imported it: the CPU engine never loads it."""
from __future__ import annotations

import importlib
import sys

import numpy as np


def array_module(x):
    """numpy, or cupy for a CuPy array."""
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy
    return np


def to_host(x) -> np.ndarray:
    """A NumPy array with x's values (copied from the device for a CuPy array)."""
    return x.get() if array_module(x) is not np else np.asarray(x)


def library(name: str):
    """The array module called `name` ("numpy" or "cupy")."""
    return np if name == "numpy" else importlib.import_module(name)
