"""A gateway whose minting is cut down to a floor, for bench/feedback_bench.py (never for serving):

    python bench/feedback_floor.py constant|hmac <mlrollout-gateway arguments>

``constant``: every answer gets the id and body the first answer got (no parsing, no signing): what carrying
an id costs by itself (a longer header and body). ``hmac``: the same, plus the HMAC-SHA256 of that id's
payload and its base64, as minting any id must do: the least a signed id costs on the answer's path.
The gateway's CPU time with each, minus without ids, bounds from below what real minting can cost.
"""

from __future__ import annotations

import base64
import binascii
import sys

from mlrollout_serving.contract.feedback import MAC_BYTES
from mlrollout_serving.gateway import cli
from mlrollout_serving.gateway.feedback import Feedback, Minted


def floor(mode: str) -> None:
    real = Feedback.stamp
    first: list[tuple[bytes, Minted, bytes]] = []

    def stamp(
        self: Feedback, track: str, revision: str, body: bytes, mirrored: bool, now: int, predicted: bytes | None = None
    ) -> tuple[bytes, Minted | None] | None:
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
        if mode == "hmac":
            keys = self.keys
            assert keys is not None
            binascii.b2a_base64(payload + keys.mac(keys.current, payload), newline=False)
        return answer, minted

    Feedback.stamp = stamp  # type: ignore[method-assign]


if __name__ == "__main__":
    floor(sys.argv.pop(1))
    cli.main(sys.argv[1:])
