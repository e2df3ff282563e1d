"""Model runtimes behind one encoder interface.

Importing this package loads no model runtime: :mod:`.registry` imports a runtime
(PyTorch/open_clip today) only when the first encoder is created.
"""
