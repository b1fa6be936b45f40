"""The sparseq Python SDK and the ``sparseq`` command line: HTTP only, no torch (see client/sdk.py)."""

from client.sdk import Client, SparseqError

__all__ = ["Client", "SparseqError"]
