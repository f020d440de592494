//! The SPIFFE Workload API over a Unix domain socket (SPIFFE_Workload_API.md).
//!
//! Every call must carry the `workload.spiffe.io: true` metadata. The caller is attested from
//! the kernel (SO_PEERCRED on the socket, then `/proc`), its selectors are matched against the
//! registration entries, and it gets SVIDs for every entry that matches — or
//! `PermissionDenied` when none does (saying so when a hold or a deny entry bars the identity
//! that matched). Every SVID handed out is recorded in the ledger first.
//! X.509-SVIDs are pushed again at half their lifetime for as long as the stream is open.

#![expect(
    clippy::result_large_err,
    reason = "gRPC handlers answer with tonic::Status, whose size tonic decides"
)]

use std::{collections::HashMap, pin::Pin, sync::Arc, time::Duration};

use identity::{
    SpiffeId, TrustDomain,
    deny::{DenyKind, Denylist},
    jwt::JwtSvidClaims,
    trust::{Keyring, Trust},
};
use ledger::{Ledger, NewEvent, OcsfClass, Outcome};
use rand::RngCore;
use store::{EntryRow, Store};

use crate::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response};

/// The gRPC status type the Workload API answers with.
pub use tonic::Status;

use crate::{
    Attestor, ExeSample,
    front::{self, Limits, PeerInfo},
};

/// Generated Workload API types and service.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "generated code"
)]
pub mod proto {
    tonic::include_proto!("_");
}

use proto::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509svid, X509svidRequest, X509svidResponse, spiffe_workload_api_server::SpiffeWorkloadApi,
};

/// Default X.509-SVID lifetime when the entry sets none.
const DEFAULT_X509_TTL: i64 = 3600;
/// Default JWT-SVID lifetime when the entry sets none.
const DEFAULT_JWT_TTL: i64 = 300;
/// Clock skew tolerated when validating JWT-SVIDs, seconds.
const JWT_SKEW: i64 = 30;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What the Workload API needs from the rest of Warden.
pub struct WorkloadApi {
    trust_domain: TrustDomain,
    registry: Arc<Registry>,
    ledger: Ledger,
    keyring: Arc<Keyring>,
    attestor: Arc<Attestor>,
    denylist: Arc<Denylist>,
    validator: identity::jwt::Validator,
    issuer: Option<String>,
    shutdown: watch::Receiver<bool>,
    /// Calls per attested Unix user; `None`: unlimited.
    calls: Option<Arc<CallLimiter>>,
}

/// A GCRA budget of Workload API calls per Unix user id.
type CallLimiter = governor::DefaultKeyedRateLimiter<u32>;

/// The number of calls to the Workload API each Unix user may make: `burst` at once,
/// refilled at `per_sec` a second. The kernel's answer for the caller's uid is the key: a
/// process cannot spread its calls over keys by forking.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallLimit {
    /// Calls a second, sustained; 0 turns the limit off.
    pub per_sec: f64,
    /// Calls at once.
    pub burst: u32,
}

impl std::fmt::Debug for WorkloadApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WorkloadApi({})", self.trust_domain)
    }
}

/// One identity the caller is entitled to.
struct Granted {
    id: SpiffeId,
    entry: EntryRow,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl WorkloadApi {
    /// A Workload API for `trust_domain`, issuing with and trusting what `keyring` holds,
    /// refusing whatever `denylist` names; streams end when `shutdown` turns true.
    pub fn new(
        trust_domain: TrustDomain,
        store: Arc<dyn Store>,
        ledger: Ledger,
        keyring: Arc<Keyring>,
        denylist: Arc<Denylist>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            denylist,
            issuer: None,
            validator: identity::jwt::Validator::new(),
            trust_domain,
            registry: Arc::new(Registry::new(store)),
            ledger,
            keyring,
            attestor: Arc::new(Attestor::new()),
            shutdown,
            calls: None,
        }
    }

