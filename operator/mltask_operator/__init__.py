"""mltask-operator: runs MLTask resources as Argo Workflows and keeps their status true."""

__version__ = "0.1.0"
