"""mlrollout: a Kubernetes operator that rolls ML models out safely."""

__version__ = "0.1.0"
