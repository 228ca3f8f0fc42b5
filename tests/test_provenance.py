"""Provenance marks: the IPTC digital source type in XMP in every format, and signed C2PA manifests read back
with c2pa-python, with a CA and signing certificate made here (offline), through to a real worker."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import c2pa
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngImageFile
from sqlalchemy import select

from conftest import Env, finished, write_catalogue
from contract.params import IMAGE_FORMATS
from contract.schema import Image, Item
from contract.settings import Settings, SettingsError, load_settings
from worker import provenance, xmp
from worker.encode import encode
from worker.provenance import Provenance, ProvenanceError
from worker.xmp import DIGITAL_SOURCE_TYPE, read_xmp

FORMATS = ["png", "jpeg", "webp"]
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS_IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
META = {
    "prompt": "studio photo of a Café mug",
    "negative_prompt": "",
    "seed": "12345",
    "model": "/models/tiny",
    "steps": "4",
    "guidance": "7.5",
    "size": "64x48",
    "job": "7",
    "item": "SKU-001",
    "variant": "0",
    "engine": "torch-cpu-fp32",
    "candidate": "0",
}


# --- certificates ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    chain: Path  # signing certificate, then the CA
    key: Path
    ca_pem: str  # the trust anchor a verifier would configure
    subject: str


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pixelmill test"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _usage(*, sign: bool, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _valid_for_30_days(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: datetime
) -> x509.CertificateBuilder:
    """A certificate of `subject`'s key, issued by `issuer`, valid from a day before `now` to 30 days after."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
    )