    /// Limits the calls each Unix user may make (FetchX509SVID, FetchJWTSVID,
    /// ValidateJWTSVID); past it a call is refused `RESOURCE_EXHAUSTED` with a message
    /// starting `rate_limited:` and `retry-after` (seconds) in the trailers.
    pub fn with_call_limit(mut self, limit: CallLimit) -> Self {
        let quota = (limit.per_sec > 0.0 && limit.per_sec.is_finite())
            .then(|| Duration::try_from_secs_f64(1.0 / limit.per_sec).ok())
            .flatten()
            .and_then(|period| governor::Quota::with_period(period.max(Duration::from_nanos(1))))
            .zip(std::num::NonZeroU32::new(limit.burst.max(1)))
            .map(|(q, burst)| q.allow_burst(burst));
        self.calls = quota.map(|q| Arc::new(governor::RateLimiter::hashmap(q)));
        self
    }

    /// Spends one call of `uid`'s budget.
    fn admit(&self, uid: u32) -> Result<(), Status> {
        let Some(calls) = &self.calls else {
            return Ok(());
        };
        use governor::clock::Clock as _;
        calls.check_key(&uid).map_err(|not_until| {
            let wait = not_until.wait_time_from(calls.clock().now());
            let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
            tracing::debug!(uid, secs, "workload api call rate limited");
            let mut status = Status::resource_exhausted(format!(
                "rate_limited: too many Workload API calls from uid {uid}; retry in {secs} s"
            ));
            if let Ok(v) = secs.to_string().parse() {
                status.metadata_mut().insert("retry-after", v);
            }
            status
        })
    }

    /// Puts `iss` = `issuer` in JWT-SVIDs, for OIDC verifiers (the URL whose
    /// `/.well-known/openid-configuration` publishes the key).
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Matches callers against `registry` (shared with the server, which keeps it current
    /// after its own writes) instead of one of its own over the same store.
    pub fn with_registry(mut self, registry: Arc<Registry>) -> Self {
        self.registry = registry;
        self
    }
}

/// Every bundle (own and federated) keyed by trust domain ID, in the form `form` gives.
fn bundles_by_id(
    trust: &Trust,
    form: impl Fn(&identity::trust::TrustBundle) -> Vec<u8>,
) -> HashMap<String, Vec<u8>> {
    std::iter::once(trust.own())
        .chain(trust.federated())
        .map(|b| (b.trust_domain().id().to_string(), form(b)))
        .collect()
}

fn x509_bundles(trust: &Trust) -> HashMap<String, Vec<u8>> {
    let mut all = bundles_by_id(trust, identity::trust::TrustBundle::x509_der_concat);
    // A federated domain that publishes only JWT keys has no X.509 bundle to hand out.
    all.retain(|_, der| !der.is_empty());
    all
}

fn jwt_bundles(trust: &Trust) -> HashMap<String, Vec<u8>> {
    bundles_by_id(trust, |b| b.jwt_jwks().to_string().into_bytes())
}

/// Refuses calls without the security header every Workload API client sends.
fn check_header<T>(req: &Request<T>) -> Result<(), Status> {
    match req.metadata().get("workload.spiffe.io").map(|v| v.to_str()) {
        Some(Ok("true")) => Ok(()),
        _ => Err(Status::invalid_argument(
            "security header missing from request",
        )),
    }
}

/// Why an identity the caller's selectors match is not issued. The caller may be told: it is
/// its own identity, and the refusal is all it learns (not who held it, nor why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Barred {
    /// The identity is on hold (kill switch on the agent or its vendor).
    Held,
    /// An operator's deny entry names the identity.
    Denied,
}

impl Barred {
    /// Whether, and why, `denylist` bars `id`.
    fn of(denylist: &Denylist, id: &SpiffeId) -> Option<Self> {
        if denylist.is_held(id.as_str()) {
            Some(Barred::Held)
        } else if denylist.denies_id(id) {
            Some(Barred::Denied)
        } else {
            None
        }
    }
}

/// At most this many barred identities are named in one refusal (the rest are counted).
const BARRED_NAMED: usize = 5;

