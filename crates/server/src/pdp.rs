//! The policy decision point inside the server: the compiled policy packages in force (the
//! latest version of each, re-read from the store every second so replicas follow), the
//! context Warden fills in itself, and the ledger record of every decision.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use ledger::{NewEvent, OcsfClass, Outcome};
use policy::{CompiledPackage, Language, PackageSource, PolicyError};
use store::{PolicyVersionRow, Store};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// One package in force.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) name: String,
    pub(crate) version: i64,
    pub(crate) compiled: CompiledPackage,
}

/// The packages in force.
#[derive(Debug)]
pub(crate) struct Pdp {
    packages: RwLock<Arc<BTreeMap<String, Arc<Loaded>>>>,
    pub(crate) limits: policy::Limits,
    /// Rego evaluations run on the async worker that asked (a hop to another thread would
    /// cost more than a typical evaluation), but at most this many at once: one fewer than the
    /// runtime's workers, so however long evaluations take — up to their budget, plus one
    /// built-in call ([`policy::MAX_GENERATED_ELEMENTS`]) — a worker is always left for
    /// everything else. Cedar decisions (microseconds, no built-ins) do not queue here.
    rego_slots: Semaphore,
    /// Simulations running at once (`POST /v1/policies/{name}/simulate`), each on a blocking
    /// thread of its own.
    pub(crate) simulations: Arc<Semaphore>,
}

/// Most simulations that run at once; more are refused (429 `simulation_busy`).
pub(crate) const MAX_SIMULATIONS: usize = 2;

/// How many Rego evaluations may run at once on the async workers: one fewer than the
/// runtime has workers (at least one).
fn rego_slots() -> usize {
    let workers = tokio::runtime::Handle::try_current().map_or_else(
        |_| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        |runtime| runtime.metrics().num_workers(),
    );
    workers.saturating_sub(1).max(1)
}

/// Largest decision context accepted over the API: the whole request is recorded with the
/// decision, and a ledger entry's fields are bounded (64 KiB), so half of that.
pub(crate) const MAX_CONTEXT_BYTES: usize = 32 * 1024;

impl Default for Pdp {
    fn default() -> Self {
        Self {
            packages: RwLock::default(),
            limits: policy::Limits {
                max_context_bytes: MAX_CONTEXT_BYTES,
                ..policy::Limits::default()
            },
            rego_slots: Semaphore::new(rego_slots()),
            simulations: Arc::new(Semaphore::new(MAX_SIMULATIONS)),
        }
    }
}

/// Parses a stored row into the source it was compiled from.
pub(crate) fn source_of(row: &PolicyVersionRow) -> Result<PackageSource, String> {
    let language: Language = row
        .language
        .parse()
        .map_err(|e| format!("stored package `{}`: {e}", row.package))?;
    let files: Vec<(String, String)> = serde_json::from_str(&row.files_json)
        .map_err(|e| format!("stored package `{}` files: {e}", row.package))?;
    Ok(PackageSource {
        language,
        files,
        entrypoint: row.entrypoint.clone(),
    })
}

