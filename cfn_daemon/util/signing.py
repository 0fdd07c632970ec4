"""Ed25519 signatures of agent messages (votes): the private key lives only in the
cfn-agent process that made it; cfnd keeps the public key (docs/SECURITY.md)."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PREFIX = "ed25519:"


class Signer:
    """A key pair generated in this process; the private half is never exported."""

    def __init__(self) -> None:
        self._key = Ed25519PrivateKey.generate()

    @property
    def public(self) -> str:
        """``ed25519:<hex>`` of the public key (what cfnd pins)."""
        return PREFIX + self._key.public_key().public_bytes_raw().hex()

    def sign(self, data: bytes) -> str:
        return PREFIX + self._key.sign(data).hex()

    def __repr__(self) -> str:  # never the private key, whatever logs us
        return f"Signer({self.public})"


def is_public_key(value: str) -> bool:
    return value.startswith(PREFIX) and len(value) == len(PREFIX) + 64


def verify(public: str, data: bytes, signature: str) -> bool:
    """Whether ``signature`` (``ed25519:<hex>``) is ``public``'s signature of ``data``."""
    if not (is_public_key(public) and signature.startswith(PREFIX)):
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public[len(PREFIX) :]))
        key.verify(bytes.fromhex(signature[len(PREFIX) :]), data)
    except (ValueError, InvalidSignature):
        return False
    return True
