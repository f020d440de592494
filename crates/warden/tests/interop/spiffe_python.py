#!/usr/bin/env python3
"""A SPIFFE workload that nobody at Warden wrote, run against Warden's Workload API.

It proves that Python workloads get and use their identity through the standard SPIFFE
Workload API on Warden's Unix socket, with the libraries used exactly as their users do (no
channel options, no patches):

* py-spiffe (``spiffe.WorkloadApiClient``, pointed at the socket by ``SPIFFE_ENDPOINT_SOCKET``)
  fetches the X.509-SVID, a JWT-SVID, the X.509 and JWT bundle sets, validates a JWT-SVID
  through the API, and watches the X.509 context (``stream_x509_contexts``) across a CA
  rotation that the caller drives.
* ``grpcio`` with the stubs py-spiffe ships (``spiffe._proto``) calls the API directly: with
  its default channel options (it then sends the percent-encoded socket path as the HTTP/2
  ``:authority``), with the raw socket path as the authority (what grpc-java and grpcurl send)
  and with ``localhost`` (what grpc-go sends).

Modes:

* ``check``: exits 3 when a package does not import, else prints one JSON line with the
  interpreter's executable as the kernel sees it (``/proc/self/exe``), its uid and the
  library versions.
* ``unregistered``: this interpreter matches no registration entry; every call must be
  refused with ``PermissionDenied`` (SPIFFE_Workload_API.md §5.2.1, §6.2.1).
* ``registered``: the full tour; ends with the watch.

Output: one JSON object per line on stdout, flushed at once, so the caller can follow:
``{"phase": "result", "name": …, "ok": …, …}`` per check, then (``registered``)
``{"phase": "watching", …}`` once the first X.509 context arrived — the caller then rotates
the CA (prepare, activate) — and ``{"phase": "rotated", …}`` when an X.509-SVID issued by
another CA arrived on the same stream, or ``{"phase": "watch_failed", …}``. The last line is
``{"phase": "done", "failed": [names]}``. Exits 0 when every check passed, 1 otherwise.

Install: ``pip install spiffe==0.3.2`` (brings grpcio, protobuf, cryptography, pyjwt).
"""

import argparse
import base64
import json
import os
import queue
import sys

MISSING_PACKAGES = 3

try:
    import grpc
    import jwt
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.serialization import Encoding
    from importlib.metadata import version
    from spiffe import JwtSvid, TrustDomain, WorkloadApiClient
    from spiffe._proto import workload_pb2, workload_pb2_grpc
    from spiffe.workloadapi.errors import WorkloadApiError
except ImportError as e:
    print(f"missing python package: {e.name}", file=sys.stderr)
    sys.exit(MISSING_PACKAGES)

# The security header every Workload API call must carry (SPIFFE_Workload_Endpoint.md §3).
HEADER = [("workload.spiffe.io", "true")]
TRUST_DOMAIN = "example.org"


class Failed(Exception):
    """A property of the server's answers that does not hold; `data` is reported with it."""

    def __init__(self, what, **data):
        super().__init__(what)
        self.data = data


def emit(phase, **fields):
    print(json.dumps({"phase": phase, **fields}), flush=True)


def b64(cert):
    return base64.b64encode(cert.public_bytes(Encoding.DER)).decode()


def rpc_error(err):
    """The gRPC status of a failed call: `err`, or the RpcError a py-spiffe error wraps."""
    seen = err
    while seen is not None:
        if isinstance(seen, grpc.RpcError) and isinstance(seen, grpc.Call):
            return {
                "code": seen.code().name,
                "details": seen.details(),
                "debug": seen.debug_error_string(),
            }
        seen = seen.__cause__
    return {"code": None, "details": f"{type(err).__name__}: {err}"}


class Checks:
    """Runs named checks, each independent of the others' outcome, and reports each."""

    def __init__(self):
        self.failed = []

    def run(self, name, check):
        try:
            data = check() or {}
        except Failed as e:
            self.failed.append(name)
            emit("result", name=name, ok=False, error=str(e), **e.data)
            return None
        except Exception as e:  # noqa: BLE001 (an unexpected error is this check's failure)
            self.failed.append(name)
            emit("result", name=name, ok=False, error=f"{type(e).__name__}: {e}", **rpc_error(e))
            return None
        emit("result", name=name, ok=True, **data)
        return data


def expect_code(call, want):
    """Runs `call`, which must fail with gRPC status `want`; returns that status."""
    try:
        got = call()
    except (grpc.RpcError, WorkloadApiError) as e:
        status = rpc_error(e)
        if status["code"] != want:
            raise Failed(f"expected {want}, got {status['code']}", **status) from e
        return status
    raise Failed(f"expected {want}, the call succeeded: {got!r}")


def issuing_authority(svid, authorities):
    """The bundle authority the SVID's chain ends at (every link's signature checked)."""
    chain = svid.cert_chain
    for child, parent in zip(chain, chain[1:]):
        child.verify_directly_issued_by(parent)
    for ca in authorities:
        try:
            chain[-1].verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    raise Failed(
        "the X.509-SVID does not chain to the bundle",
        bundle=sorted(b64(c) for c in authorities),
    )


