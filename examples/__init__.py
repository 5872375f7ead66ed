"""Example services and their workers (declared in the top-level ``services.yaml``)."""
