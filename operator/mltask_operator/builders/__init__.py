"""Pure builders: API models in, Kubernetes and Argo objects (dicts) out. No I/O here."""
