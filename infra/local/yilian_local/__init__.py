"""Yilian's local runtime: the real template.yaml on an in-process emulator, served over HTTP.

- ``stack.LocalStack``: moto in-process, the template deployed, handlers run in-process,
  the API served by a local API Gateway (``gateway``) — the embedded target.
- ``localstack.deploy``: the same translated template, packaged for a running LocalStack.
- ``python -m yilian_local up``: the command people run (``cli``).
"""
