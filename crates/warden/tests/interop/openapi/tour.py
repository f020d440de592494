#!/usr/bin/env python3
"""The README tour's API calls, made with nothing but a client generated from Warden's OpenAPI
document by openapi-python-client.

The package ``warden_client`` must be importable (``--client-dir`` is put first on the path): it
is generated from ``/v1/openapi.json`` by ``openapi-python-client generate --meta none``. Every
call below goes through a generated function with generated models; the script builds no URL,
header or JSON body itself. Where the README runs a ``warden`` command, the script makes the
HTTP call that command makes:

* ``api-token whoami``, ``audit tail``;
* ``entry create`` / ``entry list``; ``ca rotate`` (twice) / ``ca list``;
* ``policy push coder`` (Cedar) and ``policy eval`` (denied: the Coder has no task);
* ``rebac model push`` (the modeling language), ``rebac write`` (expiring tuples), ``rebac
  check``, then ``policy push coder-rebac`` and an eval that the relationships allow; the same
  model and check in a named relationship store (``/v1/rebac/stores/{store}/…``);
* OPA's data API (``/v1/data/{path}``) on the Rego version of the seed policy;
* ``lease list``; ``hold agent`` / ``release agent`` (the hold refuses the agent's decision);
* ``token generate`` (a join token); ``api-token create --role auditor`` (and the auditor's
  token refused an admin call);
* ``audit checkpoint --publish``, ``audit proof --index 1`` and ``audit proof --from 1``: both
  proofs are verified here (RFC 9162 §2.1.3.2 and §2.1.4.2) against the published checkpoint,
  the inclusion proof for the leaf read from ``/v1/audit/entries``;
* the audit entries, which must hold a record of the tour's calls.

First every generated module is imported. Prints one ``ok:`` line per step; exits 1 at the first failure, 3 when ``warden_client`` does
not import.
"""

import argparse
import base64
import datetime
import hashlib
import io
import os
import sys

MISSING_PACKAGES = 3

CODER = "spiffe://example.org/agent/coder"
PLANNER = "spiffe://example.org/agent/planner"
SHELL = "spiffe://example.org/agent/shell"
REMOTE = "spiffe://example.org/agent/remote"


class Failed(Exception):
    """A call or an answer that is not what the tour expects."""


def check(cond, what):
    """Prints `ok: what` when `cond` holds, fails with `what` otherwise."""
    if not cond:
        raise Failed(what)
    print(f"ok: {what}", flush=True)


def call(endpoint, status, **kwargs):
    """Calls a generated endpoint module (`sync_detailed`) and returns its parsed answer, failing
    unless the HTTP status is `status`."""
    resp = endpoint.sync_detailed(**kwargs)
    if int(resp.status_code) != status:
        name = endpoint.__name__.rsplit(".", 1)[-1]
        body = resp.content.decode("utf-8", "replace")
        raise Failed(f"{name}: HTTP {int(resp.status_code)}, expected {status}: {body}")
    return resp.parsed


