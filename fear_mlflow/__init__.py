"""fear-mlflow: rank NATS-Bench architectures cheaply and track every evaluation in MLflow."""

__version__ = "0.1.0"
