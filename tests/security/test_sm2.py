"""SM2: known answers over the recommended curve, encodings, encryption, key exchange, and
interoperability with the OpenSSL command line both ways.

Vectors: GB/T 32918.5-2017 / GM/T 0003.5-2012 (SM2 part 5, parameter definition), whose worked
examples use the recommended 256-bit curve (not the Fp-256 test curve of GB/T 32918.2 Annex A):
- signature (example A.2): d, message "message digest", ID "1234567812345678", k, Z_A, e, r, s;
- encryption (example C.2): d_B, message "encryption standard", k, C = C1 || C3 || C2;
- key exchange (example B.2): d_A, d_B, r_A, r_B, default IDs, Z_A, Z_B, K (klen 128), S_A, S_B.
The same values appear as self-tests in openHiTLS (CMVP SM2 vectors) and other SM2 stacks.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from security import sm2
from security.errors import (
    BadSignature,
    CryptoError,
    DecryptionError,
    KeyExchangeError,
    KeyFormatError,
)
from security.sm2 import DEFAULT_ID, SM2KeyExchange, SM2PrivateKey, SM2PublicKey

D = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
PUB = bytes.fromhex(
    "04"
    "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
    "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
)
K = 0x59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21
ZA = "b2e14c5c79c6df5b85f4fe7ed8db7a262b9da7e07ccb0ea9f4747b8ccda8a4f3"
E = "f0b43e94ba45accaace692ed534382eb17e6ab5a19ce7b31f4486fdfc0d28640"
R = 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
S = 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA
CIPHER = bytes.fromhex(
    "04"
    "04EBFC718E8D1798620432268E77FEB6415E2EDE0E073C0F4F640ECD2E149A73"
    "E858F9D81E5430A57B36DAAB8F950A3C64E6EE6A63094D99283AFF767E124DF0"
    "59983C18F809E262923C53AEC295D30383B54E39D609D160AFCB1908D0BD8766"
    "21886CA989CA9C7D58087307CA93092D651EFA"
)

OPENSSL = shutil.which("openssl")


@pytest.fixture(scope="module")
def std_key() -> SM2PrivateKey:
    return SM2PrivateKey(D)


# ------------------------------------------------------------------------------ known answers


def test_public_key_and_z(std_key: SM2PrivateKey) -> None:
    assert std_key.public_key.to_bytes() == PUB
    assert std_key.public_key.z(DEFAULT_ID).hex() == ZA
    assert std_key.public_key.digest(b"message digest").hex() == E


def test_signature_known_answer(std_key: SM2PrivateKey) -> None:
    e = std_key.public_key.digest(b"message digest")
    assert sm2._sign_digest_with_k(std_key, e, K) == (R, S)


def test_published_signature_verifies_through_gmssl(std_key: SM2PrivateKey) -> None:
    pub = SM2PublicKey.from_bytes(PUB)
    sig = sm2.encode_signature(R, S)
    pub.verify(sig, b"message digest")
    pub.verify(
        sm2.signature_from_raw(R.to_bytes(32, "big") + S.to_bytes(32, "big")), b"message digest"
    )
    with pytest.raises(BadSignature):
        pub.verify(sig, b"message digesT")
    with pytest.raises(BadSignature):
        pub.verify(sig, b"message digest", b"ALICE123@YAHOO.COM")


def test_encryption_known_answer(std_key: SM2PrivateKey) -> None:
    assert sm2._encrypt_with_k(std_key.public_key, b"encryption standard", K) == CIPHER
    assert std_key.decrypt(CIPHER) == b"encryption standard"


def test_key_exchange_known_answer() -> None:
    da = SM2PrivateKey(0x81EB26E941BB5AF16DF116495F90695272AE2CD63D6C4AE1678418BE48230029)
    db = SM2PrivateKey(0x785129917D45A9EA5437A59356B82338EAADDA6CEB199088F14AE10DEFA229B5)
    ra = 0xD4DE15474DB74D06491C440D305E012400990F3E390C7E87153C12DB2EA60BB3
    rb = 0x7E07124814B309489125EAED101113164EBF0F3458C5BD88335C1F9D596243D6
    assert (
        da.public_key.z().hex()
        == "3b85a57179e11e7e513aa622991f2ca74d1807a0bd4d4b38f90987a17ac245b1"
    )
    assert (
        db.public_key.z().hex()
        == "79c988d63229d97ef19fe02ca1056e01e6a7411ed24694aa8f834f4a4ab022f7"
    )
    a = SM2KeyExchange(da, db.public_key, initiator=True, _ephemeral=ra)
    b = SM2KeyExchange(db, da.public_key, initiator=False, _ephemeral=rb)
    assert a.ephemeral_public.hex().upper() == (
        "0464CED1BDBC99D590049B434D0FD73428CF608A5DB8FE5CE07F15026940BAE40E"
        "376629C7AB21E7DB260922499DDB118F07CE8EAAE3E7720AFEF6A5CC062070C0"
    )
    assert b.ephemeral_public.hex().upper() == (
        "04ACC27688A6F7B706098BC91FF3AD1BFF7DC2802CDB14CCCCDB0A90471F9BD707"
        "2FEDAC0494B2FFC4D6853876C79B8F301C6573AD0AA50F39FC87181E1A1B46FE"
    )
    rb_res = b.derive(a.ephemeral_public)  # B: K_B and S_B
    ra_res = a.derive(b.ephemeral_public)  # A: K_A, checks S_B as S_1, sends S_A
    assert ra_res.key.hex() == rb_res.key.hex() == "6c89347354de2484c60b4ab1fde4c6e5"
    s_b = "d3a0fe15dee185ceae907a6b595cc32a266ed7b3367e9983a896dc32fa20f8eb"
    s_a = "18c7894b3816df16cf07b05c5ec0bef5d655d58f779cc1b400a4f3884644db88"
    assert rb_res.confirmation.hex() == s_b
    assert ra_res.confirmation.hex() == s_a
    ra_res.check_peer_confirmation(rb_res.confirmation)
    rb_res.check_peer_confirmation(ra_res.confirmation)


# ------------------------------------------------------------------------------ behaviour


def test_sign_verify_round_trip_and_ids() -> None:
    key = SM2PrivateKey.generate()
    sig = key.sign(b"P=5MW", b"edge-07")
    key.public_key.verify(sig, b"P=5MW", b"edge-07")
    with pytest.raises(BadSignature):
        key.public_key.verify(sig, b"P=5MW")  # default ID
    with pytest.raises(BadSignature):
        SM2PrivateKey.generate().public_key.verify(sig, b"P=5MW", b"edge-07")
    # The cached Z follows the ID.
    key.public_key.verify(key.sign(b"x"), b"x")
    key.public_key.verify(key.sign(b"x", b"other"), b"x", b"other")


def test_signature_encodings() -> None:
    key = SM2PrivateKey.generate()
    der = key.sign(b"m")
    raw = sm2.signature_to_raw(der)
    assert len(raw) == 64
    assert sm2.signature_from_raw(raw) == der
    assert sm2.decode_signature(der) == (
        int.from_bytes(raw[:32], "big"),
        int.from_bytes(raw[32:], "big"),
    )
    for bad in (b"", der + b"\x00", der[:-1], raw, b"\x30\x06\x02\x01\x00\x02\x01\x01"):
        with pytest.raises(BadSignature):
            key.public_key.verify(bad, b"m")
    with pytest.raises(BadSignature, match="range"):
        sm2.signature_from_raw(sm2.N.to_bytes(32, "big") + b"\x01" * 32)
    # Non-minimal INTEGER (leading zero before a byte < 0x80) is not DER.
    with pytest.raises(BadSignature):
        sm2.decode_signature(b"\x30\x07\x02\x02\x00\x01\x02\x01\x01")
    bits = bytearray(der)
    bits[-1] ^= 1
    with pytest.raises(BadSignature):
        key.public_key.verify(bytes(bits), b"m")


def test_key_encodings_round_trip() -> None:
    key = SM2PrivateKey.generate()
    pub = key.public_key
    assert sm2.load_private_key(key.to_pem()).to_bytes() == key.to_bytes()
    assert sm2.load_private_key(key.to_der()).public_key == pub
    assert sm2.load_public_key(pub.to_pem()) == pub
    assert sm2.load_public_key(pub.to_der()) == pub
    assert SM2PublicKey.from_bytes(pub.to_bytes(compressed=True)) == pub
    assert SM2PublicKey.from_bytes(pub.to_bytes()[1:]) == pub
    assert SM2PrivateKey.from_bytes(key.to_bytes()).public_key == pub
    assert b"-----BEGIN PRIVATE KEY-----" in key.to_pem()
    # The curve OID 1.2.156.10197.1.301 as DER: 06 08 2A 81 1C CF 55 01 82 2D.
    assert bytes.fromhex("06082a811ccf5501822d") in pub.to_der()
    assert bytes.fromhex("06072a8648ce3d0201") in key.to_der()  # id-ecPublicKey


def test_key_format_errors() -> None:
    key = SM2PrivateKey.generate()
    with pytest.raises(KeyFormatError):
        SM2PublicKey(1, 2)
    with pytest.raises(KeyFormatError):
        SM2PrivateKey(0)
    with pytest.raises(KeyFormatError):
        SM2PrivateKey(sm2.N - 1)
    with pytest.raises(KeyFormatError, match="PUBLIC KEY"):
        sm2.load_public_key(key.to_pem())
    with pytest.raises(KeyFormatError):
        sm2.load_private_key(b"not a key")
    with pytest.raises(KeyFormatError, match="encrypted"):
        sm2.load_private_key(
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
        )
    # A P-256 key (same structure, other curve OID) is refused by name.
    p256 = bytearray(key.public_key.to_der())
    i = p256.index(bytes.fromhex("06082a811ccf5501822d"))
    p256[i : i + 10] = bytes.fromhex("06082a8648ce3d030107")
    with pytest.raises(KeyFormatError, match="not SM2"):
        sm2.load_public_key(bytes(p256))
    # A private key whose embedded public key does not match.
    other = SM2PrivateKey.generate()
    der = key.to_der().replace(key.public_key.to_bytes(), other.public_key.to_bytes())
    with pytest.raises(KeyFormatError, match="does not match"):
        SM2PrivateKey.from_der(der)


def test_encryption_round_trip_and_tamper() -> None:
    key = SM2PrivateKey.generate()
    for size in (1, 16, 32, 255):
        msg = bytes(range(size))
        ct = key.public_key.encrypt(msg)
        assert len(ct) == 97 + size
        assert key.decrypt(ct) == msg
        assert key.decrypt(sm2.ciphertext_from_der(sm2.ciphertext_to_der(ct))) == msg
        assert sm2.ciphertext_c1c2c3_to_c1c3c2(sm2.ciphertext_c1c3c2_to_c1c2c3(ct)) == ct
    ct = key.public_key.encrypt(b"session key 0123")
    for i in (70, 100, len(ct) - 1):  # C3, C2
        bad = bytearray(ct)
        bad[i] ^= 0x40
        with pytest.raises(DecryptionError):
            key.decrypt(bytes(bad))
    bad = bytearray(ct)
    bad[5] ^= 1  # C1 off the curve
    with pytest.raises(DecryptionError, match="curve"):
        key.decrypt(bytes(bad))
    with pytest.raises(DecryptionError):
        SM2PrivateKey.generate().decrypt(ct)
    with pytest.raises(CryptoError, match="255"):
        key.public_key.encrypt(b"x" * 256)
    with pytest.raises(CryptoError):
        key.public_key.encrypt(b"")


def test_key_exchange_random_keys_agree() -> None:
    a_key, b_key = SM2PrivateKey.generate(), SM2PrivateKey.generate()
    a = SM2KeyExchange(
        a_key, b_key.public_key, initiator=True, own_id=b"central", peer_id=b"edge-1", key_length=32
    )
    b = SM2KeyExchange(
        b_key,
        a_key.public_key,
        initiator=False,
        own_id=b"edge-1",
        peer_id=b"central",
        key_length=32,
    )
    rb = b.derive(a.ephemeral_public)
    ra = a.derive(b.ephemeral_public)
    assert ra.key == rb.key and len(ra.key) == 32
    ra.check_peer_confirmation(rb.confirmation)
    rb.check_peer_confirmation(ra.confirmation)
    with pytest.raises(KeyExchangeError, match="already used"):
        a.derive(b.ephemeral_public)


def test_key_exchange_detects_wrong_identity_and_bad_points() -> None:
    a_key, b_key, mallory = (SM2PrivateKey.generate() for _ in range(3))
    a = SM2KeyExchange(a_key, b_key.public_key, initiator=True)
    # Mallory answers in B's place with her own long-term key: keys differ, confirmation fails.
    m = SM2KeyExchange(mallory, a_key.public_key, initiator=False)
    rm = m.derive(a.ephemeral_public)
    ra = a.derive(m.ephemeral_public)
    assert ra.key != rm.key
    with pytest.raises(KeyExchangeError, match="confirmation"):
        ra.check_peer_confirmation(rm.confirmation)
    # IDs must agree on both sides.
    a2 = SM2KeyExchange(a_key, b_key.public_key, initiator=True, own_id=b"x")
    b2 = SM2KeyExchange(b_key, a_key.public_key, initiator=False)
    assert a2.derive(b2.ephemeral_public).key != b2.derive(a2.ephemeral_public).key
    c = SM2KeyExchange(a_key, b_key.public_key, initiator=True)
    bad = bytearray(c.ephemeral_public)
    bad[10] ^= 1
    with pytest.raises(KeyExchangeError, match="ephemeral"):
        c.derive(bytes(bad))


# ------------------------------------------------------------------------------ OpenSSL interop


def _openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    assert OPENSSL is not None
    return subprocess.run([OPENSSL, *args], input=input, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def openssl_sm2() -> str:
    if OPENSSL is None:
        pytest.skip("openssl CLI not installed")
    probe = _openssl("genpkey", "-algorithm", "SM2")
    if probe.returncode != 0:
        pytest.skip(f"this openssl has no SM2: {probe.stderr.decode().strip()}")
    return OPENSSL


DISTID = f"distid:{DEFAULT_ID.decode()}"


def test_openssl_verifies_our_signature(openssl_sm2: str, tmp_path: Path) -> None:
    key = SM2PrivateKey.generate()
    msg = tmp_path / "msg"
    msg.write_bytes(b"dispatch batch 42: 10,000 set-points")
    (tmp_path / "pub.pem").write_bytes(key.public_key.to_pem())
    (tmp_path / "sig").write_bytes(key.sign(msg.read_bytes()))
    ok = _openssl("pkeyutl", "-verify", "-in", str(msg), "-rawin", "-digest", "sm3", "-pubin",
                  "-inkey", str(tmp_path / "pub.pem"), "-sigfile", str(tmp_path / "sig"),
                  "-pkeyopt", DISTID)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert b"Verified Successfully" in ok.stdout
    # With a custom ID on both sides.
    (tmp_path / "sig2").write_bytes(key.sign(msg.read_bytes(), b"ALICE123@YAHOO.COM"))
    ok2 = _openssl("pkeyutl", "-verify", "-in", str(msg), "-rawin", "-digest", "sm3", "-pubin",
                   "-inkey", str(tmp_path / "pub.pem"), "-sigfile", str(tmp_path / "sig2"),
                   "-pkeyopt", "distid:ALICE123@YAHOO.COM")  # fmt: skip
    assert ok2.returncode == 0, ok2.stderr
    # And OpenSSL refuses it when the data differs.
    msg.write_bytes(b"dispatch batch 43")
    bad = _openssl("pkeyutl", "-verify", "-in", str(msg), "-rawin", "-digest", "sm3", "-pubin",
                   "-inkey", str(tmp_path / "pub.pem"), "-sigfile", str(tmp_path / "sig"),
                   "-pkeyopt", DISTID)  # fmt: skip
    assert bad.returncode != 0


def test_we_verify_openssl_signature_and_load_its_keys(openssl_sm2: str, tmp_path: Path) -> None:
    keyf, pubf, msg, sig = (tmp_path / n for n in ("key.pem", "pub.pem", "msg", "sig"))
    assert _openssl("genpkey", "-algorithm", "SM2", "-out", str(keyf)).returncode == 0
    assert _openssl("pkey", "-in", str(keyf), "-pubout", "-out", str(pubf)).returncode == 0
    msg.write_bytes(b"set-point 3.5 MW")
    r = _openssl("pkeyutl", "-sign", "-in", str(msg), "-rawin", "-digest", "sm3", "-inkey", str(keyf),
                 "-out", str(sig), "-pkeyopt", DISTID)  # fmt: skip
    assert r.returncode == 0, r.stderr
    priv = sm2.load_private_key(keyf.read_bytes())
    pub = sm2.load_public_key(pubf.read_bytes())
    assert priv.public_key == pub
    pub.verify(sig.read_bytes(), msg.read_bytes())
    with pytest.raises(BadSignature):
        pub.verify(sig.read_bytes(), msg.read_bytes() + b"!")
    # OpenSSL's default (empty) ID is a different Z: it only verifies with ID b"".
    r = _openssl("pkeyutl", "-sign", "-in", str(msg), "-rawin", "-digest", "sm3", "-inkey", str(keyf),
                 "-out", str(sig))  # fmt: skip
    assert r.returncode == 0
    pub.verify(sig.read_bytes(), msg.read_bytes(), b"")
    with pytest.raises(BadSignature):
        pub.verify(sig.read_bytes(), msg.read_bytes())
    # DER and SEC1 forms written by OpenSSL load too.
    der = _openssl("pkey", "-in", str(keyf), "-outform", "DER").stdout
    assert sm2.load_private_key(der).to_bytes() == priv.to_bytes()
    sec1 = _openssl("ec", "-in", str(keyf)).stdout
    if b"EC PRIVATE KEY" in sec1:
        assert sm2.load_private_key(sec1).to_bytes() == priv.to_bytes()


def test_openssl_loads_our_keys(openssl_sm2: str, tmp_path: Path) -> None:
    key = SM2PrivateKey.generate()
    (tmp_path / "key.pem").write_bytes(key.to_pem())
    out = _openssl("pkey", "-in", str(tmp_path / "key.pem"), "-pubout")
    assert out.returncode == 0, out.stderr
    assert sm2.load_public_key(out.stdout) == key.public_key
    text = _openssl("pkey", "-in", str(tmp_path / "key.pem"), "-noout", "-text").stdout.decode()
    assert "SM2" in text
    # OpenSSL signs with our key file; we verify.
    (tmp_path / "m").write_bytes(b"m")
    r = _openssl("pkeyutl", "-sign", "-in", str(tmp_path / "m"), "-rawin", "-digest", "sm3",
                 "-inkey", str(tmp_path / "key.pem"), "-out", str(tmp_path / "s"), "-pkeyopt", DISTID)  # fmt: skip
    assert r.returncode == 0, r.stderr
    key.public_key.verify((tmp_path / "s").read_bytes(), b"m")


def test_encryption_interop_both_ways(openssl_sm2: str, tmp_path: Path) -> None:
    key = SM2PrivateKey.generate()
    (tmp_path / "key.pem").write_bytes(key.to_pem())
    (tmp_path / "pub.pem").write_bytes(key.public_key.to_pem())
    secret = b"0123456789abcdef"
    # OpenSSL encrypts (GM/T 0009 DER), we decrypt.
    enc = _openssl(
        "pkeyutl", "-encrypt", "-pubin", "-inkey", str(tmp_path / "pub.pem"), input=secret
    )
    assert enc.returncode == 0, enc.stderr
    assert key.decrypt(sm2.ciphertext_from_der(enc.stdout)) == secret
    # We encrypt, OpenSSL decrypts.
    der = sm2.ciphertext_to_der(key.public_key.encrypt(secret))
    dec = _openssl("pkeyutl", "-decrypt", "-inkey", str(tmp_path / "key.pem"), input=der)
    assert dec.returncode == 0, dec.stderr
    assert dec.stdout == secret
