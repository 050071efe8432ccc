"""`kubectl mlrollout`: the kubectl plugin to watch and steer rollouts (console script `kubectl-mlrollout`).

Layers: `render` and `commands` are pure (object in, text or patch out); `kube` is the only module that
talks to the API server; `cli` parses arguments and wires them together.
"""

from mlrollout.kubectl_plugin.cli import main

__all__ = ["main"]