impl Pdp {
    fn read_packages(&self) -> Arc<BTreeMap<String, Arc<Loaded>>> {
        Arc::clone(
            &self
                .packages
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Every package in force, by name.
    pub(crate) fn packages(&self) -> Vec<Arc<Loaded>> {
        self.read_packages().values().cloned().collect()
    }

    /// The package a request without a `package` means: the only one, if there is only one.
    pub(crate) fn choose(&self, name: Option<&str>) -> Result<Arc<Loaded>, ApiError> {
        use axum::http::StatusCode;
        let all = self.read_packages();
        match name {
            Some(name) => all.get(name).cloned().ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_package",
                    format!("no policy package `{name}`"),
                )
            }),
            None if all.len() == 1 => all.values().next().cloned().ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_package",
                    "no policy package",
                )
            }),
            None if all.is_empty() => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_package",
                "no policy package has been pushed: `warden policy push NAME FILE…`",
            )),
            None => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "package_required",
                format!(
                    "{} policy packages are in force ({}); name one with `package`",
                    all.len(),
                    all.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    /// Re-reads the latest version of every package; compiles what changed. A stored version
    /// that no longer compiles keeps the previous one in force and is logged.
    pub(crate) async fn refresh(&self, store: &dyn Store) -> Result<bool, store::StoreError> {
        let rows = store.policy_latest().await?;
        let current = self.read_packages();
        if rows.len() == current.len()
            && rows.iter().all(|r| {
                current
                    .get(&r.package)
                    .is_some_and(|l| l.version == r.version)
            })
        {
            return Ok(false);
        }
        let mut next = BTreeMap::new();
        for row in rows {
            if let Some(loaded) = current
                .get(&row.package)
                .filter(|l| l.version == row.version)
            {
                next.insert(row.package.clone(), Arc::clone(loaded));
                continue;
            }
            let compiled = source_of(&row)
                .and_then(|source| CompiledPackage::compile(&source).map_err(|e| e.to_string()));
            match compiled {
                Ok(compiled) => {
                    next.insert(
                        row.package.clone(),
                        Arc::new(Loaded {
                            name: row.package.clone(),
                            version: row.version,
                            compiled,
                        }),
                    );
                }
                Err(e) => {
                    tracing::error!(package = %row.package, version = row.version, error = %e,
                        "stored policy version does not compile; keeping the previous one");
                    if let Some(previous) = current.get(&row.package) {
                        next.insert(row.package.clone(), Arc::clone(previous));
                    }
                }
            }
        }
        *self
            .packages
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
        Ok(true)
    }

    /// Decides `request` with `loaded`'s package: a Cedar package at once; a Rego package once
    /// a Rego slot is free, within its evaluation budget (an exceeded budget is a deny with the
    /// reason).
    pub(crate) async fn decide(
        &self,
        loaded: &Loaded,
        request: &policy::Request,
    ) -> Result<policy::Decision, PolicyError> {
        if loaded.compiled.language() == Language::Cedar {
            return loaded.compiled.decide(request, &self.limits);
        }
        // INVARIANT: `rego_slots` is never closed, so this waits for a permit and gets one.
        let _slot = self.rego_slots.acquire().await.ok();
        loaded.compiled.decide(request, &self.limits)
    }

    /// The value of the Rego rule at `path` for `input` (OPA's data API), once a Rego slot is
    /// free, within the evaluation budget.
    pub(crate) async fn eval_rule(
        &self,
        loaded: &Loaded,
        path: &str,
        input: serde_json::Value,
    ) -> Result<Option<serde_json::Value>, PolicyError> {
        // INVARIANT: never closed, as above.
        let _slot = self.rego_slots.acquire().await.ok();
        loaded.compiled.eval_rule(path, input, &self.limits)
    }

    /// The context Warden fills in for an agent whose registration says `facts`, with the
    /// caller's `request` attributes.
    pub(crate) fn context(
        &self,
        facts: Option<workload::registry::AgentFacts>,
        hold: bool,
        request: policy::Attributes,
    ) -> policy::Context {
        let facts = facts.unwrap_or_default();
        policy::Context {
            // Manifest attributes have no source yet: empty, so a schema's closed
            // `attributes: {}` record accepts every agent.
            agent: policy::Agent {
                kind: facts.kind,
                owner: facts.owner,
                attributes: policy::Attributes::new(),
            },
            // The caller fills in the agent's task and risk score.
            task: None,
            risk_score: policy::RiskScore::ZERO,
            hold,
            delegation: Vec::new(),
            time: time::OffsetDateTime::now_utc().unix_timestamp(),
            request,
            relations: Vec::new(),
        }
    }
}

/// A new decision id.
pub(crate) fn decision_id() -> String {
    format!("dec_{}", uuid::Uuid::new_v4().simple())
}

