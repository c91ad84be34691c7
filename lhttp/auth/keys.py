"""
The keys a node trusts for JWTs, each bound to its algorithm family
(docs/authentication.rst): an HMAC secret verifies HS256/384/512 only, an
RSA key RS*/PS*, an EC key the ES algorithm of its curve, an Ed25519 or
Ed448 key EdDSA. A leaf module (L{lhttp.config} checks C{--auth-jwt-public-key}
files with it).
"""

import attr
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.x509 import load_pem_x509_certificate

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EDDSA_ALGORITHMS = ("EdDSA",)
# An EC key signs with the one algorithm of its curve.
EC_ALGORITHMS = {
    "secp256r1": ("ES256",),
    "secp384r1": ("ES384",),
    "secp521r1": ("ES512",),
    "secp256k1": ("ES256K",),
}


@attr.s(frozen=True)
class Key:
    """
    One key the node trusts.

    @ivar key: what PyJWT verifies with: the secret's L{bytes}, or a
        C{cryptography} public key.
    @ivar algorithms: the algorithms it may verify (its family only).
    @ivar kid: its key id (JWKS keys), or L{None}.
    """

    key = attr.ib()
    algorithms = attr.ib()
    kid = attr.ib(default=None)


def algorithmsOf(key):
    """
    The algorithm family of a public key.

    @return: a L{tuple} of algorithm names, empty for a key of no
        supported kind.
    """
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        return EC_ALGORITHMS.get(key.curve.name, ())
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return EDDSA_ALGORITHMS
    return ()


def loadPublicKey(pem, where="a public key"):
    """
    A PEM public key (or an X.509 certificate's) as a L{Key}.

    @param where: the file or option, for the error.
    @raise ValueError: not a PEM public key of a supported kind.
    """
    if isinstance(pem, str):
        pem = pem.encode("utf-8")
    try:
        if b"-----BEGIN CERTIFICATE-----" in pem:
            key = load_pem_x509_certificate(pem).public_key()
        else:
            key = load_pem_public_key(pem)
    except Exception:
        raise ValueError(f"{where}: not a PEM public key (a private key is refused too)") from None
    algorithms = algorithmsOf(key)
    if not algorithms:
        raise ValueError(f"{where}: an RSA, EC (P-256, P-384, P-521, secp256k1), Ed25519 or "
                         "Ed448 public key is needed")
    return Key(key, algorithms)


def secretKey(secret):
    """
    An HMAC secret as a L{Key} (HS256, HS384, HS512 only).
    """
    if isinstance(secret, str):
        secret = secret.encode("utf-8", "surrogateescape")
    return Key(secret, HMAC_ALGORITHMS)


def jwkKey(document):
    """
    One JWK of a JWKS document as a L{Key}, or L{None} for one the node
    does not use (a secret, an encryption key, an unknown kind).
    """
    if not isinstance(document, dict) or document.get("kty") not in ("RSA", "EC", "OKP"):
        return None
    if document.get("use", "sig") != "sig":
        return None
    try:
        key = jwt.PyJWK(document).key
    except Exception:
        return None
    if not hasattr(key, "verify") and hasattr(key, "public_key"):
        # A JWK with its private part: only the public one is needed.
        key = key.public_key()
    algorithms = algorithmsOf(key)
    alg = document.get("alg")
    if alg is not None:
        # A key that names its algorithm verifies only that one.
        algorithms = (alg,) if alg in algorithms else ()
    kid = document.get("kid")
    if not algorithms or (kid is not None and not isinstance(kid, str)):
        return None
    return Key(key, algorithms, kid)
