"""Eager PyTorch models -> TorchScript: script, trace or auto, with the tutorial's checks.

The server side (``service``) validates an upload and runs the compilation in an isolated
process (``task``, via ``app.sandbox.process``); the pipeline itself (``compile``) is shared with the
offline ``scriptserve compile`` command (``cli``). Nothing here imports torch at import time
except the modules that only run in the compile process (``build``, ``checks``, ``compile``).
"""
