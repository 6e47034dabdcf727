"""mmmos: multi-domain, multi-axis audio quality scoring (PQ, PC, CE, CU) on ONNX Runtime / TensorRT.

The runtime (``mmmos.runtime``) needs only numpy and onnxruntime; training and export
(``mmmos.models``, ``mmmos.training``, ``mmmos.export``) need the ``export`` extra (torch).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mmmos")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

AXES: tuple[str, ...] = ("PQ", "PC", "CE", "CU")
"""The four axes, in the order every array in mmmos uses."""

__all__ = ["AXES", "__version__"]
