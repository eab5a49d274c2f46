"""The fleet's foundations on the terminal's side: the contract both sides share, the ``[fleet]`` settings,
the outbox and its tables, and the local link (card links, opt-out codes, staleness).

A terminal without ``[fleet]`` (empty ``nats_url``) works alone exactly as before: nothing here runs, no
outbox row is written, no network connection is opened.  The process that talks to the fleet over NATS,
:mod:`terminal.fleet_agent`, sits above the service and is not part of this package.
"""
