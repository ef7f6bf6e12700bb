"""Shared pytest fixtures: real services and stores, started or found by the tests."""

pytest_plugins = ["tests.fixtures_mlflow", "tests.fixtures_services"]
