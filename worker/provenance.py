"""Provenance marks on every stored image, because generated images must say so in a machine-readable way
(EU AI Act Art. 50) and a shop publishing them needs proof that they do.

Two marks, of different strength:

- XMP, always: IPTC `DigitalSourceType` = trainedAlgorithmicMedia and the generation facts (model, job, item
  key, variant, seed, engine), which `encode` embeds in PNG (iTXt `XML:com.adobe.xmp`), JPEG (APP1) and WebP
  (XMP chunk). Any XMP reader sees it, but nothing stops anyone from editing or stripping it.
- C2PA, when `PIXELMILL_C2PA_CERT` and `PIXELMILL_C2PA_KEY` are set: a signed manifest (action `c2pa.created`
  with the same digital source type) bound to the image bytes by a hash, so changes are detectable and the
  signer is known. Signing fails closed: with signing configured, an image that cannot be signed is not stored.

`sign` returns the final bytes (what is stored and hashed into the ledger) and a `Provenance` record for the
ledger's `images.provenance`. c2pa-python (and the `cryptography` it depends on) are imported only when
signing is configured, so the producer side and unsigned workers never need them.
"""

from __future__ import annotations

import functools
import io
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contract.params import IMAGE_FORMATS
from contract.settings import Settings
from worker.encode import encode
from worker.xmp import DIGITAL_SOURCE_TYPE, pixelmill_version


class ProvenanceError(RuntimeError):
    """Signing is configured but cannot work; the message names the setting to fix."""


@dataclass(frozen=True)
class Provenance:
    """What marks one stored image carries; stored as JSON in `images.provenance`."""

    xmp: bool  # the XMP packet with the digital source type is in the bytes
    c2pa: bool  # a signed C2PA manifest is embedded
    signer: str | None = None  # the signing certificate's subject (RFC 4514), when signed
    cert_sha256: str | None = None  # SHA-256 fingerprint of the signing certificate (DER), when signed
    alg: str | None = None  # signature algorithm, when signed
    digital_source_type: str = DIGITAL_SOURCE_TYPE

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Credentials:
    """The validated certificate chain and key (plain bytes: safe to cache across a fork)."""

    chain: bytes  # PEM, leaf first
    key: bytes  # PEM private key matching the leaf
    alg: str  # C2PA signature algorithm name (es256, ps256, ed25519 …)
    tsa_url: str | None  # RFC 3161 time-stamp authority, when configured
    signer: str  # the leaf's subject (RFC 4514)
    cert_sha256: str  # SHA-256 of the leaf (DER)


def signing_configured(settings: Settings) -> bool:
    return settings.c2pa_cert is not None and settings.c2pa_key is not None


def sign(data: bytes, fmt: str, settings: Settings) -> tuple[bytes, Provenance]:
    """The bytes to store (with a signed C2PA manifest when signing is configured) and what they carry.

    `data` is encode's output, which already holds the XMP; the manifest's hash covers the whole file but the
    manifest itself, so nothing may change the bytes after this."""
    xmp = DIGITAL_SOURCE_TYPE.encode() in data  # the packet is stored uncompressed in all three formats
    if not signing_configured(settings):
        return data, Provenance(xmp=xmp, c2pa=False)
    creds = _credentials(settings)
    return _sign_c2pa(data, IMAGE_FORMATS[fmt].content_type, creds), Provenance(
        xmp=xmp, c2pa=True, signer=creds.signer, cert_sha256=creds.cert_sha256, alg=creds.alg
    )


def check_signing(settings: Settings) -> Provenance | None:
    """Load the configured certificate and key and sign a 1×1 PNG with them, so a worker refuses to start
    with credentials that cannot sign rather than failing every item. None when signing is not configured."""
    if not signing_configured(settings):
        return None
    from PIL import Image

    return sign(encode(Image.new("RGB", (1, 1)), "png", {}), "png", settings)[1]


def manifest_definition(mime: str) -> dict[str, Any]:
    """The C2PA manifest pixelmill signs: generator `pixelmill/<version>`, one `c2pa.created` action with the
    trainedAlgorithmicMedia digital source type (what C2PA readers show as "AI-generated")."""
    version = pixelmill_version()
    return {
        "claim_generator_info": [{"name": "pixelmill", "version": version}],
        "format": mime,
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": DIGITAL_SOURCE_TYPE,
                            "softwareAgent": {"name": "pixelmill", "version": version},
                        }
                    ]
                },
            }
        ],
    }


