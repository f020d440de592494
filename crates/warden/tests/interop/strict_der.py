#!/usr/bin/env python3
"""Reads certificates that Warden issued with a strict DER parser nobody at Warden wrote.

Python's ``cryptography`` parses X.509 with a Rust ASN.1 library that refuses what DER forbids
(X.690 §11), for instance a DEFAULT value written out (``cA FALSE`` in basic constraints). For
each certificate this script:

* loads it with ``x509.load_der_x509_certificate``;
* parses every extension (``list(cert.extensions)``) and looks up basic constraints, key usage,
  the subject alternative names and, where present, extended key usage and the subject and
  authority key identifiers by their classes;
* compares each extension's bytes with ``cryptography``'s own DER encoding of the value it
  read (``ExtensionType.public_bytes``). That catches what the parser tolerates but DER does
  not allow either, such as trailing zero bits in key usage (X.690 §11.2.2, RFC 5280
  Appendix B).

Usage: ``strict_der.py NAME=FILE.der ...`` prints one JSON object: for each NAME, either what
was found (``extensions``, ``basic_constraints``, ``key_usage``, ``uris``,
``extended_key_usage``, ``subject_key_id``, ``authority_key_id``, ``non_canonical``) or
``{"error": "..."}`` when the certificate or one of its extensions does not parse. The caller
decides what must hold.
``strict_der.py --check-packages`` only checks that ``cryptography`` imports.
Exits 3 when it does not, 2 on bad arguments.

Install: ``pip install cryptography`` (``pip install 'pyjwt[crypto]'`` brings it too).
"""

import json
import sys

MISSING_PACKAGES = 3
BAD_USAGE = 2

try:
    from cryptography import x509
except ImportError as e:
    print(f"missing python package: {e.name}", file=sys.stderr)
    sys.exit(MISSING_PACKAGES)


def tlv(data, pos):
    """The DER element at ``pos``: (tag, start of its contents, end). Definite, minimal
    lengths only (X.690 §10.1)."""
    if pos + 2 > len(data):
        raise ValueError(f"truncated element at offset {pos}")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise ValueError(f"multi-byte tag at offset {pos}")
    first = data[pos + 1]
    if first < 0x80:
        length, start = first, pos + 2
    else:
        count = first & 0x7F
        if count == 0:
            raise ValueError(f"indefinite length at offset {pos}")
        raw = data[pos + 2 : pos + 2 + count]
        if len(raw) != count or raw[0] == 0 or (count == 1 and raw[0] < 0x80):
            raise ValueError(f"length not in its shortest form at offset {pos}")
        length, start = int.from_bytes(raw, "big"), pos + 2 + count
    if start + length > len(data):
        raise ValueError(f"element at offset {pos} runs past the end")
    return tag, start, start + length


def children(data, start, end):
    """The elements inside a constructed element's contents."""
    pos = start
    while pos < end:
        tag, inner, after = tlv(data, pos)
        yield tag, inner, after
        pos = after


def dotted(oid):
    """An OBJECT IDENTIFIER's contents as a dotted string."""
    arcs, value = [], 0
    for byte in oid:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first] + arcs[1:])


def raw_extensions(der):
    """Each extension's OID and ``extnValue`` contents, exactly as the certificate has them
    (RFC 5280 §4.1: Certificate > TBSCertificate > [3] Extensions)."""
    _, start, end = tlv(der, 0)
    _, tbs_start, tbs_end = next(children(der, start, end))
    out = {}
    for tag, inner, after in children(der, tbs_start, tbs_end):
        if tag != 0xA3:
            continue
        _, seq_start, seq_end = tlv(der, inner)
        for _, ext_start, ext_end in children(der, seq_start, seq_end):
            parts = list(children(der, ext_start, ext_end))
            (_, oid_start, oid_end), (_, value_start, value_end) = parts[0], parts[-1]
            out[dotted(der[oid_start:oid_end])] = der[value_start:value_end]
    return out


def optional(cert, cls):
    try:
        return cert.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        return None


def inspect(der):
    """What a strict reader finds in one certificate."""
    cert = x509.load_der_x509_certificate(der)
    extensions = list(cert.extensions)
    raw = raw_extensions(der)
    non_canonical = []
    for ext in extensions:
        canonical = ext.value.public_bytes()
        encoded = raw.get(ext.oid.dotted_string)
        if encoded != canonical:
            non_canonical.append(
                {
                    "oid": ext.oid.dotted_string,
                    "encoded": encoded.hex() if encoded is not None else None,
                    "canonical": canonical.hex(),
                }
            )
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    eku = optional(cert, x509.ExtendedKeyUsage)
    ski = optional(cert, x509.SubjectKeyIdentifier)
    aki = optional(cert, x509.AuthorityKeyIdentifier)
    return {
        "extensions": [
            {
                "oid": ext.oid.dotted_string,
                "type": type(ext.value).__name__,
                "critical": ext.critical,
            }
            for ext in extensions
        ],
        "basic_constraints": {
            "critical": bc.critical,
            "ca": bc.value.ca,
            "path_length": bc.value.path_length,
        },
        "key_usage": {
            "critical": ku.critical,
            "digital_signature": ku.value.digital_signature,
            "key_cert_sign": ku.value.key_cert_sign,
            "crl_sign": ku.value.crl_sign,
        },
        "uris": san.value.get_values_for_type(x509.UniformResourceIdentifier),
        "extended_key_usage": (
            [oid.dotted_string for oid in eku.value] if eku is not None else None
        ),
        "subject_key_id": ski.value.digest.hex() if ski is not None else None,
        "authority_key_id": (
            aki.value.key_identifier.hex()
            if aki is not None and aki.value.key_identifier is not None
            else None
        ),
        "non_canonical": non_canonical,
    }


def main(args):
    if args == ["--check-packages"]:
        return 0
    if not args or any("=" not in a for a in args):
        print(__doc__, file=sys.stderr)
        return BAD_USAGE
    found = {}
    for arg in args:
        name, path = arg.split("=", 1)
        with open(path, "rb") as f:
            der = f.read()
        try:
            found[name] = inspect(der)
        except Exception as e:  # noqa: BLE001 (the caller reports any refusal)
            found[name] = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(found, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
