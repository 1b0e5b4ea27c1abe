"""Test harness: the real control plane and stand-ins used only by tests and the demo."""