/// The refusal for a caller whose only matching identities are barred: it names each (its
/// own) and says why none is issued.
fn barred_refusal(barred: &[(SpiffeId, Barred)]) -> Status {
    let mut seen = std::collections::BTreeSet::new();
    let distinct: Vec<_> = barred
        .iter()
        .filter(|(id, _)| seen.insert(id.as_str()))
        .collect();
    let mut message = distinct
        .iter()
        .take(BARRED_NAMED)
        .map(|(id, why)| match why {
            Barred::Held => format!(
                "identity `{id}` is on hold: no SVID is issued for it until the hold is released"
            ),
            Barred::Denied => format!(
                "identity `{id}` is denied: no SVID is issued for it while the deny entry stands"
            ),
        })
        .collect::<Vec<_>>()
        .join("; ");
    if distinct.len() > BARRED_NAMED {
        message.push_str(&format!(
            " (and {} more barred identities)",
            distinct.len() - BARRED_NAMED
        ));
    }
    // "no identity issued" first: SPIFFE clients (rust-spiffe, go-spiffe) recognise SPIRE's
    // wording and back off as for a caller with no entry, which is what this caller is now.
    Status::permission_denied(format!("no identity issued: {message}"))
}

/// What a caller's selectors match: the identities it is issued, and those it would be but
/// for a hold or a deny entry.
struct Entitlement {
    granted: Vec<Granted>,
    barred: Vec<(SpiffeId, Barred)>,
}

impl Entitlement {
    /// The identities issued, or the refusal when there are none: naming the barred ones if
    /// that is why, "no identity issued" otherwise.
    fn into_granted(self) -> Result<Vec<Granted>, Status> {
        if !self.granted.is_empty() {
            Ok(self.granted)
        } else if !self.barred.is_empty() {
            Err(barred_refusal(&self.barred))
        } else {
            Err(Status::permission_denied("no identity issued"))
        }
    }

    /// The identity `wanted` alone, or the refusal that says why it is not issued.
    fn only(self, wanted: &str) -> Result<Vec<Granted>, Status> {
        let granted: Vec<Granted> = self
            .granted
            .into_iter()
            .filter(|g| g.id.as_str() == wanted)
            .collect();
        if !granted.is_empty() {
            return Ok(granted);
        }
        let barred: Vec<_> = self
            .barred
            .into_iter()
            .filter(|(id, _)| id.as_str() == wanted)
            .collect();
        if barred.is_empty() {
            Err(Status::permission_denied(format!(
                "no identity `{wanted}` issued to this caller"
            )))
        } else {
            Err(barred_refusal(&barred))
        }
    }
}

/// Attests the caller and returns the identities its selectors entitle it to.
async fn entitled(api: &Inner, caller: &Caller) -> Result<Vec<Granted>, Status> {
    entitlement(api, caller).await?.into_granted()
}

/// Attests the caller and matches its selectors against the registration entries.
async fn entitlement(api: &Inner, caller: &Caller) -> Result<Entitlement, Status> {
    let attestor = Arc::clone(&api.attestor);
    let Caller {
        pid,
        uid,
        gid,
        exe_at_connect,
    } = caller.clone();
    let att = tokio::task::spawn_blocking(move || {
        attestor.attest_connected(pid, uid, gid, &exe_at_connect)
    })
    .await
    .map_err(|_| Status::internal("attestation failed"))?
    .map_err(|e| Status::permission_denied(format!("caller could not be attested: {e}")))?;
    let selectors = att.selectors();
    // Entries changed since the last call (here or on another server) are applied first:
    // one indexed query when nothing changed.
    api.registry
        .sync()
        .await
        .map_err(|_| Status::unavailable("the store is unavailable"))?;
    let entries = api.registry.matching(&selectors);
    let mut granted = Vec::new();
    let mut barred = Vec::new();
    for entry in entries {
        if let Ok(id) = SpiffeId::parse(&entry.spiffe_id) {
            // A denied identity is not issued, whatever its entry says.
            match Barred::of(&api.denylist, &id) {
                None => granted.push(Granted { id, entry }),
                Some(why) => barred.push((id, why)),
            }
        }
    }
    Ok(Entitlement { granted, barred })
}

/// The parts the request handlers and stream tasks share.
#[derive(Clone)]
struct Inner {
    denylist: Arc<Denylist>,
    registry: Arc<Registry>,
    ledger: Ledger,
    keyring: Arc<Keyring>,
    attestor: Arc<Attestor>,
}

impl WorkloadApi {
    fn inner(&self) -> Inner {
        Inner {
            denylist: Arc::clone(&self.denylist),
            registry: Arc::clone(&self.registry),
            ledger: self.ledger.clone(),
            keyring: Arc::clone(&self.keyring),
            attestor: Arc::clone(&self.attestor),
        }
    }
}

