"""Governance: the tamper-evident audit chain (``audit``); attestation and accounting later."""
