"""Named crash points for tests: ``FACEPAY_FAILPOINT=NAME`` makes the process exit at once there.

``os._exit`` skips every cleanup, like a power cut: no flush, no rollback, no
atexit.  What was committed to SQLite is all that survives.
"""

from __future__ import annotations

import os

EXIT_STATUS = 86

NAMES = {
    "after_journal_write": "the sale is in the journal; the processor has not been called",
    "after_processor_call": "the processor has answered; the journal does not know yet",
    "before_final_journal_write": "the answer is noted as a step; the sale is not yet settled",
    "after_void_journal_write": "a void is in the journal; the processor has not been called",
    "after_refund_processor_call": "a refund was made at the processor; the journal does not know yet",
    "after_consent_ledger_write": "an enrolment's consent is in the ledger; the template is not yet stored",
    "after_revoke_ledger_write": "an opt-out is in the consent ledger; the face data is not yet deleted",
    "after_data_key_deleted": "an opt-out destroyed the data key; the row and receipt are not yet written",
    "fleet_after_publish": "the agent published an outbox row and JetStream acknowledged it; the row is not yet "
                           "marked sent",
}


def hit(name: str) -> None:
    assert name in NAMES, name
    if os.environ.get("FACEPAY_FAILPOINT") == name:
        os._exit(EXIT_STATUS)
