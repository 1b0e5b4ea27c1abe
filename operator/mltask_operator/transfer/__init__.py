"""mltask-transfer: the default download and upload steps of every MLTask.

Standalone: it imports nothing else of the operator, nor kopf or kubernetes, so the step pods run
it without them (tests/unit/test_transfer_parts.py checks).
"""
