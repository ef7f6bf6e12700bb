"""`python -m fear_mlflow`: what MLproject entry points run (works without installing)."""

from fear_mlflow.cli import main

main()
