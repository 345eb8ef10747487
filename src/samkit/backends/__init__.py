"""Runtimes other than PyTorch for exported models: :mod:`samkit.backends.onnxruntime`."""
