"""gpuplane: an open, sovereign control plane for shared GPU infrastructure."""

__version__ = "0.1.0"
