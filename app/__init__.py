"""ScriptServe: a model server for TorchScript."""

__version__ = "0.1.0"
