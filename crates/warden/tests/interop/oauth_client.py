#!/usr/bin/env python3
"""An OAuth 2.0 client that nobody at Warden wrote, run against a Warden server.

It proves that off-the-shelf libraries can use Warden's broker as written in the RFCs:

* Authlib (``authlib.integrations.requests_client.OAuth2Session``) does the protocol side:
  the RFC 8693 token exchange (``fetch_token`` with the token-exchange grant type), the
  RFC 7662 introspection (``introspect_token``, authenticated with the resource server's
  bearer token) and the RFC 7009 revocation (``revoke_token``). OAuth errors surface as
  Authlib's ``OAuthError``.
* PyJWT validates the issued access token as a resource server would (RFC 9068 §4): the key
  from the JWK set that OpenID discovery names (``jwt.PyJWKClient``), ES256 only, the ``typ``
  header, issuer, audience, expiry and the required claims.
* The discovery document is read with the same Authlib session (a ``requests`` session).

Inputs (command-line options, or the environment variables named in ``--help``; tokens are
better passed through the environment, where other users cannot read them):
the server URL, the subject token (a JWT-SVID whose audience is the server's issuer URL),
an API token with the enforcer role (for introspection), the audience and the scopes to ask
for. Prints one ``ok:`` line per property verified and a ``deviation:`` line for each departure
from an RFC that the libraries tolerate; exits 1 at the first failure and 3 when a Python
package is missing.

Install: ``pip install authlib==1.9.10 'pyjwt[crypto]==2.15.1' requests==2.34.2``.
"""

import argparse
import os
import sys
import time

MISSING_PACKAGES = 3

try:
    import authlib
    import cryptography  # noqa: F401 (PyJWT needs it for ES256)
    import jwt
    import requests
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.requests_client import OAuth2Session
    from requests.auth import AuthBase
except ImportError as e:
    print(f"missing python package: {e.name}", file=sys.stderr)
    sys.exit(MISSING_PACKAGES)

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
TYPE_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
# RFC 9068 §2.2: claims every JWT access token carries.
REQUIRED_CLAIMS = ["iss", "exp", "aud", "sub", "client_id", "iat", "jti"]
TIMEOUT = 30


class Failed(Exception):
    """A property of the server's answers that does not hold."""


def check(cond, what):
    """Prints `ok: what` when `cond` holds, fails with `what` otherwise."""
    if not cond:
        raise Failed(what)
    print(f"ok: {what}")


class Bearer(AuthBase):
    """`Authorization: Bearer <token>` (RFC 6750 §2.1) for the introspection call."""

    def __init__(self, token):
        self.token = token

    def __call__(self, req):
        req.headers["Authorization"] = f"Bearer {self.token}"
        return req


def deviation(what):
    """A departure from an RFC that the libraries here tolerate: reported, not failed."""
    print(f"deviation: {what}")


def description_ok(text):
    """RFC 6749 §5.2: error_description is limited to %x20-21 / %x23-5B / %x5D-7E."""
    return all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in text)


def scope_set(value):
    return set((value or "").split())


def audiences(value):
    """RFC 7519 §4.1.3 / RFC 7662 §2.2: `aud` is a string or an array of strings."""
    return {value} if isinstance(value, str) else set(value or [])


