"""Versioned API types: the pydantic models that define the custom resources."""
