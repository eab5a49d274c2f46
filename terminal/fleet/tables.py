"""The fleet's tables in the terminal's own databases, created by the schema migrations of each.

They exist whether or not the terminal is in a fleet (empty when it is not), so a data folder keeps one
schema version whatever its configuration, and joining a fleet later changes no schema.
"""

# facepay.db and journal.db: events waiting to be sent to the back office (see outbox.py).
OUTBOX = """
CREATE TABLE IF NOT EXISTS fleet_outbox (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    sent_at TEXT
);
CREATE INDEX IF NOT EXISTS fleet_outbox_unsent ON fleet_outbox(sent_at) WHERE sent_at IS NULL;
"""

# facepay.db: which enrolment belongs to which fleet card hash and opt-out code; the agent's own state.
LINKS = """
CREATE TABLE IF NOT EXISTS fleet_links (
    shopper_id TEXT PRIMARY KEY,
    card_hash TEXT NOT NULL,
    code_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS fleet_links_card ON fleet_links(card_hash);
CREATE TABLE IF NOT EXISTS fleet_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