def node(left, right):
    """RFC 6962 interior node hash."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(index, size, leaf_hash, proof, root):
    """RFC 9162 §2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(size1, size2, root1, root2, proof):
    """RFC 9162 §2.1.4.2."""
    if size1 == size2:
        return not proof and root1 == root2
    if size1 == 0 or size1 > size2 or not proof and size1 & (size1 - 1) != 0:
        return False
    if size1 & (size1 - 1) == 0:
        proof = [root1] + list(proof)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node(c, fr)
            sr = node(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == root1 and sr == root2 and sn == 0


def policy_files(examples, package, extensions=(".cedar", ".cedarschema")):
    """The files of `examples/policies/<package>/` with these extensions, as the API wants them."""
    from warden_client.models import PolicyFile

    folder = os.path.join(examples, "policies", package)
    files = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(extensions):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                files.append(PolicyFile(name=name, text=f.read()))
    return files


def import_everything():
    """Imports every generated module: code a generator got wrong fails here, not only in the
    operations the tour calls."""
    import importlib
    import pkgutil

    import warden_client

    count = 0
    for info in pkgutil.walk_packages(warden_client.__path__, "warden_client."):
        importlib.import_module(info.name)
        count += 1
    check(count > 100, f"the {count} generated modules import")


def tour(server, token, examples):
    from warden_client import AuthenticatedClient
    from warden_client.api.audit import (
        get_consistency_proof,
        get_inclusion_proof,
        list_audit_entries,
        publish_checkpoint,
    )
    from warden_client.api.broker import list_holds, list_leases, place_hold, release_hold
    from warden_client.api.entries import create_entry, list_entries
    from warden_client.api.identity import create_join_token, list_ca_keys, rotate_ca
    from warden_client.api.policy import authorize, opa_data, push_policy
    from warden_client.api.rebac import (
        put_rebac_model,
        put_rebac_model_in_store,
        rebac_check,
        rebac_check_in_store,
        write_rebac_tuples,
        write_rebac_tuples_in_store,
    )
    from warden_client.api.tokens import create_api_token, whoami
    from warden_client.models import (
        Authorize,
        CheckKey,
        CheckRequest,
        CreateEntry,
        CreateJoinToken,
        CreateToken,
        DataRequest,
        HoldRequest,
        PushPolicy,
        ResourceRef,
        Role,
        Rotate,
        WireTuple,
        WriteRequest,
    )
    from warden_client.types import UNSET, File

    admin = AuthenticatedClient(base_url=server, token=token, httpx_args={"trust_env": False})

    # warden api-token whoami; warden audit tail
    me = call(whoami, 200, client=admin)
    check(me.role == Role.ADMIN, f"whoami: token `{me.name}` has role {me.role}")
    page = call(list_audit_entries, 200, client=admin, from_=0, limit=5)
    check(len(page.entries) >= 1, f"audit tail: {page.tree_size} entries in the ledger")

    # warden entry create …; warden entry list
    uid = os.getuid()
    exe = os.path.realpath(sys.executable)
    for spiffe_id in (SHELL, PLANNER, CODER):
        body = CreateEntry(
            spiffe_id=spiffe_id,
            selectors=[f"unix:uid:{uid}", f"unix:path:{exe}"],
            x509_ttl_secs=3600 if spiffe_id == SHELL else UNSET,
        )
        created = call(create_entry, 201, client=admin, body=body)
        check(created.spiffe_id == spiffe_id, f"entry create {spiffe_id}: {created.id}")
    listed = call(list_entries, 200, client=admin)
    check(
        {SHELL, PLANNER, CODER} <= {e.spiffe_id for e in listed},
        f"entry list: {len(listed)} entries",
    )

    # warden ca rotate && warden ca rotate && warden ca list
    before = call(list_ca_keys, 200, client=admin)
    call(rotate_ca, 200, client=admin, body=Rotate())
    call(rotate_ca, 200, client=admin, body=Rotate())
    keys = call(list_ca_keys, 200, client=admin)
    states = sorted(k["state"] for k in keys)
    check(
        len(keys) > len(before) and "active" in states and "retired" in states,
        f"ca rotate twice, ca list: {len(before)} keys before, now {states}",
    )

    # warden policy push coder …; warden policy eval … (denied: no task)
    coder = call(
        push_policy,
        201,
        client=admin,
        name="coder",
        body=PushPolicy(files=policy_files(examples, "coder")),
    )
    check(coder.version == 1, f"policy push coder: version {coder.version} ({coder.language})")
    ask = Authorize(
        principal=CODER,
        action="write",
        resource=ResourceRef(type_="Repository", id="warden"),
        package="coder",
    )
    decision = call(authorize, 200, client=admin, body=ask)
    check(
        decision.decision == "deny" and not decision.allowed,
        f"policy eval: the Coder without a task is denied ({decision.decision_id})",
    )

    # warden rebac model push model.fga; rebac write … --expires-in 8h; rebac check
    with open(os.path.join(examples, "policies", "coder-rebac", "model.fga"), "rb") as f:
        dsl = f.read()
    model = call(
        put_rebac_model,
        201,
        client=admin,
        body=File(payload=io.BytesIO(dsl), file_name="model.fga"),
    )
    check(
        model.version >= 1,
        f"rebac model push: {model.authorization_model_id} in store {model.store}",
    )
    expires = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=8)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    tuples = [
        WireTuple(
            object_="task:patch-1",
            relation="assignee",
            user="agent:example.org/agent/coder",
            expires_at=expires,
        ),
        WireTuple(
            object_="repository:warden", relation="task", user="task:patch-1", expires_at=expires
        ),
    ]
    written = call(write_rebac_tuples, 200, client=admin, body=WriteRequest(writes=tuples))
    question = CheckRequest(
        tuple_key=CheckKey(
            user="agent:example.org/agent/coder", relation="writer", object_="repository:warden"
        )
    )
    answer = call(rebac_check, 200, client=admin, body=question)
    check(
        answer.allowed,
        f"rebac write (revision {written.revision}), rebac check: the Coder is a writer",
    )

    # The same in a named relationship store: its routes are documented apart.
    store = "tour"
    call(
        put_rebac_model_in_store,
        201,
        client=admin,
        store=store,
        body=File(payload=io.BytesIO(dsl), file_name="model.fga"),
    )
    answer = call(rebac_check_in_store, 200, client=admin, store=store, body=question)
    check(not answer.allowed, f"store `{store}`: no tuples yet, the Coder is not a writer")
    call(
        write_rebac_tuples_in_store,
        200,
        client=admin,
        store=store,
        body=WriteRequest(writes=tuples),
    )
    answer = call(rebac_check_in_store, 200, client=admin, store=store, body=question)
    check(answer.allowed, f"store `{store}`: after the write the Coder is a writer")

    # warden policy push coder-rebac …; warden policy eval --package coder-rebac …
    call(
        push_policy,
        201,
        client=admin,
        name="coder-rebac",
        body=PushPolicy(files=policy_files(examples, "coder-rebac")),
    )
    ask.package = "coder-rebac"
    decision = call(authorize, 200, client=admin, body=ask)
    check(
        decision.allowed,
        f"policy eval --package coder-rebac: {decision.decision} through the relationships",
    )

    # OPA's data API, whose document path spans segments (`warden/coder/allow`).
    rego = policy_files(examples, "coder", (".rego",))
    call(push_policy, 201, client=admin, name="coder-rego", body=PushPolicy(files=rego))
    opa_input = {
        "principal": CODER,
        "action": "write",
        "resource": {"type": "Repository", "id": "warden"},
    }
    data = call(
        opa_data, 200, client=admin, path="warden/coder/allow", body=DataRequest(input_=opa_input)
    )
    check(
        data.result is False and data.decision_id,
        f"POST /v1/data/warden/coder/allow: result {data.result} ({data.decision_id})",
    )

    # warden lease list
    leases = call(list_leases, 200, client=admin)
    check(isinstance(leases, list), f"lease list: {len(leases)} leases")

    # warden hold agent …; warden release agent …
    held = call(
        place_hold,
        201,
        client=admin,
        body=HoldRequest(kind="agent", value=PLANNER, reason="tour: suspicious activity"),
    )
    check(
        PLANNER in held.agents_held,
        f"hold agent: {held.agents_held}, {held.leases_revoked} leases revoked",
    )
    ask_planner = Authorize(
        principal=PLANNER,
        action="write",
        resource=ResourceRef(type_="Repository", id="warden"),
        package="coder",
    )
    decision = call(authorize, 200, client=admin, body=ask_planner)
    check(bool(decision.barred) and not decision.allowed, "the held agent is refused a decision")
    holds = call(list_holds, 200, client=admin)
    check(any(h.value == PLANNER for h in holds), f"hold list: {len(holds)} holds")
    call(release_hold, 204, client=admin, kind="agent", value=PLANNER, reason="tour: cleared")
    decision = call(authorize, 200, client=admin, body=ask_planner)
    check(not decision.barred, "release agent: the agent is no longer barred")

    # warden token generate --spiffe-id … --ttl 10m
    join = call(
        create_join_token, 201, client=admin, body=CreateJoinToken(spiffe_id=REMOTE, ttl_secs=600)
    )
    check(
        join.token.startswith("wjt_") and join.spiffe_id == REMOTE, "token generate: a join token"
    )

    # warden api-token create --name alice --role auditor
    alice = call(
        create_api_token, 201, client=admin, body=CreateToken(name="alice", role=Role.AUDITOR)
    )
    check(alice.role == Role.AUDITOR, f"api-token create: `{alice.name}` ({alice.id})")
    auditor = AuthenticatedClient(
        base_url=server, token=alice.token, httpx_args={"trust_env": False}
    )
    check(call(whoami, 200, client=auditor).role == Role.AUDITOR, "the auditor's token works")
    call(create_api_token, 403, client=auditor, body=CreateToken(name="mallory", role=Role.ADMIN))
    check(True, "the auditor may not create tokens (403)")

    # warden audit checkpoint --publish; audit proof --index 1; audit proof --from 1
    cp = call(publish_checkpoint, 200, client=admin)
    size, root = cp.tree_size, base64.b64decode(cp.root)
    check(size > 1, f"audit checkpoint --publish: tree size {size}")
    proof = call(get_inclusion_proof, 200, client=auditor, index=1, size=size)
    entry = call(list_audit_entries, 200, client=auditor, from_=1, limit=1).entries[0]
    leaf_hash = hashlib.sha256(b"\x00" + base64.b64decode(entry.leaf)).digest()
    check(
        base64.b64decode(proof.leaf_hash) == leaf_hash
        and verify_inclusion(1, size, leaf_hash, [base64.b64decode(p) for p in proof.proof], root),
        f"audit proof --index 1: entry 1 is in the checkpoint ({len(proof.proof)} hashes)",
    )
    cons = call(get_consistency_proof, 200, client=auditor, from_=1, to=size)
    first = call(list_audit_entries, 200, client=auditor, from_=0, limit=1).entries[0]
    root1 = hashlib.sha256(b"\x00" + base64.b64decode(first.leaf)).digest()
    check(
        base64.b64decode(cons.root1) == root1
        and base64.b64decode(cons.root2) == root
        and verify_consistency(1, size, root1, root, [base64.b64decode(p) for p in cons.proof]),
        f"audit proof --from 1: the log of size {size} extends the log of size 1",
    )

    # The ledger recorded the tour. Each read is recorded too: read up to the checkpoint.
    entries = []
    while len(entries) < size:
        page = call(list_audit_entries, 200, client=auditor, from_=len(entries), limit=1000)
        check(
            page.entries and page.entries[0].index == len(entries), f"entries from {len(entries)}"
        )
        entries += page.entries[: size - len(entries)]
    text = "\n".join(str(e.event.to_dict()) for e in entries)
    for needle in (PLANNER, "tour: suspicious activity", "tour: cleared", "coder-rego", "alice"):
        check(needle in text, f"the audit entries mention {needle!r}")
    print(f"tour complete: {len(entries)} audit entries", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--client-dir", required=True, help="directory holding the generated warden_client"
    )
    parser.add_argument("--server", required=True, help="Warden's base URL")
    parser.add_argument("--token-file", required=True, help="file holding an admin API token")
    parser.add_argument("--examples", required=True, help="the repository's examples/ directory")
    args = parser.parse_args()
    sys.path.insert(0, args.client_dir)
    try:
        import warden_client  # noqa: F401
    except ImportError as e:
        print(f"the generated client does not import: {e}", file=sys.stderr)
        sys.exit(MISSING_PACKAGES)
    with open(args.token_file, encoding="utf-8") as f:
        token = f.read().strip()
    try:
        import_everything()
        tour(args.server.rstrip("/"), token, args.examples)
    except Failed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
