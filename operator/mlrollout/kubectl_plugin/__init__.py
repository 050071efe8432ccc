"""`kubectl mlrollout`: the kubectl plugin to watch and steer rollouts (console script `kubectl-mlrollout`).

Layers: `render` is pure (typed object in, text out); the commands are `mlrollout.api.commands`, shared with
the operator; `kube` is the only module that talks to the API server; `cli` parses arguments and objects
and wires them together.
"""

from mlrollout.kubectl_plugin.cli import main

__all__ = ["main"]
