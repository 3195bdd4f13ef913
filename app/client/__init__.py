"""Python client for ScriptServe: ``from app.client import Client`` (sync) or ``AsyncClient``.

``http`` holds the two clients, ``calls`` every call written once (sans-IO), ``tensors`` the
client-side tensor encoding. Importing this package does not import torch.
"""

from app.client.calls import ApiError, ClientError, ConnectionFailedError, Progress
from app.client.http import AsyncClient, Client

__all__ = ["ApiError", "AsyncClient", "Client", "ClientError", "ConnectionFailedError", "Progress"]
