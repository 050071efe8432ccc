"""A gateway whose minting is cut down to a floor, for bench/feedback_bench.py (never for serving):

    python bench/feedback_floor.py none|constant|hmac|hmac_builtin <mlrollout-gateway arguments>

``none``: the gateway's call to mint is made and answers None (no id): this process (with keys) and that call,
against the gateway without keys: what is not the id's at all. ``constant``: every answer gets the id and
body the first answer got (no parsing, no signing): what carrying an id costs by itself (a longer header and
body). ``hmac`` and ``hmac_builtin``: the same, plus the HMAC-SHA256 of that id's payload (from the key's
states, inlined as in contract.feedback.seal_section) and its base64, as minting any id must do: the least a
signed id costs on the answer's path. ``hmac`` takes the states from hashlib's SHA-256 (OpenSSL's, what the
gateway used before 6 Dec), ``hmac_builtin`` from CPython's own (``_sha256``, ``_sha2`` from 3.12; what it
uses since): the two SHA-256s Python has, the same bytes. The gateway's CPU time with each, minus without
ids, bounds from below what real minting can cost.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import sys
from typing import Any

from mlrollout_serving.contract.feedback import _SHA256_STATE, MAC_BYTES, _hmac_states
from mlrollout_serving.gateway import cli
from mlrollout_serving.gateway.feedback import Feedback, Minted


def floor(mode: str) -> None:
    real = Feedback.stamp
    first: list[tuple[bytes, Minted, bytes]] = []
    states: list[tuple[Any, Any]] = []

    def stamp(
        self: Feedback, track: str, revision: str, body: bytes, mirrored: bool, now: int, predicted: bytes | None = None
    ) -> tuple[bytes, Minted | None] | None:
        if mode == "none":
            return None
        if not first:
            stamped = real(self, track, revision, body, mirrored, now)
            if stamped is None:
                return None
            answer, minted = stamped
            if minted is None:  # no id (no row can be labelled): as the real gateway
                return stamped
            token = minted.token
            payload = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))[:-MAC_BYTES]
            first.append((answer, minted, payload))
        answer, minted, payload = first[0]
        if mode in ("hmac", "hmac_builtin"):
            if not states:
                keys = self.keys
                assert keys is not None
                sha256 = hashlib.sha256 if mode == "hmac" else _SHA256_STATE
                states.append(_hmac_states(keys.keys[keys.current], sha256))
                inner, outer = (state.copy() for state in states[0])
                inner.update(payload)
                outer.update(inner.digest())
                assert outer.digest()[:MAC_BYTES] == keys.mac(keys.current, payload), "not the same HMAC"
            inner, outer = states[0]
            digest = inner.copy()
            digest.update(payload)
            mac = outer.copy()
            mac.update(digest.digest())
            binascii.b2a_base64(payload + mac.digest()[:MAC_BYTES], newline=False)
        return answer, minted

    Feedback.stamp = stamp  # type: ignore[method-assign]


if __name__ == "__main__":
    floor(sys.argv.pop(1))
    cli.main(sys.argv[1:])