/// What was asked, as the ledger records it.
pub(crate) struct Asked<'a, R: serde::Serialize + ?Sized> {
    /// Which API asked: `authorize`, `authzen`, `opa`.
    pub(crate) api: &'a str,
    /// The agent (empty for the OPA data API, whose input is opaque).
    pub(crate) principal: &'a str,
    /// The action (the rule path for the OPA data API).
    pub(crate) action: &'a str,
    /// `Type::id`.
    pub(crate) resource: &'a str,
    /// The whole question as evaluated — the `policy::Request` (the OPA input for the data
    /// API) — so a candidate policy can be replayed against it (`simulate`). Floats are
    /// recorded as their decimal text ([`NewEvent::field_serialized`]).
    pub(crate) request: &'a R,
}

/// The fields every `policy.decision` entry has (OCSF 3003 Authorize Session): who asked
/// what, of which package, and the answer.
fn decision_head<R: serde::Serialize + ?Sized>(
    actor: &str,
    decision_id: &str,
    asked: &Asked<'_, R>,
    loaded: &Loaded,
    allowed: bool,
) -> NewEvent {
    NewEvent::new(
        actor,
        "policy.decision",
        if allowed {
            Outcome::Success
        } else {
            Outcome::Denied
        },
        OcsfClass::AuthorizeSession,
    )
    .field("decision_id", decision_id)
    .field("api", asked.api)
    .field("principal", asked.principal)
    .field("action", asked.action)
    .field("resource", asked.resource)
    .field("decision", if allowed { "allow" } else { "deny" })
    .field("package", loaded.name.clone())
    .field("policy_version", loaded.version)
    .field("policy_sha256", loaded.compiled.content_hash())
}

/// The ledger record of a decision. Fails only if the request has no JSON form (see
/// [`NewEvent::field_serialized`]).
pub(crate) fn decision_event<R: serde::Serialize + ?Sized>(
    actor: &str,
    decision_id: &str,
    asked: Asked<'_, R>,
    loaded: &Loaded,
    decision: &policy::Decision,
) -> Result<NewEvent, ledger::LedgerError> {
    decision_head(actor, decision_id, &asked, loaded, decision.is_allowed())
        .field("determining", decision.determining.clone())
        .field("errors", decision.errors.clone())
        .field_serialized("request", asked.request)
}

/// The ledger record of a decision Warden made before any policy ran, because the principal,
/// an agent in its delegation chain or its task is on hold or on the denylist
/// ([`AppState::barred`](crate::AppState::barred)): a `policy.decision` like
/// [`decision_event`]'s — deny, no determining policy — with `reason` and `barred` saying
/// why. It names the package in force the question went to, but carries no `request`: no
/// policy evaluated one (so `simulate` has nothing to replay). The caller adds what was asked
/// (`attributes`, `delegation`, or the OPA `input`).
pub(crate) fn barred_event(
    actor: &str,
    decision_id: &str,
    asked: Asked<'_, ()>,
    loaded: &Loaded,
    barred: &crate::holds::Barred,
) -> NewEvent {
    decision_head(actor, decision_id, &asked, loaded, false)
        .field("determining", Vec::<String>::new())
        .field("errors", Vec::<String>::new())
        .field("reason", barred.reason())
        .field("barred", barred.to_json())
}

