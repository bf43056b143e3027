"""Bundle signatures: who made a bundle, checked with a public key. OpenSSF model-signing (the `sign` extra)
signs a sha256 of every file in the bundle folder with an elliptic-curve private key, into `model.sig` beside
them (a Sigstore bundle holding a DSSE envelope); verifying re-hashes the folder, so a changed, added or
removed file anywhere in it fails. Imported only when a bundle is signed or checked, so the runtime loads
without it."""

from __future__ import annotations

import os
import re
from pathlib import Path

from zoo.errors import ZooError
from zoo.runtime._manifest import BundleError

__all__ = ["SIGNATURE_NAME", "SignatureError", "BundleSigner", "verify_signature", "make_key_pair"]

SIGNATURE_NAME = "model.sig"
INSTALL = "pip install 'zoo[sign]'"


class SignatureError(BundleError):
    """A bundle that is unsigned, signed by a key not trusted, or changed since it was signed."""


def _model_signing():
    try:
        import model_signing
    except ImportError as e:
        raise ZooError(f"signing and checking bundle signatures needs the model-signing package ({e.name} is not "
                       f"installed): {INSTALL}") from None
    return model_signing


def _hashing(model_signing):
    """Every file but the signature, git files included (model-signing leaves those out by default)."""
    return model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE_NAME], ignore_git_paths=False)


def _key_file(path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"{what} {path} is not a file (make a key pair with `zoo keygen KEY`)")
    return path


class BundleSigner:
    """Signs bundle folders with the elliptic-curve private key in `private_key` (PEM, unencrypted), which is
    read here so that a bad key is refused before any work."""

    def __init__(self, private_key):
        model_signing = _model_signing()
        path = _key_file(private_key, "signing key")
        try:
            self._config = model_signing.signing.Config().use_elliptic_key_signer(private_key=path)
        except Exception as e:  # noqa: BLE001 - cryptography's errors for a key it cannot read
            raise ZooError(f"signing key {path} is not an unencrypted elliptic-curve private key in PEM "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        self._config.set_hashing_config(_hashing(model_signing))

    def sign(self, bundle: Path) -> Path:
        """Write `<bundle>/model.sig` over every other file in the folder; returns its path."""
        signature = Path(bundle) / SIGNATURE_NAME
        self._config.sign(Path(bundle), signature)
        return signature


def _mismatch(error: Exception) -> str:
    """model-signing's reason in a few words: which files differ, without the digests it prints."""
    text = str(error)
    changed = re.findall(r"Hash mismatch for \\*'(.+?)\\*': Expected", text)   # quotes escaped in a list repr
    added = re.findall(r"Extra files found in model '[^']*': ([^\"\]]+)", text)
    removed = re.findall(r"Missing files in model '[^']*': ([^\"\]]+)", text)
    parts = ([f"changed: {', '.join(changed)}"] if changed else []) + \
            [f"added: {a.strip()}" for a in added] + [f"removed: {r.strip()}" for r in removed]
    if parts:
        return "its files changed since it was signed (" + "; ".join(parts) + ")"
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return first[:200]


def verify_signature(bundle: Path, trusted_keys) -> None:
    """The bundle's `model.sig` must be a valid signature, by one of `trusted_keys` (public key files, PEM),
    over exactly the files in the bundle folder now; else SignatureError naming why."""
    keys = [trusted_keys] if isinstance(trusted_keys, (str, os.PathLike)) else list(trusted_keys)
    if not keys:
        raise ValueError("trusted_keys is empty: give the public key file(s) of the makers you trust")
    keys = [_key_file(key, "trusted key") for key in keys]
    signature = Path(bundle) / SIGNATURE_NAME
    if not signature.is_file():
        raise SignatureError(f"{bundle} is not signed (no {SIGNATURE_NAME}) but trusted keys were given: it could "
                             "come from anyone; ask its maker for a bundle signed with `zoo export --sign`",
                             exit_code=1)
    model_signing = _model_signing()
    reasons = []
    for key in keys:
        try:
            config = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=key)
        except Exception as e:  # noqa: BLE001 - cryptography's errors for a key it cannot read
            raise ZooError(f"trusted key {key} is not an elliptic-curve public key in PEM ({type(e).__name__})") \
                from None
        try:
            config.set_hashing_config(_hashing(model_signing)).verify(Path(bundle), signature)
            return
        except Exception as e:  # noqa: BLE001 - model-signing raises ValueError, cryptography and JSON errors
            if "Key mismatch" in str(e):
                reasons.append(f"not signed by {key}")
            else:
                raise SignatureError(f"{bundle}: {SIGNATURE_NAME} does not verify with {key}: {_mismatch(e)}",
                                     exit_code=1) from None
    raise SignatureError(f"{bundle}: {SIGNATURE_NAME} was made by none of the trusted keys "
                         f"({'; '.join(reasons)})", exit_code=1)


def make_key_pair(private_key) -> tuple[Path, Path]:
    """A new elliptic-curve (P-256) key pair: the private key written to `private_key` (PEM, mode 0600), the
    public key beside it with the suffix .pub. Neither file may exist already."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError as e:
        raise ZooError(f"making keys needs the model-signing package's cryptography ({e.name} is not installed): "
                       f"{INSTALL}") from None
    private = Path(private_key)
    public = private.with_suffix(".pub")
    if private.suffix == ".pub":
        raise ZooError(f"{private}: name the private key file, e.g. signing-key.pem; its public key goes to "
                       "signing-key.pub")
    for path in (private, public):
        if path.exists():
            raise ZooError(f"{path} exists: keys are never overwritten; choose another name or remove it")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        with open(public, "xb") as f:
            f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    except OSError as e:
        raise ZooError(f"cannot write the key pair: {e}") from None
    return private, public
