"""ReportingKeyHook: the key of the reporting layer's keyed HMAC of personal ids.

The key is the password of a connection of type ``reporting_pii`` (default ``reporting_pii``), so it
lives where every other secret does, can be rotated in the UI, and never appears in code or logs.
"""

from __future__ import annotations

from airflow.sdk.bases.hook import BaseHook

#: A shorter key is refused: an HMAC key should carry at least as much entropy as a user id.
MIN_KEY_CHARS = 16


class ReportingKeyHook(BaseHook):
    """Reads the HMAC key; ``test_connection`` checks that one is set and long enough, never showing it."""

    conn_name_attr = "conn_id"
    default_conn_name = "reporting_pii"
    conn_type = "reporting_pii"
    hook_name = "Reporting HMAC key"

    def __init__(self, conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.conn_id = conn_id

    def get_key(self) -> str:
        key = self.get_connection(self.conn_id).password or ""
        if len(key) < MIN_KEY_CHARS:
            raise ValueError(f"the reporting HMAC key (password of connection {self.conn_id!r}) is "
                             f"{'empty' if not key else 'too short'}: set a random key of {MIN_KEY_CHARS}+ characters")
        return key

    def test_connection(self) -> tuple[bool, str]:
        try:
            key = self.get_key()
        except Exception as exc:  # noqa: BLE001 -- the Test button shows why
            return False, str(exc)
        return True, f"An HMAC key of {len(key)} characters is set"