def own_authorities(bundle_set):
    bundle = bundle_set.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
    if bundle is None:
        raise Failed(f"no bundle for {TRUST_DOMAIN}")
    return bundle.x509_authorities


def describe_context(ctx):
    """What the caller compares: the SVID's SPIFFE ID, the CA it chains to, the bundle."""
    svid = ctx.default_svid
    authorities = own_authorities(ctx.x509_bundle_set)
    return {
        "spiffe_id": str(svid.spiffe_id),
        "serial": format(svid.leaf.serial_number, "x"),
        "issuer_ca": b64(issuing_authority(svid, authorities)),
        "bundle": sorted(b64(c) for c in authorities),
    }


def unverified_audience(token):
    aud = jwt.decode(token, options={"verify_signature": False})["aud"]
    return sorted([aud] if isinstance(aud, str) else aud)


def channels(socket):
    """The three `:authority` flavours of a Unix-socket call, by name."""
    return [
        ("default", []),
        ("raw_path", [("grpc.default_authority", socket)]),
        ("localhost", [("grpc.default_authority", "localhost")]),
    ]


def first_message(stream):
    try:
        return next(stream)
    finally:
        stream.cancel()


def unregistered(args):
    checks = Checks()
    client = WorkloadApiClient(default_timeout=args.timeout)
    # SPIFFE_Workload_API.md §5.2.1 and §6.2.1: a caller entitled to nothing is refused with
    # PermissionDenied.
    checks.run(
        "unregistered_x509_svid",
        lambda: expect_code(client.fetch_x509_svid, "PERMISSION_DENIED"),
    )
    checks.run(
        "unregistered_jwt_svid",
        lambda: expect_code(
            lambda: client.fetch_jwt_svid({args.audience}), "PERMISSION_DENIED"
        ),
    )
    client.close()
    with grpc.insecure_channel("unix:" + args.socket) as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
        checks.run(
            "unregistered_grpcio_x509_svid",
            lambda: expect_code(
                lambda: first_message(
                    stub.FetchX509SVID(
                        workload_pb2.X509SVIDRequest(), metadata=HEADER, timeout=args.timeout
                    )
                ),
                "PERMISSION_DENIED",
            ),
        )
    return checks


def registered(args):
    checks = Checks()
    client = WorkloadApiClient(default_timeout=args.timeout)

    # 1. The one-shot calls of py-spiffe's client.
    def x509_svid():
        svid = client.fetch_x509_svid()
        ctx = client.fetch_x509_context()
        described = describe_context(ctx)
        if str(svid.spiffe_id) != described["spiffe_id"]:
            raise Failed("fetch_x509_svid and fetch_x509_context disagree", **described)
        return described

    checks.run("x509_svid", x509_svid)

    token = {}

    def jwt_svid():
        svid = client.fetch_jwt_svid({args.audience})
        token["svid"] = svid.token
        return {
            "spiffe_id": str(svid.spiffe_id),
            "audience": sorted(svid.audience),
            "kid": jwt.get_unverified_header(svid.token).get("kid"),
        }

    checks.run("jwt_svid", jwt_svid)

    def validate():
        if "svid" not in token:
            raise Failed("no JWT-SVID to validate")
        svid = client.validate_jwt_svid(token["svid"], args.audience)
        return {"spiffe_id": str(svid.spiffe_id), "audience": sorted(svid.audience)}

    checks.run("validate_jwt_svid", validate)

    def validate_wrong_audience():
        if "svid" not in token:
            raise Failed("no JWT-SVID to validate")
        return expect_code(
            lambda: client.validate_jwt_svid(token["svid"], args.wrong_audience),
            "INVALID_ARGUMENT",
        )

    checks.run("validate_jwt_svid_wrong_audience", validate_wrong_audience)

    def x509_bundles():
        bundles = client.fetch_x509_bundles()
        return {
            "trust_domains": sorted(b.trust_domain.name for b in bundles.bundles),
            "authorities": sorted(b64(c) for c in own_authorities(bundles)),
        }

    checks.run("x509_bundles", x509_bundles)

    def jwt_bundles():
        bundles = client.fetch_jwt_bundles()
        own = bundles.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
        if own is None:
            raise Failed(f"no JWT bundle for {TRUST_DOMAIN}")
        data = {
            "trust_domains": sorted(b.trust_domain.name for b in bundles.bundles),
            "kids": sorted(own.jwt_authorities),
        }
        # The bundle verifies the JWT-SVID offline too, with py-spiffe's own validation.
        if "svid" in token:
            svid = JwtSvid.parse_and_validate(token["svid"], own, {args.audience})
            data["offline_spiffe_id"] = str(svid.spiffe_id)
        return data

    checks.run("jwt_bundles", jwt_bundles)

    # 3., 4. and 5.: grpcio itself, with each `:authority` flavour.
    for flavour, options in channels(args.socket):
        with grpc.insecure_channel("unix:" + args.socket, options=options) as channel:
            stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)

            def fetch_jwt(stub=stub):
                resp = stub.FetchJWTSVID(
                    workload_pb2.JWTSVIDRequest(audience=[args.audience]),
                    metadata=HEADER,
                    timeout=args.timeout,
                )
                if not resp.svids:
                    raise Failed("no JWT-SVID in the answer")
                return {
                    "spiffe_id": resp.svids[0].spiffe_id,
                    "audience": unverified_audience(resp.svids[0].svid),
                }

            def fetch_bundles(stub=stub):
                resp = first_message(
                    stub.FetchX509Bundles(
                        workload_pb2.X509BundlesRequest(), metadata=HEADER, timeout=args.timeout
                    )
                )
                return {"trust_domains": sorted(resp.bundles)}

            checks.run(f"grpcio_{flavour}_jwt_svid", fetch_jwt)
            checks.run(f"grpcio_{flavour}_x509_bundles", fetch_bundles)
            # SPIFFE_Workload_Endpoint.md §6 (and §3): a request without the security header
            # MUST be answered InvalidArgument — the refusal must come from the Workload API,
            # not from the transport.
            checks.run(
                f"grpcio_{flavour}_no_header_jwt_svid",
                lambda stub=stub: expect_code(
                    lambda: stub.FetchJWTSVID(
                        workload_pb2.JWTSVIDRequest(audience=[args.audience]),
                        timeout=args.timeout,
                    ),
                    "INVALID_ARGUMENT",
                ),
            )
            checks.run(
                f"grpcio_{flavour}_no_header_x509_svid",
                lambda stub=stub: expect_code(
                    lambda: first_message(
                        stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), timeout=args.timeout)
                    ),
                    "INVALID_ARGUMENT",
                ),
            )

    # 2. The watch, last: the caller rotates the CA once it reads `watching`.
    watch(client, args, checks)
    client.close()
    return checks


