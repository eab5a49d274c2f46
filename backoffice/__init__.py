"""facepay back office: PostgreSQL system of record, NATS JetStream bus, web pages for shoppers and staff.

See docs/fleet.md.  Entry point: ``facepay-backoffice`` (:mod:`backoffice.cli`).
"""