def parse_args():
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--check-packages",
        action="store_true",
        help="only check that the packages import: exit 0, or 3 when one is missing",
    )
    p.add_argument("--server", default=env("WARDEN_URL"), help="env WARDEN_URL")
    p.add_argument(
        "--subject-token",
        default=env("WARDEN_SUBJECT_TOKEN"),
        help="a JWT-SVID for the issuer URL (env WARDEN_SUBJECT_TOKEN)",
    )
    p.add_argument(
        "--enforcer-token",
        default=env("WARDEN_ENFORCER_TOKEN"),
        help="API token with role enforcer (env WARDEN_ENFORCER_TOKEN)",
    )
    p.add_argument("--audience", default=env("WARDEN_AUDIENCE"), help="env WARDEN_AUDIENCE")
    p.add_argument(
        "--scope", default=env("WARDEN_SCOPE"), help="space-separated (env WARDEN_SCOPE)"
    )
    p.add_argument(
        "--client-id",
        default=env("WARDEN_CLIENT_ID"),
        help="the agent's SPIFFE ID: sent as client_id, expected as sub and client_id "
        "(env WARDEN_CLIENT_ID)",
    )
    p.add_argument(
        "--unknown-scope",
        default=env("WARDEN_UNKNOWN_SCOPE", "deploy:prod"),
        help="a scope the server does not issue (env WARDEN_UNKNOWN_SCOPE)",
    )
    p.add_argument(
        "--denied-scope",
        default=env("WARDEN_DENIED_SCOPE"),
        help="a known scope the policy refuses this agent (env WARDEN_DENIED_SCOPE)",
    )
    p.add_argument("--task", default=env("WARDEN_TASK"), help="Warden's task (env WARDEN_TASK)")
    p.add_argument(
        "--actor-token",
        default=env("WARDEN_ACTOR_TOKEN"),
        help="a sub-agent's JWT-SVID: also delegate to it (RFC 8693 §1.1) (env WARDEN_ACTOR_TOKEN)",
    )
    p.add_argument(
        "--actor-id",
        default=env("WARDEN_ACTOR_ID"),
        help="the sub-agent's SPIFFE ID (env WARDEN_ACTOR_ID)",
    )
    p.add_argument(
        "--delegated-scope",
        default=env("WARDEN_DELEGATED_SCOPE"),
        help="the narrower scope to delegate (env WARDEN_DELEGATED_SCOPE)",
    )
    args = p.parse_args()
    if args.check_packages:
        sys.exit(0)
    missing = [
        name
        for name in ["server", "subject_token", "enforcer_token", "audience", "scope", "client_id"]
        if not getattr(args, name)
    ]
    if missing:
        p.error("missing: " + ", ".join("--" + m.replace("_", "-") for m in missing))
    if args.actor_token and not (args.actor_id and args.delegated_scope):
        p.error("--actor-token needs --actor-id and --delegated-scope")
    args.server = args.server.rstrip("/")
    return args