def watch(client, args, checks):
    updates = queue.Queue()
    # retry_connect=False: py-spiffe does not open a second stream behind our back, so every
    # context that arrives came on this one stream (an end or error is reported instead).
    handler = client.stream_x509_contexts(
        on_success=lambda ctx: updates.put(("ctx", ctx)),
        on_error=lambda err: updates.put(("error", err)),
        retry_connect=False,
    )
    try:
        watch_stream(updates, args, checks)
    finally:
        handler.cancel()


def next_update(updates, timeout, waiting_for):
    try:
        kind, value = updates.get(timeout=timeout)
    except queue.Empty:
        raise Failed(f"no X.509 context within {timeout} s ({waiting_for})") from None
    if kind == "error":
        raise Failed(f"the stream failed ({waiting_for}): {value}", **rpc_error(value))
    try:
        return describe_context(value)
    except Failed:
        raise
    except Exception as e:  # noqa: BLE001 (reported as the watch's failure, not a traceback)
        raise Failed(f"a streamed X.509 context is unusable: {type(e).__name__}: {e}") from e


def watch_stream(updates, args, checks):
    try:
        first = next_update(updates, args.timeout, "the first context")
    except Failed as e:
        checks.failed.append("watch")
        emit("watch_failed", error=str(e), **e.data)
        return
    emit("watching", **first)
    received = 0
    while True:
        try:
            ctx = next_update(updates, args.rotation_timeout, "an SVID from the new CA")
        except Failed as e:
            checks.failed.append("watch")
            emit("watch_failed", error=str(e), updates=received, **e.data)
            return
        received += 1
        emit("update", **ctx)
        if ctx["issuer_ca"] != first["issuer_ca"]:
            emit("rotated", updates=received, **ctx)
            return


def check_packages():
    emit(
        "check",
        exe=os.readlink("/proc/self/exe"),
        uid=os.getuid(),
        versions={
            name: version(name) for name in ["spiffe", "grpcio", "protobuf", "cryptography"]
        },
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["check", "unregistered", "registered"])
    p.add_argument("--socket", help="absolute path of the Workload API socket (for grpcio)")
    p.add_argument("--audience", default="warden-test")
    p.add_argument("--wrong-audience", default="someone-else")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline of each call (s)")
    p.add_argument(
        "--rotation-timeout",
        type=float,
        default=60.0,
        help="how long the watch waits for each update after `watching` (s)",
    )
    args = p.parse_args()
    if args.mode == "check":
        check_packages()
        return 0
    if not args.socket or not os.path.isabs(args.socket):
        p.error("--socket must be an absolute path")
    if not os.environ.get("SPIFFE_ENDPOINT_SOCKET"):
        p.error("SPIFFE_ENDPOINT_SOCKET must point py-spiffe at the socket")
    emit("start", pid=os.getpid(), exe=os.readlink("/proc/self/exe"))
    checks = unregistered(args) if args.mode == "unregistered" else registered(args)
    emit("done", failed=checks.failed)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
