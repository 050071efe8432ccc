"""The formats the operator and the data plane share, each defined once (docs/architecture.md).

A leaf: pydantic and the standard library only, so the operator can import it without the model server's
or the gateway's dependencies (import-linter enforces both directions). :mod:`.evaluation` goes further,
standard library only, because the evaluation Job imports it and its start-up counts against its throughput
(import-linter and a unit test keep pydantic off the Job's path).

- :mod:`.metrics`: series names, help texts, label sets and bucket bounds (docs/metrics.md);
- :mod:`.routes`: the route table the operator writes and the gateway reads, and its ConfigMap key;
- :mod:`.process`: how the operator starts the processes: commands, environment names, ports, health
  paths and exit codes;
- :mod:`.profile`: the reference profile (training-data bins) the model server bins inputs on and the
  analysis compares them with;
- :mod:`.evaluation`: the request the operator gives the evaluation Job and the report the Job answers.
"""