def main():
    args = parse_args()
    print(
        f"libraries: authlib {authlib.__version__}, pyjwt {jwt.__version__}, "
        f"requests {requests.__version__}"
    )
    # Token-endpoint responses as Authlib received them, for the header checks.
    responses = []

    def keep(resp):
        responses.append(resp)
        return resp

    # A public client (RFC 6749 §2.1): it proves who it is with the subject token, and names
    # itself with client_id (token_endpoint_auth_method "none").
    session = OAuth2Session(
        client_id=args.client_id,
        token_endpoint_auth_method="none",
        revocation_endpoint_auth_method="none",
        default_timeout=TIMEOUT,
    )
    # Everything is on this machine: no proxy from the environment.
    session.trust_env = False
    session.register_compliance_hook("access_token_response", keep)

    # OpenID Connect Discovery 1.0 §4: the configuration names the issuer and the key set.
    resp = session.get(f"{args.server}/.well-known/openid-configuration", withhold_token=True)
    check(resp.status_code == 200, "discovery document is served")
    conf = resp.json()
    issuer = conf.get("issuer")
    check(issuer == args.server, f"discovery issuer is the server URL ({issuer})")
    check(bool(conf.get("jwks_uri")), f"discovery names jwks_uri ({conf.get('jwks_uri')})")
    # RFC 8414 §3: the authorization server metadata names the endpoints the client uses.
    resp = session.get(
        f"{args.server}/.well-known/oauth-authorization-server", withhold_token=True
    )
    check(resp.status_code == 200, "RFC 8414 authorization server metadata is served")
    meta = resp.json()
    check(meta.get("issuer") == issuer, "... for the same issuer")
    check(
        TOKEN_EXCHANGE in meta.get("grant_types_supported", []),
        "... and lists the token-exchange grant",
    )
    endpoints = {}
    for name in ["token_endpoint", "introspection_endpoint", "revocation_endpoint"]:
        check(bool(meta.get(name)), f"... and names its {name} ({meta.get(name)})")
        endpoints[name] = meta[name]

    def exchange(scope):
        return session.fetch_token(
            endpoints["token_endpoint"],
            grant_type=TOKEN_EXCHANGE,
            subject_token=args.subject_token,
            subject_token_type=TYPE_JWT,
            requested_token_type=TYPE_ACCESS_TOKEN,
            audience=args.audience,
            scope=scope,
            task=args.task,
        )

    # An OAuth error surfaces through Authlib's error type (RFC 6749 §5.2).
    def refused(scope, want_error, want_status):
        responses.clear()
        try:
            token = exchange(scope)
        except OAuthError as e:
            check(
                e.error == want_error and bool(e.description),
                f"scope `{scope}` is refused with {want_error} through authlib's OAuthError "
                f"(got {e.error}: {e.description})",
            )
            status = responses[-1].status_code if responses else None
            check(status == want_status, f"... with HTTP {want_status} (got {status})")
            check(
                description_ok(e.description),
                f"... and its error_description keeps to RFC 6749 §5.2's characters "
                f"(got {e.description})",
            )
            return
        raise Failed(f"scope `{scope}` was granted: {token}")

    refused(f"{args.scope} {args.unknown_scope}", "invalid_scope", 400)
    if args.denied_scope:
        refused(args.denied_scope, "access_denied", 403)

    # RFC 8693 §2.1: the exchange itself.
    responses.clear()
    try:
        token = exchange(args.scope)
    except OAuthError as e:
        raise Failed(f"token exchange refused: {e.error}: {e.description}") from e
    resp = responses[-1]
    check(resp.status_code == 200, "token exchange answers 200 (RFC 8693 §2.2.1)")
    check(
        resp.headers.get("Content-Type", "").startswith("application/json"),
        "token response is application/json (RFC 6749 §5.1)",
    )
    check(
        "no-store" in resp.headers.get("Cache-Control", ""),
        "token response has Cache-Control: no-store (RFC 6749 §5.1)",
    )
    check(
        resp.headers.get("Pragma") == "no-cache",
        "token response has Pragma: no-cache (RFC 6749 §5.1)",
    )
    check(
        token.get("issued_token_type") == TYPE_ACCESS_TOKEN,
        f"issued_token_type is {TYPE_ACCESS_TOKEN} (RFC 8693 §2.2.1)",
    )
    check(
        str(token.get("token_type", "")).lower() == "bearer",
        "token_type is Bearer (RFC 8693 §2.2.1, RFC 6749 §7.1)",
    )
    expires_in = token.get("expires_in")
    check(
        isinstance(expires_in, int) and expires_in > 0,
        f"expires_in is a positive number of seconds ({expires_in})",
    )
    check(not token.is_expired(leeway=0), "authlib sees the token as unexpired")
    check(
        scope_set(token.get("scope")) == scope_set(args.scope),
        f"scope is the one asked for ({token.get('scope')})",
    )
    access_token = token["access_token"]

    # RFC 9068 §4: validation by a resource server, with the keys the authorization server's
    # RFC 8414 metadata names. They are the access-token keys alone (RFC 8725 §3.12): OIDC
    # discovery's jwks_uri has the JWT-SVID keys, a different set.
    check(
        bool(meta.get("jwks_uri")) and meta["jwks_uri"] != conf["jwks_uri"],
        f"RFC 8414 jwks_uri ({meta.get('jwks_uri')}) is not the JWT-SVID key set",
    )
    jwks = jwt.PyJWKClient(meta["jwks_uri"], timeout=TIMEOUT)
    svid_jwks = jwt.PyJWKClient(conf["jwks_uri"], timeout=TIMEOUT)

    def validate(tok, audience, subject):
        """An RFC 9068 §4 resource-server check with PyJWT; raises on any violation."""
        typ = str(jwt.get_unverified_header(tok).get("typ", "")).lower()
        if typ not in ("at+jwt", "application/at+jwt"):
            raise jwt.InvalidTokenError(f"typ `{typ}` is not at+jwt (RFC 9068 §4)")
        return jwt.decode(
            tok,
            jwks.get_signing_key_from_jwt(tok),
            algorithms=["ES256"],
            audience=audience,
            issuer=issuer,
            subject=subject,
            options={"require": REQUIRED_CLAIMS},
        )

    header = jwt.get_unverified_header(access_token)
    check(header.get("typ") == "at+jwt", f"JWT header typ is at+jwt ({header.get('typ')})")
    check(header.get("alg") == "ES256", "JWT header alg is ES256")
    key = jwks.get_signing_key_from_jwt(access_token)
    check(key.key_id == header.get("kid"), f"PyJWKClient found the key {key.key_id} in the JWKS")
    claims = validate(access_token, args.audience, args.client_id)
    check(True, "PyJWT verified signature, iss, aud, sub, exp and the RFC 9068 §2.2 claims")
    check(claims["client_id"] == args.client_id, f"client_id is {args.client_id}")
    check(
        scope_set(claims.get("scope")) == scope_set(args.scope),
        "the scope claim is the granted scope (RFC 9068 §2.2.3)",
    )
    now = time.time()
    check(claims["iat"] <= now + 60 and claims["exp"] > now, "iat is not ahead, exp is ahead")
    if args.task:
        check(claims.get("task") == args.task, f"Warden's `task` went through ({args.task})")
    check(
        abs(claims["exp"] - claims["iat"] - expires_in) <= 5,
        "the token's lifetime (exp - iat) is expires_in",
    )
    # A single changed signature character is refused.
    sig = access_token.rsplit(".", 1)[1]
    tampered = access_token[: -len(sig)] + ("A" if sig[0] != "A" else "B") + sig[1:]
    try:
        jwt.decode(tampered, key, algorithms=["ES256"], audience=args.audience, issuer=issuer)
    except jwt.InvalidSignatureError:
        check(True, "PyJWT refuses the token with a changed signature")
    else:
        raise Failed("PyJWT accepted a tampered token")
    try:
        validate(access_token, "https://other.example", args.client_id)
    except jwt.InvalidAudienceError:
        check(True, "PyJWT refuses the token for another audience")
    else:
        raise Failed("PyJWT accepted the token for another audience")
    # The subject JWT-SVID is not an access token: the RFC 9068 check refuses it.
    try:
        validate(args.subject_token, issuer, args.client_id)
    except jwt.InvalidTokenError as e:
        check(True, f"the RFC 9068 check refuses the JWT-SVID as an access token ({e})")
    else:
        raise Failed("a JWT-SVID passed as an access token")
    # RFC 8725 §3.12: the two kinds are signed with different keys, so a resource server that
    # skipped the typ check would still not find the JWT-SVID's key among the access-token
    # keys, nor an OIDC verifier of JWT-SVIDs the access token's.
    for tok, keyset, what in [
        (args.subject_token, jwks, "the JWT-SVID's key is not an access-token key"),
        (access_token, svid_jwks, "the access token's key is not a JWT-SVID key"),
    ]:
        try:
            keyset.get_signing_key_from_jwt(tok)
        except jwt.PyJWKClientError:
            check(True, f"{what} (RFC 8725 §3.12)")
        else:
            raise Failed(f"not so: {what}")

    # RFC 7662 §2: introspection by a resource server, authenticated with its bearer token.
    def introspect(tok):
        r = session.introspect_token(
            endpoints["introspection_endpoint"],
            token=tok,
            token_type_hint="access_token",
            auth=Bearer(args.enforcer_token),
        )
        check(r.status_code == 200, "introspection answers 200 (RFC 7662 §2.2)")
        check(
            r.headers.get("Content-Type", "").startswith("application/json"),
            "introspection answers application/json (RFC 7662 §2.2)",
        )
        return r.json()

    r = session.introspect_token(
        endpoints["introspection_endpoint"], token=access_token, auth=Bearer("wdn_not-a-token")
    )
    check(
        r.status_code == 401 and r.headers.get("WWW-Authenticate", "").startswith("Bearer"),
        f"introspection with a bad bearer token is 401 with WWW-Authenticate: Bearer "
        f"(RFC 7662 §2.3, RFC 6750 §3; got {r.status_code})",
    )
    info = introspect(access_token)
    check(info.get("active") is True, "introspection says active")
    for name in ["sub", "client_id", "iss", "exp", "iat", "jti"]:
        check(info.get(name) == claims[name], f"introspection {name} matches the JWT")
    check(audiences(info.get("aud")) == audiences(claims["aud"]), "introspection aud matches")
    check(scope_set(info.get("scope")) == scope_set(claims["scope"]), "introspection scope matches")
    check(
        str(info.get("token_type", "")).lower() == "bearer",
        "introspection token_type is Bearer (RFC 7662 §2.2)",
    )

    # RFC 8693 §1.1, §4.1: delegation. The sub-agent trades the access token (subject) and its
    # own JWT-SVID (actor) for a narrower token that names it in `act`.
    delegated = None
    if args.actor_token:
        actor = OAuth2Session(
            client_id=args.actor_id, token_endpoint_auth_method="none", default_timeout=TIMEOUT
        )
        actor.trust_env = False
        try:
            child = actor.fetch_token(
                endpoints["token_endpoint"],
                grant_type=TOKEN_EXCHANGE,
                subject_token=access_token,
                subject_token_type=TYPE_ACCESS_TOKEN,
                actor_token=args.actor_token,
                actor_token_type=TYPE_JWT,
                scope=args.delegated_scope,
            )
        except OAuthError as e:
            raise Failed(f"delegation refused: {e.error}: {e.description}") from e
        delegated = child["access_token"]
        c = validate(delegated, args.audience, args.client_id)
        check(
            c.get("act") == {"sub": args.actor_id} and c["client_id"] == args.actor_id,
            f"delegated token: sub stays {args.client_id}, act and client_id name {args.actor_id} "
            "(RFC 8693 §4.1)",
        )
        check(
            scope_set(c.get("scope")) == scope_set(args.delegated_scope)
            and c["exp"] <= claims["exp"],
            "delegated token is narrower: its scope, no later expiry",
        )
        info = introspect(delegated)
        check(
            info.get("active") is True and info.get("act") == {"sub": args.actor_id},
            "introspection shows the delegated token active with its act claim",
        )

    # RFC 7009 §2: the holder revokes its token with Authlib's revoke_token.
    r = session.revoke_token(
        endpoints["revocation_endpoint"], token=access_token, token_type_hint="access_token"
    )
    check(r.status_code == 200, "revocation answers 200 (RFC 7009 §2.2)")
    info = introspect(access_token)
    check(info == {"active": False}, f"after revocation introspection says only inactive ({info})")
    if delegated:
        info = introspect(delegated)
        check(info == {"active": False}, "the token delegated from it is inactive too")
    r = session.revoke_token(endpoints["revocation_endpoint"], token=access_token)
    check(r.status_code == 200, "revoking again answers 200 (RFC 7009 §2.2)")
    print("all checks passed")


if __name__ == "__main__":
    try:
        main()
    except Failed as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # a library refused an answer: that is a failure too
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
