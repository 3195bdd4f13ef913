"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``).

Two gRPC core settings are made here, before any module of this package imports ``grpc``
(the core reads them once, at import):

- ``GRPC_ENABLE_FORK_SUPPORT=0``: the server forks sandbox children (trial loads, compiles)
  with ``subprocess.Popen``; with fork support on, gRPC's ``pthread_atfork`` handlers run in
  every such child while the aio server's threads are live and may abort it (SIGABRT), which
  turned good archives into ``model_load_failed``. The children exec at once and never use
  gRPC, so the fork handlers have nothing to protect.
- ``GRPC_VERBOSITY=ERROR``: gRPC core writes its own unstructured lines to stderr; at the
  default level these broke ``SCRIPTSERVE_LOG_FORMAT=json`` (one JSON object per line).

Both are ``setdefault``: an operator who sets them keeps their value.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
