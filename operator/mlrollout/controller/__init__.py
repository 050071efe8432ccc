"""The kopf operator: thin handlers (`handlers`), one observe-decide-act pass (`reconcile`), pure builders
of children (`children`) and facts (`observe`), the Kubernetes adapter (`kube`), verdict sources
(`verdicts`) and the operator's own metrics (`metrics`)."""