/// Refuses what is too large or too deep to record with a decision that no policy saw (a
/// barred one), as a decision's own limits would: over [`MAX_CONTEXT_BYTES`] as JSON, or
/// nested deeper than the context may be below `base` levels.
pub(crate) fn check_asked(value: &serde_json::Value, base: usize) -> Result<(), ApiError> {
    use axum::http::StatusCode;
    let limit = policy::Limits::default().max_context_depth;
    let mut stack = vec![(value, base)];
    while let Some((v, level)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match v {
            serde_json::Value::Object(m) => Box::new(m.values()),
            serde_json::Value::Array(a) => Box::new(a.iter()),
            _ => continue,
        };
        let level = level + 1;
        if level > limit {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "context_too_deep",
                format!("context nested deeper than {limit} levels"),
            ));
        }
        stack.extend(children.map(|c| (c, level)));
    }
    if serde_json::to_vec(value).map_or(usize::MAX, |v| v.len()) > MAX_CONTEXT_BYTES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "context_too_large",
            format!("context is larger than {MAX_CONTEXT_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// The request recorded with a decision, read back for replay. Only `context.risk_score` is
/// a number in a request, so only it is turned back from its recorded text; other attributes
/// that were floats stay text (and a candidate sees them as such).
pub(crate) fn replayable(recorded: &serde_json::Value) -> Option<policy::Request> {
    let mut value = recorded.clone();
    if let Some(score) = value
        .pointer_mut("/context/risk_score")
        .and_then(|s| s.as_str().map(str::to_owned))
    {
        let parsed: f64 = score.parse().ok()?;
        *value.pointer_mut("/context/risk_score")? = serde_json::Value::from(parsed);
    }
    serde_json::from_value(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference for what a decision records: the request's JSON value with every float
    /// turned into its decimal text (a risk score `0.2` becomes `"0.2"`).
    fn ledger_safe(value: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::Number(n) if !(n.is_i64() || n.is_u64()) => Value::String(n.to_string()),
            Value::Array(items) => Value::Array(items.into_iter().map(ledger_safe).collect()),
            Value::Object(map) => {
                Value::Object(map.into_iter().map(|(k, v)| (k, ledger_safe(v))).collect())
            }
            other => other,
        }
    }

    /// Rego evaluations leave one async worker free: one slot fewer than the runtime's
    /// workers, and one on a single worker.
    #[test]
    fn rego_slots_leave_a_worker_free() {
        for (workers, slots) in [(1, 1), (2, 1), (4, 3)] {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .build()
                .unwrap();
            assert_eq!(runtime.block_on(async { rego_slots() }), slots, "{workers}");
            let pdp = runtime.block_on(async { Pdp::default() });
            assert_eq!(pdp.rego_slots.available_permits(), slots, "{workers}");
        }
        assert_eq!(
            Pdp::default().simulations.available_permits(),
            MAX_SIMULATIONS
        );
    }

    #[test]
    fn recorded_requests_hold_no_floats_and_replay_exactly() {
        let request = policy::Request {
            principal: identity::SpiffeId::parse("spiffe://example.org/agent/coder").unwrap(),
            action: "write".into(),
            resource: policy::Resource {
                kind: "Repository".into(),
                id: "warden".into(),
            },
            context: policy::Context {
                agent: policy::Agent {
                    kind: "coder".into(),
                    owner: "team".into(),
                    attributes: policy::Attributes::new(),
                },
                task: None,
                risk_score: policy::RiskScore::from_f64(0.25).unwrap(),
                hold: false,
                delegation: Vec::new(),
                time: 1_767_225_600,
                request: serde_json::json!({"n": 3, "x": 1.5})
                    .as_object()
                    .cloned()
                    .unwrap(),
                relations: Vec::new(),
            },
        };
        // What a decision records (straight from the request) is what `ledger_safe` makes
        // of its JSON value.
        let recorded = ledger::CanonicalJson::of(&request).unwrap();
        let safe: serde_json::Value = serde_json::from_slice(recorded.as_bytes()).unwrap();
        assert_eq!(safe, ledger_safe(serde_json::to_value(&request).unwrap()));
        assert_eq!(safe["context"]["risk_score"], "0.25");
        assert_eq!(safe["context"]["request"]["x"], "1.5");
        assert_eq!(safe["context"]["request"]["n"], 3);
        let back = replayable(&safe).unwrap();
        assert_eq!(back.context.risk_score, request.context.risk_score);
        assert_eq!(back.principal, request.principal);
    }
}
