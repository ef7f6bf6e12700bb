"""Evaluators: turn (arch, data, settings) into an `EvalResult`. They know nothing of MLflow."""
