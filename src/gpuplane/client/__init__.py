"""httpx client for the gpuplane REST API."""

from gpuplane.client.http import Client, error_from_problem

__all__ = ["Client", "error_from_problem"]