/// The calling process, as the kernel described it when it connected.
#[derive(Clone)]
struct Caller {
    pid: i32,
    uid: u32,
    gid: u32,
    exe_at_connect: ExeSample,
}

fn peer<T>(req: &Request<T>) -> Result<Caller, Status> {
    let info = req
        .extensions()
        .get::<PeerInfo>()
        .ok_or_else(|| Status::permission_denied("caller could not be attested"))?;
    let cred = info
        .uds
        .peer_cred
        .ok_or_else(|| Status::permission_denied("caller could not be attested"))?;
    let pid = cred
        .pid()
        .ok_or_else(|| Status::permission_denied("caller could not be attested: no pid"))?;
    let exe_at_connect = info.exe_at_connect.clone().ok_or_else(|| {
        Status::permission_denied("caller could not be attested: it was gone when it connected")
    })?;
    Ok(Caller {
        pid,
        uid: cred.uid(),
        gid: cred.gid(),
        exe_at_connect,
    })
}

async fn record(ledger: &Ledger, event: NewEvent) -> Result<(), Status> {
    ledger.append(event).await.map(|_| ()).map_err(|e| {
        tracing::error!(error = %e, "cannot record an SVID issuance; refusing it");
        Status::unavailable("the audit ledger could not record this issuance")
    })
}

/// Issues one X.509-SVID per entitled identity, each recorded before it is returned. Returns
/// the response and the shortest lifetime in it.
async fn x509_response(
    api: &Inner,
    granted: &[Granted],
    pid: i32,
) -> Result<(X509svidResponse, i64), Status> {
    let mut svids = Vec::new();
    let mut shortest = i64::MAX;
    let trust = api.keyring.current();
    let chain = trust.ca.svid_chain();
    let own_bundle = trust.own().x509_der_concat();
    for g in granted {
        let ttl = g.entry.x509_ttl_secs.unwrap_or(DEFAULT_X509_TTL);
        let svid = trust
            .ca
            .issue_x509_svid(
                &g.id,
                time::Duration::seconds(ttl),
                time::OffsetDateTime::now_utc(),
            )
            .map_err(|e| Status::internal(format!("cannot issue: {e}")))?;
        let lifetime = (svid.not_after - time::OffsetDateTime::now_utc()).whole_seconds();
        shortest = shortest.min(lifetime.max(1));
        record(
            &api.ledger,
            NewEvent::new(
                g.id.to_string(),
                "svid.issue",
                Outcome::Success,
                OcsfClass::Authentication,
            )
            .field("kind", "x509")
            .field("entry_id", g.entry.id.clone())
            .field(
                "serial",
                svid.serial
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>(),
            )
            .field("not_after", svid.not_after.unix_timestamp())
            .field("pid", i64::from(pid)),
        )
        .await?;
        let mut x509_svid = svid.cert_der;
        for der in &chain {
            x509_svid.extend_from_slice(der);
        }
        svids.push(X509svid {
            spiffe_id: g.id.to_string(),
            x509_svid,
            x509_svid_key: svid.key_pkcs8.to_vec(),
            bundle: own_bundle.clone(),
            hint: String::new(),
        });
    }
    let mut federated_bundles = x509_bundles(&trust);
    federated_bundles.remove(trust.own().trust_domain().id().as_str());
    Ok((
        X509svidResponse {
            svids,
            crl: Vec::new(),
            federated_bundles,
        },
        shortest,
    ))
}

