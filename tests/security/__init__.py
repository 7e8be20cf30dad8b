"""Security checks, gathered so that this folder reads as a checklist of the security
model: what bulkmail trusts (the providers file, the operator) and what it does not
(recipient data, campaign authors, anything that reaches Redis without its password).
One file per point; each test names the attack or mistake it stops.
"""