def make_credentials(directory: Path) -> Credentials:
    """An ES256 CA and a signing certificate with the extensions C2PA's certificate profile asks for."""
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        _valid_for_30_days(_name("pixelmill test CA"), _name("pixelmill test CA"), ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(sign=False, ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        _valid_for_30_days(_name("pixelmill signer"), ca.subject, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(sign=True, ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "chain.pem").write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    (directory / "key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Credentials(
        chain=directory / "chain.pem",
        key=directory / "key.pem",
        ca_pem=ca.public_bytes(pem).decode(),
        subject=cert.subject.rfc4514_string(),
    )


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return make_credentials(tmp_path_factory.mktemp("c2pa"))


@pytest.fixture(autouse=True)
def _fresh_credentials_cache() -> Iterator[None]:
    yield
    provenance._load_credentials.cache_clear()


def signing_settings(tmp_path: Path, creds: Credentials, **overrides: Any) -> Settings:
    return Settings(data_dir=tmp_path, c2pa_cert=creds.chain, c2pa_key=creds.key, **overrides)


# --- reading marks back, independently of worker.provenance ------------------------------------------------


def xmp_attributes(data: bytes) -> dict[str, str]:
    """The rdf:Description attributes of the XMP Pillow finds in the file, parsed with xml.etree alone."""
    with PILImage.open(io.BytesIO(data)) as image:
        image.load()
        packet = image.info["xmp"]
    text = packet.decode("utf-8") if isinstance(packet, bytes) else packet
    root = ET.fromstring(text[text.index("<x:xmpmeta") : text.rindex("</x:xmpmeta>") + len("</x:xmpmeta>")])
    out: dict[str, str] = {}
    for description in root.iter(f"{{{NS_RDF}}}Description"):
        out.update(description.attrib)
    return out


def xmp_container(data: bytes, fmt: str) -> bool:
    """The packet sits where each format's XMP spec puts it."""
    if fmt == "png":  # iTXt, keyword XML:com.adobe.xmp, uncompressed
        return b"iTXt" + b"XML:com.adobe.xmp\x00\x00\x00" in data
    if fmt == "jpeg":  # APP1 with the XMP namespace header
        return b"\xff\xe1" in data and b"http://ns.adobe.com/xap/1.0/\x00<?xpacket" in data
    # WebP: an "XMP " chunk of the RIFF container (extended format)
    offset, chunks = 12, []
    while offset + 8 <= len(data):
        tag, size = data[offset : offset + 4], struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        chunks.append(tag)
        offset += 8 + size + (size & 1)
    return data[:4] == b"RIFF" and b"VP8X" in chunks and b"XMP " in chunks


def reader(data: bytes, fmt: str, trust: str | None = None) -> c2pa.Reader:
    """c2pa's Reader; with `trust`, that PEM is the only trust anchor (as a verifier that trusts our CA)."""
    context = (
        c2pa.Context.from_dict({"trust": {"trust_anchors": trust}, "verify": {"verify_trust": True}}) if trust else None
    )
    return c2pa.Reader(IMAGE_FORMATS[fmt].content_type, io.BytesIO(data), context=context)


def codes(results: dict[str, Any], kind: str) -> set[str]:
    return {status["code"] for status in results["activeManifest"][kind]}


def check_manifest(data: bytes, fmt: str, creds: Credentials) -> None:
    """A valid manifest with the created action and digital source type, signed by our certificate; trusted
    by a verifier with our CA as its anchor, and failing only the trust check for one without it."""
    with reader(data, fmt, trust=creds.ca_pem) as trusted:
        assert trusted.get_validation_state() == "Trusted"
        results = trusted.get_validation_results()
        assert codes(results, "failure") == set(), results
        assert {"signingCredential.trusted", "claimSignature.validated", "assertion.dataHash.match"} <= codes(
            results, "success"
        )
        store = json.loads(trusted.json())
    manifest = store["manifests"][store["active_manifest"]]
    actions = [
        a
        for assertion in manifest["assertions"]
        if assertion["label"].startswith("c2pa.actions")
        for a in assertion["data"]["actions"]
    ]
    assert actions == [
        {
            "action": "c2pa.created",
            "digitalSourceType": DIGITAL_SOURCE_TYPE,
            "softwareAgent": {"name": "pixelmill", "version": xmp.pixelmill_version()},
        }
    ]
    assert manifest["claim_generator_info"][0]["name"] == "pixelmill"
    assert manifest["signature_info"]["common_name"] == "pixelmill signer"
    assert manifest["signature_info"]["alg"].lower() == "es256"
    # Without our CA among its anchors a verifier still validates the signature and every hash; the one
    # failure is that nobody vouches for the self-made CA (production certificates come from a CA on the
    # C2PA trust list).
    with reader(data, fmt) as untrusted:
        assert untrusted.get_validation_state() == "Valid"
        results = untrusted.get_validation_results()
        assert codes(results, "failure") == {"signingCredential.untrusted"}, results
        assert {"claimSignature.validated", "assertion.dataHash.match"} <= codes(results, "success")


# --- XMP ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_carries_the_digital_source_type_in_xmp(fmt: str) -> None:
    image = PILImage.new("RGB", (64, 48), (200, 30, 30))
    data = encode(image, fmt, META)
    assert xmp_container(data, fmt)
    attrs = xmp_attributes(data)
    assert attrs[f"{{{NS_IPTC_EXT}}}DigitalSourceType"] == DIGITAL_SOURCE_TYPE
    assert attrs["{http://ns.adobe.com/xap/1.0/}CreatorTool"].startswith("pixelmill ")
    facts = {name: attrs[f"{{{xmp.NS_PIXELMILL}}}{name}"] for name in xmp.XMP_FACTS}
    assert facts == {name: META[name] for name in xmp.XMP_FACTS}
    assert read_xmp(PILImage.open(io.BytesIO(data)).info["xmp"])["pixelmill:item"] == "SKU-001"
    with PILImage.open(io.BytesIO(data)) as loaded:  # today's metadata is still there
        if isinstance(loaded, PngImageFile):
            assert {k: loaded.text[k] for k in META} == META
        else:
            assert json.loads(loaded.getexif()[0x010E]) == META
    assert encode(image, fmt, META) == data  # still deterministic: a re-run writes the same object


def test_xmp_escapes_whatever_a_model_path_holds() -> None:
    odd = {**META, "model": 'C:\\models\\"mug" <v2> & co', "item": "Ä/ö ü"}
    attrs = xmp_attributes(encode(PILImage.new("RGB", (8, 8)), "png", odd))
    assert attrs[f"{{{xmp.NS_PIXELMILL}}}model"] == odd["model"]
    assert attrs[f"{{{xmp.NS_PIXELMILL}}}item"] == odd["item"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_unsigned_without_a_certificate(fmt: str, tmp_path: Path) -> None:
    data = encode(PILImage.new("RGB", (16, 16)), fmt, META)
    final, record = provenance.sign(data, fmt, Settings(data_dir=tmp_path))
    assert final == data
    assert record == Provenance(xmp=True, c2pa=False)
    assert record.as_json() == {
        "xmp": True,
        "c2pa": False,
        "signer": None,
        "cert_sha256": None,
        "alg": None,
        "digital_source_type": DIGITAL_SOURCE_TYPE,
    }
    with pytest.raises(c2pa.C2paError):  # no manifest at all
        reader(final, fmt)


# --- C2PA --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_c2pa_manifest_signed_and_validated(fmt: str, tmp_path: Path, creds: Credentials) -> None:
    data = encode(PILImage.new("RGB", (64, 48), (20, 120, 200)), fmt, META)
    final, record = provenance.sign(data, fmt, signing_settings(tmp_path, creds))
    check_manifest(final, fmt, creds)
    assert record.c2pa and record.xmp and record.signer == creds.subject and record.alg == "es256"
    cert = x509.load_pem_x509_certificates(creds.chain.read_bytes())[0]
    assert record.cert_sha256 == cert.fingerprint(hashes.SHA256()).hex()
    # Signing keeps the XMP and the image.
    assert xmp_attributes(final)[f"{{{NS_IPTC_EXT}}}DigitalSourceType"] == DIGITAL_SOURCE_TYPE
    with PILImage.open(io.BytesIO(final)) as signed, PILImage.open(io.BytesIO(data)) as plain:
        assert signed.size == (64, 48) and signed.tobytes() == plain.tobytes()


def test_changed_bytes_fail_validation(tmp_path: Path, creds: Credentials) -> None:
    final, _ = provenance.sign(
        encode(PILImage.new("RGB", (32, 32)), "png", META), "png", signing_settings(tmp_path, creds)
    )
    pixels = final.index(b"IDAT") + 8
    tampered = final[:pixels] + bytes([final[pixels] ^ 0xFF]) + final[pixels + 1 :]
    with reader(tampered, "png", trust=creds.ca_pem) as r:
        assert r.get_validation_state() == "Invalid"
        assert "assertion.dataHash.mismatch" in codes(r.get_validation_results(), "failure")


def test_signing_settings_come_in_pairs(tmp_path: Path, creds: Credentials) -> None:
    with pytest.raises(SettingsError, match="PIXELMILL_C2PA_CERT and PIXELMILL_C2PA_KEY must be set together"):
        load_settings(data_dir=tmp_path, c2pa_cert=creds.chain)
    with pytest.raises(SettingsError, match="PIXELMILL_C2PA_ALG"):
        load_settings(data_dir=tmp_path, c2pa_cert=creds.chain, c2pa_key=creds.key, c2pa_alg="md5")
    assert provenance.check_signing(Settings(data_dir=tmp_path)) is None  # not configured: nothing to check


def test_unusable_credentials_name_the_setting(tmp_path: Path, creds: Credentials) -> None:
    other = make_credentials(tmp_path / "other")
    own_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    self_signed = (
        x509.CertificateBuilder()
        .subject_name(_name("me"))
        .issuer_name(_name("me"))
        .public_key(own_key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(own_key, hashes.SHA256())
    )
    single, single_key = tmp_path / "self-signed.pem", tmp_path / "self-signed.key"
    single.write_bytes(self_signed.public_bytes(serialization.Encoding.PEM))
    single_key.write_bytes(
        own_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a pem\n")
    cases: list[tuple[dict[str, Any], str]] = [
        (dict(c2pa_cert=tmp_path / "missing.pem", c2pa_key=creds.key), "PIXELMILL_C2PA_CERT: cannot read"),
        (dict(c2pa_cert=creds.chain, c2pa_key=tmp_path / "missing.pem"), "PIXELMILL_C2PA_KEY: cannot read"),
        (dict(c2pa_cert=garbage, c2pa_key=creds.key), "PIXELMILL_C2PA_CERT: .* is not a PEM certificate chain"),
        (dict(c2pa_cert=creds.chain, c2pa_key=garbage), "PIXELMILL_C2PA_KEY: .* is not an unencrypted PEM"),
        (dict(c2pa_cert=creds.chain, c2pa_key=other.key), "PIXELMILL_C2PA_KEY: .* is not the key of the first"),
        (dict(c2pa_cert=single, c2pa_key=single_key), "PIXELMILL_C2PA_CERT: .* one self-signed certificate"),
        (
            dict(c2pa_cert=creds.chain, c2pa_key=creds.key, c2pa_alg="ps256"),
            "PIXELMILL_C2PA_ALG=ps256 needs a RSA key, but PIXELMILL_C2PA_KEY .* is EC secp256r1",
        ),
        (dict(c2pa_cert=creds.chain, c2pa_key=creds.key, c2pa_alg="es384"), "PIXELMILL_C2PA_ALG=es384 needs"),
    ]
    for values, message in cases:
        with pytest.raises(ProvenanceError, match=message):
            provenance.check_signing(Settings(data_dir=tmp_path, **values))
    record = provenance.check_signing(signing_settings(tmp_path, creds))
    assert record is not None and record.c2pa and record.xmp and record.signer == creds.subject


def test_a_traditional_ec_key_file_is_accepted(tmp_path: Path, creds: Credentials) -> None:
    """`openssl ecparam -genkey` writes SEC1 ("BEGIN EC PRIVATE KEY"), which c2pa itself rejects: it is
    handed over as PKCS#8."""
    key = serialization.load_pem_private_key(creds.key.read_bytes(), password=None)
    sec1 = tmp_path / "sec1.key"
    sec1.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    assert sec1.read_bytes().startswith(b"-----BEGIN EC PRIVATE KEY-----")
    settings = Settings(data_dir=tmp_path, c2pa_cert=creds.chain, c2pa_key=sec1)
    final, record = provenance.sign(encode(PILImage.new("RGB", (8, 8)), "jpeg", META), "jpeg", settings)
    assert record.c2pa
    check_manifest(final, "jpeg", creds)


# --- end to end ----------------------------------------------------------------------------------------------


def signing_env(directory: Path, tiny_model: Path, cert: Path, key: Path) -> Env:
    """An installation whose workers sign their images with `cert` and `key` (its data directory made)."""
    env = Env(directory, tiny_model, backend={"PIXELMILL_C2PA_CERT": str(cert), "PIXELMILL_C2PA_KEY": str(key)})
    env.data_dir.mkdir()
    return env


@pytest.mark.e2e
def test_worker_stores_signed_images_whose_ledger_hash_is_of_the_final_bytes(
    tmp_path: Path, tiny_model: Path, creds: Credentials
) -> None:
    env = signing_env(tmp_path / "data", tiny_model, creds.chain, creds.key)
    try:
        env.start_worker()
        job = env.submit(write_catalogue(tmp_path / "catalogue.csv", 4))["job"]
        assert env.wait_for(job, finished)["succeeded"] == 4
        ledger, storage = env.ledger(), env.storage()
        with ledger.session() as session:
            rows = session.execute(
                select(Item, Image).join(Image, Image.item_id == Item.id).where(Item.job_id == job)
            ).all()
        ledger.close()
        assert len(rows) == 4
        fingerprint = x509.load_pem_x509_certificates(creds.chain.read_bytes())[0].fingerprint(hashes.SHA256()).hex()
        for item, image in rows:
            data = storage.get(image.storage_key)
            assert hashlib.sha256(data).hexdigest() == image.sha256 and len(data) == image.bytes
            check_manifest(data, "png", creds)
            attrs = xmp_attributes(data)
            assert attrs[f"{{{NS_IPTC_EXT}}}DigitalSourceType"] == DIGITAL_SOURCE_TYPE
            assert attrs[f"{{{xmp.NS_PIXELMILL}}}item"] == item.item_key
            assert attrs[f"{{{xmp.NS_PIXELMILL}}}seed"] == str(item.seed)
            assert attrs[f"{{{xmp.NS_PIXELMILL}}}job"] == str(job)
            assert image.provenance == {
                "xmp": True,
                "c2pa": True,
                "signer": creds.subject,
                "alg": "es256",
                "cert_sha256": fingerprint,
                "digital_source_type": DIGITAL_SOURCE_TYPE,
            }
    finally:
        env.close()
    # A worker whose key does not match its certificate refuses to start, naming the setting.
    bad = signing_env(tmp_path / "bad", tiny_model, creds.chain, creds.chain)
    try:
        proc = bad.cli("worker", check=False)
        assert proc.returncode != 0 and "PIXELMILL_C2PA_KEY" in proc.stderr, proc.stderr
    finally:
        bad.close()
