"""Reconcilers (the one place that does I/O for a kind) and the thin Kopf registrations."""
