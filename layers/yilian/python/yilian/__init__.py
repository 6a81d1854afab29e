"""Yilian (医联): the shared package every function loads from the Yilian layer.

domain/   plain Python rules (identity numbers, matching, roles); no AWS.
services/ use cases; they take ports in their constructor.
adapters/ the only code that talks to AWS (DynamoDB via pynamodb, KMS, S3).
api/      the HTTP edge: resolver factory, principal extraction, error mapping.

Caches live in each function's app.py wiring, never at module level here: in the embedded
local stack every function shares one process, as they never do on Lambda.
"""