/// A stream that sends what `make` builds from the current trust, then again each time the
/// keyring changes (rotation, federation), until the client leaves or the server stops.
fn on_every_change<T: Send + 'static>(
    keyring: Arc<Keyring>,
    make: fn(&Trust) -> T,
    mut shutdown: watch::Receiver<bool>,
) -> BoxStream<T> {
    let (tx, rx) = mpsc::channel(1);
    let mut changes = keyring.watch();
    tokio::spawn(async move {
        loop {
            changes.borrow_and_update();
            if tx.send(Ok(make(&keyring.current()))).await.is_err() {
                return;
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = shutdown.wait_for(|s| *s) => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = BoxStream<X509svidResponse>;
    type FetchX509BundlesStream = BoxStream<X509BundlesResponse>;
    type FetchJWTBundlesStream = BoxStream<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        check_header(&req)?;
        let caller = peer(&req)?;
        self.admit(caller.uid)?;
        let pid = caller.pid;
        let api = self.inner();
        // The first answer (or refusal) comes back on the call itself.
        let granted = entitled(&api, &caller).await?;
        let (first, mut shortest) = x509_response(&api, &granted, pid).await?;
        let (tx, rx) = mpsc::channel(1);
        let mut shutdown = self.shutdown.clone();
        let mut changes = self.keyring.watch();
        changes.borrow_and_update();
        tokio::spawn(async move {
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            loop {
                // Renew at half the shortest lifetime, so a client never holds an expired
                // SVID, and at once when the keyring changes (a new CA, a new bundle);
                // re-attest and re-match each time (entries may have changed).
                let wait = Duration::from_secs(u64::try_from(shortest / 2).unwrap_or(1).max(1));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                changes.borrow_and_update();
                let next = match entitled(&api, &caller).await {
                    Ok(granted) => x509_response(&api, &granted, pid).await,
                    Err(status) => Err(status),
                };
                match next {
                    Ok((resp, s)) => {
                        shortest = s;
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        check_header(&req)?;
        Ok(Response::new(on_every_change(
            Arc::clone(&self.keyring),
            |trust| X509BundlesResponse {
                crl: Vec::new(),
                bundles: x509_bundles(trust),
            },
            self.shutdown.clone(),
        )))
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        check_header(&req)?;
        let caller = peer(&req)?;
        self.admit(caller.uid)?;
        let pid = caller.pid;
        let body = req.get_ref();
        if body.audience.is_empty() || body.audience.iter().any(String::is_empty) {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let api = self.inner();
        let entitlement = entitlement(&api, &caller).await?;
        let granted = if body.spiffe_id.is_empty() {
            entitlement.into_granted()?
        } else {
            entitlement.only(&body.spiffe_id)?
        };
        let mut svids = Vec::new();
        let trust = self.keyring.current();
        for g in &granted {
            let iat = now();
            let mut jti = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut jti);
            let jti: String = jti.iter().map(|b| format!("{b:02x}")).collect();
            let claims = JwtSvidClaims {
                sub: g.id.clone(),
                aud: body.audience.clone(),
                exp: iat + g.entry.jwt_ttl_secs.unwrap_or(DEFAULT_JWT_TTL),
                iat,
                jti: jti.clone(),
                act: None,
                iss: self.issuer.clone(),
            };
            let token = trust
                .jwt
                .mint(&claims)
                .map_err(|e| Status::internal(format!("cannot mint: {e}")))?;
            record(
                &self.ledger,
                NewEvent::new(
                    g.id.to_string(),
                    "svid.issue",
                    Outcome::Success,
                    OcsfClass::Authentication,
                )
                .field("kind", "jwt")
                .field("entry_id", g.entry.id.clone())
                .field("jti", jti)
                .field("aud", body.audience.clone())
                .field("exp", claims.exp)
                .field("pid", i64::from(pid)),
            )
            .await?;
            svids.push(Jwtsvid {
                spiffe_id: g.id.to_string(),
                svid: token,
                hint: String::new(),
            });
        }
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        check_header(&req)?;
        Ok(Response::new(on_every_change(
            Arc::clone(&self.keyring),
            |trust| JwtBundlesResponse {
                bundles: jwt_bundles(trust),
            },
            self.shutdown.clone(),
        )))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        check_header(&req)?;
        // Validation needs no attestation, but each costs a signature check: limited by the
        // kernel's uid for the caller (a peer without credentials shares one budget).
        let uid = req
            .extensions()
            .get::<PeerInfo>()
            .and_then(|info| info.uds.peer_cred)
            .map_or(u32::MAX, |cred| cred.uid());
        self.admit(uid)?;
        let body = req.get_ref();
        if body.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if body.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        // This trust domain's keys and every federated domain's.
        let trust = self.keyring.current();
        let claims = self
            .validator
            .validate(&body.svid, &body.audience, now(), JWT_SKEW, |td| {
                trust.jwt_bundle(td)
            })
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // A federated domain's JWT-SVIDs are held to its limits (lifetime, pinned issuer), as
        // on Warden's own agent routes.
        let td = claims.sub.trust_domain();
        if let Some(limits) = trust.federation_limits(&td) {
            limits
                .check_jwt_svid(&td, &claims, now(), JWT_SKEW)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        if self.denylist.denies_id(&claims.sub) || self.denylist.denies(DenyKind::Jti, &claims.jti)
        {
            return Err(Status::invalid_argument("token has been revoked"));
        }
        let json = serde_json::to_value(&claims).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id: claims.sub.to_string(),
            claims: match to_prost(json).kind {
                Some(prost_types::value::Kind::StructValue(s)) => Some(s),
                _ => None,
            },
        }))
    }
}

/// JSON to `google.protobuf.Value`.
fn to_prost(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(to_prost).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map.into_iter().map(|(k, v)| (k, to_prost(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// Serves the Workload API on `listener` until `shutdown` turns true, with the connection
/// limits of this process ([`Limits::for_this_process`]).
pub async fn serve(
    api: WorkloadApi,
    listener: tokio::net::UnixListener,
) -> Result<(), tonic::transport::Error> {
    serve_with(api, listener, Limits::for_this_process()).await
}

/// Serves the Workload API on `listener` until `shutdown` turns true, every connection through
/// the HTTP/2 front ([`crate::front`]) that lets every gRPC client in whatever `:authority` it
/// sends.
pub async fn serve_with(
    api: WorkloadApi,
    listener: tokio::net::UnixListener,
    limits: Limits,
) -> Result<(), tonic::transport::Error> {
    let mut shutdown = api.shutdown.clone();
    let (conns_tx, conns_rx) = mpsc::channel(64);
    let acceptor = tokio::spawn(front::accept(
        listener,
        conns_tx,
        limits,
        api.shutdown.clone(),
    ));
    let served = tonic::transport::Server::builder()
        .add_service(proto::spiffe_workload_api_server::SpiffeWorkloadApiServer::new(api))
        .serve_with_incoming_shutdown(ReceiverStream::new(conns_rx), async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
    acceptor.abort();
    served
}

/// A Workload API client over a Unix socket, sending the security header on every call —
/// for `warden svid`, a shell-friendly way for an agent to fetch its identity.
pub mod client {
    use tonic::{Request, transport::Channel};

    use super::proto::{
        JwtsvidRequest, X509svid, X509svidRequest,
        spiffe_workload_api_client::SpiffeWorkloadApiClient,
    };

    /// Connects to the Workload API at `socket`.
    pub async fn connect(
        socket: std::path::PathBuf,
    ) -> Result<SpiffeWorkloadApiClient<Channel>, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await?;
        Ok(SpiffeWorkloadApiClient::new(channel))
    }

    fn with_header<T>(body: T) -> Request<T> {
        let mut req = Request::new(body);
        req.metadata_mut().insert(
            "workload.spiffe.io",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        req
    }

    /// The caller's X.509-SVIDs (the first message of the FetchX509SVID stream).
    pub async fn fetch_x509(
        client: &mut SpiffeWorkloadApiClient<Channel>,
    ) -> Result<Vec<X509svid>, tonic::Status> {
        let mut stream = client
            .fetch_x509svid(with_header(X509svidRequest {}))
            .await?
            .into_inner();
        match stream.message().await? {
            Some(resp) => Ok(resp.svids),
            None => Err(tonic::Status::unavailable(
                "the stream ended without an SVID",
            )),
        }
    }

    /// A JWT-SVID for `audience` (the caller's first identity).
    pub async fn fetch_jwt(
        client: &mut SpiffeWorkloadApiClient<Channel>,
        audience: Vec<String>,
    ) -> Result<(String, String), tonic::Status> {
        fetch_jwt_as(client, audience, String::new()).await
    }

    /// A JWT-SVID for `audience` as `spiffe_id`, one of the caller's identities (empty: the
    /// first).
    pub async fn fetch_jwt_as(
        client: &mut SpiffeWorkloadApiClient<Channel>,
        audience: Vec<String>,
        spiffe_id: String,
    ) -> Result<(String, String), tonic::Status> {
        let resp = client
            .fetch_jwtsvid(with_header(JwtsvidRequest {
                audience,
                spiffe_id,
            }))
            .await?
            .into_inner();
        resp.svids
            .into_iter()
            .next()
            .map(|s| (s.spiffe_id, s.svid))
            .ok_or_else(|| tonic::Status::unavailable("no JWT-SVID in the answer"))
    }
}