def _sign_c2pa(data: bytes, mime: str, creds: _Credentials) -> bytes:
    import c2pa

    # A fresh context and signer per image (both cost well under a millisecond): nothing native is shared
    # between upload threads or inherited across the worker's fork. No claim thumbnail: it would add a
    # JPEG copy of the image (~30 KB) to every file and take most of the signing time.
    out = io.BytesIO()
    try:
        with (
            c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}}) as context,
            c2pa.Signer.from_info(
                c2pa.C2paSignerInfo(
                    alg=creds.alg.encode(), sign_cert=creds.chain, private_key=creds.key, ta_url=creds.tsa_url
                )
            ) as signer,
            c2pa.Builder(manifest_definition(mime), context) as builder,
        ):
            builder.sign(signer, mime, io.BytesIO(data), out)
    except c2pa.C2paError as exc:
        raise ProvenanceError(
            f"C2PA signing failed with PIXELMILL_C2PA_CERT/PIXELMILL_C2PA_KEY (PIXELMILL_C2PA_ALG={creds.alg}): {exc}"
        ) from exc
    return out.getvalue()


def _credentials(settings: Settings) -> _Credentials:
    assert settings.c2pa_cert is not None and settings.c2pa_key is not None
    return _load_credentials(settings.c2pa_cert, settings.c2pa_key, settings.c2pa_alg, settings.c2pa_tsa_url)


@functools.cache
def _load_credentials(cert_path: Path, key_path: Path, alg: str, tsa_url: str | None) -> _Credentials:
    """Read and check the PEM files once per process, with errors that name the setting (c2pa's own errors
    for a wrong key or chain are hard to map back to a file)."""
    try:
        import c2pa  # noqa: F401 (only to fail early and clearly)
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
    except ImportError as exc:
        raise ProvenanceError(
            "PIXELMILL_C2PA_CERT is set but c2pa-python is not installed: "
            "pip install 'pixelmill[worker]' (or c2pa-python)"
        ) from exc
    chain = _read(cert_path, "PIXELMILL_C2PA_CERT")
    key = _read(key_path, "PIXELMILL_C2PA_KEY")
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError as exc:
        raise ProvenanceError(f"PIXELMILL_C2PA_CERT: {cert_path} is not a PEM certificate chain: {exc}") from None
    try:
        private_key = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        raise ProvenanceError(f"PIXELMILL_C2PA_KEY: {key_path} is not an unencrypted PEM private key: {exc}") from None
    leaf = certs[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if private_key.public_key().public_bytes(serialization.Encoding.PEM, public) != leaf.public_key().public_bytes(
        serialization.Encoding.PEM, public
    ):
        raise ProvenanceError(
            f"PIXELMILL_C2PA_KEY: {key_path} is not the key of the first certificate in "
            f"PIXELMILL_C2PA_CERT ({cert_path}); the signing certificate must come first"
        )
    expected = _ALG_KEYS[alg]
    actual = _key_kind(private_key)
    if actual != expected:
        raise ProvenanceError(
            f"PIXELMILL_C2PA_ALG={alg} needs a {expected} key, but PIXELMILL_C2PA_KEY ({key_path}) is {actual}"
        )
    now = datetime.now(UTC)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise ProvenanceError(
            f"PIXELMILL_C2PA_CERT: the signing certificate in {cert_path} is valid only from "
            f"{leaf.not_valid_before_utc:%Y-%m-%d} to {leaf.not_valid_after_utc:%Y-%m-%d}"
        )
    if len(certs) == 1 and leaf.issuer == leaf.subject:
        raise ProvenanceError(
            f"PIXELMILL_C2PA_CERT: {cert_path} holds one self-signed certificate; C2PA needs a "
            "signing certificate issued by a CA (the chain: signing certificate, then "
            "intermediates)"
        )
    fingerprint = leaf.fingerprint(hashes.SHA256()).hex()
    # c2pa reads PKCS#8 only; `openssl ecparam -genkey` and `genrsa`-style files (SEC1, PKCS#1) work all the same.
    pkcs8 = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return _Credentials(
        chain=chain, key=pkcs8, alg=alg, tsa_url=tsa_url, signer=leaf.subject.rfc4514_string(), cert_sha256=fingerprint
    )


# The key each PIXELMILL_C2PA_ALG signs with, as `_key_kind` names it.
_ALG_KEYS = {
    "es256": "EC secp256r1",
    "es384": "EC secp384r1",
    "es512": "EC secp521r1",
    "ps256": "RSA",
    "ps384": "RSA",
    "ps512": "RSA",
    "ed25519": "Ed25519",
}


def _key_kind(key: object) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPrivateKey):
        return "RSA"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "Ed25519"
    return type(key).__name__


def _read(path: Path, setting: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ProvenanceError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None
