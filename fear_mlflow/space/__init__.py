"""NATS-Bench topology search space: cell strings and the TinyNetwork built from them."""

from fear_mlflow.space.arch import OPS, Arch, all_archs, parse_arch

__all__ = ["OPS", "Arch", "all_archs", "parse_arch"]
