"""What the service does, independent of HTTP, grouped by capability: one folder each.

- `audience/`: lists, subscribers, sign-up and confirmation, CSV import and export.
- `sending/`: issues, the one email composer, content.
- `compliance/`: suppressions, unsubscribing, privacy (export, erasure), bounce and complaint reports.
- `access/`: admin users and sessions, API tokens, rate limits.
"""
