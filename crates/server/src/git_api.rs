//! Git push enforcement: `POST /v1/git/authorize`, asked by a repository's `pre-receive` hook
//! (`warden git pre-receive`, role `enforcer`) for every push. The pusher proves who it is with
//! a JWT-SVID for the audience `git:<repository>` alone — a credential good for that
//! repository's pushes and refused by every agent API, so the git server that sees it cannot
//! replay it — sent as the push option `warden-token=…`; each
//! ref update is one policy decision — principal the SPIFFE ID, action `write`, resource
//! `Repository::"<name>"`, request attributes `ref`, `old`, `new` and `operation` — recorded
//! in the ledger before it is answered. A push without a valid credential is refused and
//! recorded too.
//!
//! A refusal says why in plain words where Warden can tell. Warden does not guess from the
//! policy's text: it evaluates the same package again (not recorded) with one fact of the
//! context changed at a time — hold lifted, risk score 0, the relations the agent lacks added
//! — and names the facts whose change would have allowed the push, plus what it knows about
//! the agent's task (ended, absent). When no such fact explains it, the answer is the deny
//! itself: the forbidding policies, or that no policy permits the push.

use std::sync::Arc;

use axum::{Extension, extract::State, http::StatusCode};
use identity::SpiffeId;
use ledger::{NewEvent, OcsfClass, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::{
    AppState,
    auth::{Caller, Role},
    error::{ApiError, ApiJson, ErrorBody},
    pdp::Loaded,
    policy_api::{Decided, Question, RecordAs, ResourceRef, decide_as},
    relations::DEFAULT_STORE,
};

/// Most ref updates in one push that Warden decides.
pub(crate) const MAX_REFS: usize = 100;

/// Longest ref name accepted, bytes.
const MAX_REF_LEN: usize = 1024;

/// Longest repository name, bytes.
const MAX_REPOSITORY_LEN: usize = 128;

/// The Cedar/AuthZEN type of the resource a push writes to.
const RESOURCE_TYPE: &str = "Repository";

/// The action a push is decided as.
const ACTION: &str = "write";

/// Most extra (unrecorded) evaluations spent explaining the refusals of one push; past it a
/// refusal is reported as the bare deny.
const EXPLAIN_BUDGET: usize = 400;

/// One ref update of a push, as git gives it to the `pre-receive` hook.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefUpdate {
    /// The full ref name, e.g. `refs/heads/fix-123`.
    #[serde(rename = "ref")]
    name: String,
    /// The object id before the push (all zeros: the ref is created).
    old: String,
    /// The object id after the push (all zeros: the ref is deleted).
    new: String,
}

/// A push to authorize.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GitAuthorize {
    /// The repository's name (the resource `Repository::"<name>"`, relationship object
    /// `repository:<name>`): 1-128 of `[A-Za-z0-9._/-]`.
    repository: String,
    /// The pusher's JWT-SVID (audience: this server's issuer URL), from the push option
    /// `warden-token=…`; `null` when the pusher sent none.
    #[serde(default)]
    agent_token: Option<String>,
    /// The policy package to ask (optional when only one is in force).
    #[serde(default)]
    package: Option<String>,
    /// The ref updates, 1-100.
    refs: Vec<RefUpdate>,
}

/// The answer for one ref.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RefAnswer {
    #[serde(rename = "ref")]
    name: String,
    allowed: bool,
    /// Why, in plain words.
    reason: String,
    /// The ledger record of the decision; `null` when no decision was made (no valid
    /// credential, or the policy could not decide).
    decision_id: Option<String>,
}

/// The answer for a push: allowed only if every ref is.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GitAuthorizeResponse {
    allowed: bool,
    /// The pusher's SPIFFE ID, when its credential was valid.
    agent: Option<String>,
    refs: Vec<RefAnswer>,
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// A repository name: also a Cedar entity id and an OpenFGA object id (no `:`, `#`, space).
fn check_repository(name: &str) -> Result<(), ApiError> {
    let ok = (1..=MAX_REPOSITORY_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
        && !name.starts_with(['.', '/', '-'])
        && !name.ends_with('/')
        && !name.contains("..")
        && !name.contains("//");
    if ok {
        Ok(())
    } else {
        Err(bad(
            "invalid_repository",
            format!(
                "repository `{}` must be 1-{MAX_REPOSITORY_LEN} of [A-Za-z0-9._/-], not starting with `.`, `/` or `-`",
                name.escape_default()
            ),
        ))
    }
}

/// A ref name under `refs/`, by git's rules (`git check-ref-format`): no component starting
/// with `.` or ending with `.lock`, no `..`, `@{`, `//`, control characters, space, `~ ^ : ? * [ \`,
/// not ending with `/` or `.`.
fn check_ref(name: &str) -> Result<(), ApiError> {
    let why = if name.len() > MAX_REF_LEN {
        Some(format!("longer than {MAX_REF_LEN} bytes"))
    } else if !name.starts_with("refs/") {
        Some("not under refs/".to_owned())
    } else if name
        .bytes()
        .any(|b| b < 0x20 || b == 0x7f || b" ~^:?*[\\".contains(&b))
    {
        Some("holds a control character, a space or one of ~ ^ : ? * [ \\".to_owned())
    } else if name.contains("..") || name.contains("@{") || name.contains("//") {
        Some("holds `..`, `@{` or `//`".to_owned())
    } else if name.ends_with('/') || name.ends_with('.') {
        Some("ends with `/` or `.`".to_owned())
    } else if name
        .split('/')
        .any(|c| c.is_empty() || c.starts_with('.') || c.ends_with(".lock"))
    {
        Some("has an empty component, one starting with `.` or ending with `.lock`".to_owned())
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(bad(
            "invalid_ref",
            format!(
                "ref `{}` is not a valid ref name: {why}",
                name.escape_default()
            ),
        )),
    }
}

/// An object id: SHA-1 (40) or SHA-256 (64) lowercase hex.
fn check_oid(what: &str, oid: &str) -> Result<(), ApiError> {
    if matches!(oid.len(), 40 | 64)
        && oid
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(bad(
            "invalid_object_id",
            format!(
                "`{what}` must be an object id (40 or 64 lowercase hex digits), not `{}`",
                oid.chars().take(80).collect::<String>().escape_default()
            ),
        ))
    }
}

fn is_zero(oid: &str) -> bool {
    oid.bytes().all(|b| b == b'0')
}

/// `create`, `update` or `delete`.
fn operation(u: &RefUpdate) -> &'static str {
    if is_zero(&u.old) {
        "create"
    } else if is_zero(&u.new) {
        "delete"
    } else {
        "update"
    }
}

fn check_request(req: &GitAuthorize) -> Result<(), ApiError> {
    check_repository(&req.repository)?;
    if req.refs.is_empty() || req.refs.len() > MAX_REFS {
        return Err(bad(
            "invalid_request",
            format!("a push names 1-{MAX_REFS} ref updates"),
        ));
    }
    for u in &req.refs {
        check_ref(&u.name)?;
        check_oid("old", &u.old)?;
        check_oid("new", &u.new)?;
        if u.old.len() != u.new.len() || (is_zero(&u.old) && is_zero(&u.new)) {
            return Err(bad(
                "invalid_object_id",
                format!(
                    "ref `{}`: `old` and `new` do not describe an update",
                    u.name
                ),
            ));
        }
    }
    Ok(())
}

/// Authorizes a git push, ref by ref (role `enforcer`): the pusher's JWT-SVID is validated
/// (audience: `git:<repository>` and nothing else; denylist, holds, federation limits), then
/// each ref update is one
/// decision — `write` on `Repository::"<repository>"` with request attributes `ref`, `old`,
/// `new` and `operation` (`create`, `update`, `delete`) — recorded with api `git`. A push
/// without a valid credential is refused, every ref, with a `git.push` ledger entry. The push
/// is allowed only if every ref is.
#[utoipa::path(post, path = "/v1/git/authorize", operation_id = "git_authorize",
    tag = "policy", security(("bearer" = [])), request_body = GitAuthorize,
    responses((status = 200, body = GitAuthorizeResponse), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn authorize(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<GitAuthorize>,
) -> Result<ApiJson<GitAuthorizeResponse>, ApiError> {
    caller.require(Role::Enforcer)?;
    check_request(&req)?;
    let refs: Vec<String> = req.refs.iter().map(|u| u.name.clone()).collect();

    // The credential: without a valid one nothing is decided, every ref is refused.
    let token = req
        .agent_token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let audience = crate::agent_auth::git_audience(&req.repository);
    let agent = match token {
        None => Err((
            "no_credential",
            format!(
                "no Warden credential: push with `-o warden-token=<JWT-SVID>`, a JWT-SVID for audience `{audience}` (e.g. `warden svid jwt --audience {audience}`)"
            ),
        )),
        Some(t) => crate::agent_auth::git_push_svid(&state, t, &req.repository)
            .map(|agent| agent.id)
            .map_err(|r| (r.code, format!("credential refused: {}", r.reason))),
    };
    let agent = match agent {
        Ok(agent) => agent,
        Err((code, reason)) => {
            let mut event = NewEvent::new(
                caller.actor(),
                "git.push",
                Outcome::Denied,
                OcsfClass::Authentication,
            )
            .field("repository", req.repository.clone())
            .field("refs", json!(refs))
            .field("code", code)
            .field("reason", reason.clone());
            if let Some(t) = token {
                // Recorded only as an HMAC: repeated attempts correlate, the token never shows.
                event = event.secret("agent_token", t);
            }
            // Within the enforcer's budget of refusal entries (counted past it).
            caller.record_refusal(&state, event).await?;
            return Ok(ApiJson(GitAuthorizeResponse {
                allowed: false,
                agent: None,
                refs: refs
                    .into_iter()
                    .map(|name| RefAnswer {
                        name,
                        allowed: false,
                        reason: reason.clone(),
                        decision_id: None,
                    })
                    .collect(),
            }));
        }
    };

    // A package that cannot be chosen is the hook's configuration error, not a deny.
    state.pdp.choose(req.package.as_deref())?;

    let mut answers = Vec::with_capacity(req.refs.len());
    let mut undecided = Vec::new();
    let mut explainer = Explainer::new(&state, &agent, &req.repository);
    for u in &req.refs {
        let mut attributes = Map::new();
        attributes.insert("ref".into(), json!(u.name));
        attributes.insert("old".into(), json!(u.old));
        attributes.insert("new".into(), json!(u.new));
        attributes.insert("operation".into(), json!(operation(u)));
        let asked = decide_as(
            &state,
            RecordAs::Caller(&caller),
            Question {
                api: "git",
                package: req.package.as_deref(),
                principal: agent.as_str(),
                action: ACTION.into(),
                resource: ResourceRef {
                    kind: RESOURCE_TYPE.into(),
                    id: req.repository.clone(),
                },
                attributes: attributes.clone(),
                delegation: Vec::new(),
                task: None,
                token: None,
            },
        )
        .await;
        match asked {
            Ok(Decided {
                loaded,
                decision,
                id: decision_id,
                barred,
            }) => {
                let reason = if let Some(barred) = barred {
                    barred.reason()
                } else if decision.is_allowed() {
                    match policies(&decision.determining) {
                        Some(p) if decision.determining.len() == 1 => format!("{p} permits it"),
                        Some(p) => format!("{p} permit it"),
                        None => "policy permits it".into(),
                    }
                } else {
                    explainer
                        .explain(&loaded, &attributes, &decision)
                        .await
                        .unwrap_or_else(|| "policy denied".into())
                };
                answers.push(RefAnswer {
                    name: u.name.clone(),
                    allowed: decision.is_allowed(),
                    reason,
                    decision_id: Some(decision_id),
                });
            }
            // Not recorded: the ledger is down. Fail the whole push, never allow.
            Err(e) if e.status() == StatusCode::SERVICE_UNAVAILABLE => return Err(e),
            // The package cannot decide this request (e.g. its schema lacks an attribute).
            Err(e) => {
                let reason = format!("policy could not decide: {}", e.body().message);
                undecided.push(json!({"ref": u.name, "reason": reason}));
                answers.push(RefAnswer {
                    name: u.name.clone(),
                    allowed: false,
                    reason,
                    decision_id: None,
                });
            }
        }
    }
    if !undecided.is_empty() {
        caller
            .record_for_request(
                &state,
                NewEvent::new(
                    caller.actor(),
                    "git.push",
                    Outcome::Denied,
                    OcsfClass::AuthorizeSession,
                )
                .field("repository", req.repository.clone())
                .field("agent", agent.to_string())
                .field("code", "policy_error")
                .field("refs", Value::Array(undecided)),
            )
            .await?;
    }
    Ok(ApiJson(GitAuthorizeResponse {
        allowed: answers.iter().all(|a| a.allowed),
        agent: Some(agent.to_string()),
        refs: answers,
    }))
}

/// `policy `a`` / `policies `a`, `b``, or `None` for an empty list.
fn policies(ids: &[String]) -> Option<String> {
    match ids {
        [] => None,
        [one] => Some(format!("policy `{one}`")),
        many => Some(format!(
            "policies {}",
            many.iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A risk score as people write it: `0.7`, `0.5`, `0.1234`.
fn score_text(score: policy::RiskScore) -> String {
    let t = score.ten_thousandths();
    let text = format!("{}.{:04}", t / 10_000, t % 10_000);
    let text = text.trim_end_matches('0');
    text.strip_suffix('.')
        .map_or_else(|| text.to_owned(), |s| format!("{s}.0"))
}

/// Explains refusals of one push: what Warden knows about the agent (its task for this
/// repository, hold, risk score, relations) and which of those facts the policy turned on.
struct Explainer<'a> {
    state: &'a AppState,
    agent: &'a SpiffeId,
    repository: &'a str,
    /// Unrecorded evaluations left.
    budget: usize,
    /// The agent's most recent task about this repository that is not open, looked up once.
    ended: Option<Option<store::TaskRow>>,
}

/// The facts a refusal may be explained by.
struct Facts {
    /// The open task this decision saw, when it is about this repository.
    task: Option<store::TaskRow>,
    /// The agent itself is on hold (else, if `hold`, its task is).
    agent_held: bool,
}

impl<'a> Explainer<'a> {
    fn new(state: &'a AppState, agent: &'a SpiffeId, repository: &'a str) -> Self {
        Self {
            state,
            agent,
            repository,
            budget: EXPLAIN_BUDGET,
            ended: None,
        }
    }

    fn object(&self) -> String {
        format!("{}:{}", RESOURCE_TYPE.to_lowercase(), self.repository)
    }

    /// Decides `context` with `loaded` without recording it: `Some(allowed)`, `None` when the
    /// package cannot decide it or the budget is spent.
    fn eval(&mut self, loaded: &Loaded, context: &policy::Context) -> Option<bool> {
        if self.budget == 0 {
            return None;
        }
        self.budget -= 1;
        let request = policy::Request {
            principal: self.agent.clone(),
            action: ACTION.into(),
            resource: policy::Resource {
                kind: RESOURCE_TYPE.into(),
                id: self.repository.to_owned(),
            },
            context: context.clone(),
        };
        loaded
            .compiled
            .decide(&request, &self.state.pdp.limits)
            .ok()
            .map(|d| d.is_allowed())
    }

    /// The context the decision saw, rebuilt the way [`decide_as`] builds it, with the facts
    /// behind it. `None` if it cannot be rebuilt.
    fn context(
        &self,
        loaded: &Loaded,
        attributes: &Map<String, Value>,
    ) -> Option<(policy::Context, Facts)> {
        let state = self.state;
        let built = crate::policy_api::decision_context(
            state,
            loaded,
            self.agent,
            ACTION,
            &ResourceRef {
                kind: RESOURCE_TYPE.into(),
                id: self.repository.to_owned(),
            },
            attributes.clone(),
            Vec::new(),
        );
        if built.relation_error.is_some() {
            return None;
        }
        let context = built.context;
        let task = built.task;
        let agent_held = state.denylist.denies_id(self.agent);
        let object = self.object();
        let task = task
            .filter(|t| t.resources.contains(&object))
            .map(|t| t.row.clone());
        Some((context, Facts { task, agent_held }))
    }

    /// The relations the default store's model defines on repositories.
    fn model_relations(&self) -> Vec<String> {
        let Some(rel) = self.state.relations.get(DEFAULT_STORE) else {
            return Vec::new();
        };
        let snap = rel.read();
        let model = snap.model();
        model
            .type_definition(RESOURCE_TYPE)
            .or_else(|| model.type_definition(&RESOURCE_TYPE.to_lowercase()))
            .map(|d| d.relations.iter().map(|r| r.name.clone()).collect())
            .unwrap_or_default()
    }

    /// Why the push was refused, in plain words; `None` when Warden cannot tell.
    async fn explain(
        &mut self,
        loaded: &Loaded,
        attributes: &Map<String, Value>,
        decision: &policy::Decision,
    ) -> Option<String> {
        if !decision.errors.is_empty() {
            return Some(format!(
                "policy could not decide: {}",
                decision.errors.join("; ")
            ));
        }
        let (actual, facts) = self.context(loaded, attributes)?;
        // The facts changed since the decision: what it saw cannot be explained from now.
        if self.eval(loaded, &actual)? {
            return None;
        }
        let wants_relations = loaded.compiled.wants_relations(ACTION);
        let missing: Vec<String> = if wants_relations {
            self.model_relations()
                .into_iter()
                .filter(|r| !actual.relations.contains(r))
                .collect()
        } else {
            Vec::new()
        };
        // Every fact at its most favourable: what is left denies for another reason.
        let mut good = actual.clone();
        good.hold = false;
        good.risk_score = policy::RiskScore::ZERO;
        good.relations.extend(missing.iter().cloned());
        good.relations.sort();
        let good_allows = self.eval(loaded, &good)?;

        let mut causes = Vec::new();
        let mut lacks_relation = None;
        if good_allows {
            if actual.hold {
                let mut c = good.clone();
                c.hold = true;
                if self.eval(loaded, &c) == Some(false) {
                    causes.push(match (&facts.agent_held, &facts.task) {
                        (false, Some(t)) => format!("task `{}` is on hold", t.id),
                        _ => format!("agent `{}` is on hold", self.agent),
                    });
                }
            }
            if !missing.is_empty() {
                let mut c = good.clone();
                c.relations = actual.relations.clone();
                if self.eval(loaded, &c) == Some(false) {
                    let mut enough = Vec::new();
                    for r in &missing {
                        let mut one = c.clone();
                        one.relations.push(r.clone());
                        one.relations.sort();
                        if self.eval(loaded, &one) == Some(true) {
                            enough.push(format!("`{r}`"));
                        }
                    }
                    lacks_relation = Some(if enough.is_empty() {
                        format!(
                            "`{}` lacks the relations to repository `{}` this push needs",
                            self.agent, self.repository
                        )
                    } else {
                        format!(
                            "`{}` is not a {} of repository `{}`",
                            self.agent,
                            enough.join(" or "),
                            self.repository
                        )
                    });
                }
            }
            if actual.risk_score > policy::RiskScore::ZERO {
                let mut c = good.clone();
                c.risk_score = actual.risk_score;
                if self.eval(loaded, &c) == Some(false) {
                    causes.push(self.risk_cause(loaded, &c));
                }
            }
        }

        // The task: ended or absent explains a missing relation or a policy that needs one.
        let task_matters = lacks_relation.is_some() || !good_allows;
        if facts.task.is_none() && task_matters {
            causes.insert(0, self.no_task().await);
        } else if let Some(lacks) = lacks_relation {
            let role = match &facts.task {
                Some(t) => self
                    .state
                    .store
                    .task_agents(&t.id)
                    .await
                    .ok()
                    .and_then(|agents| {
                        agents
                            .into_iter()
                            .find(|a| a.agent == self.agent.as_str())
                            .map(|a| format!(" (its role on task `{}` is `{}`)", t.id, a.role))
                    })
                    .unwrap_or_default(),
                None => String::new(),
            };
            causes.push(format!("{lacks}{role}"));
        }
        if !good_allows {
            let during = facts
                .task
                .as_ref()
                .map(|t| format!(" (task `{}`, a `{}` task)", t.id, t.kind))
                .unwrap_or_default();
            match policies(&decision.determining) {
                Some(p) => causes.push(format!("forbidden by {p}{during}")),
                None if facts.task.is_some() => {
                    causes.push(format!("no policy permits this push{during}"));
                }
                None => {}
            }
        }
        if causes.is_empty() {
            return None;
        }
        Some(causes.join("; "))
    }

    /// `risk score X ≥ T`, where T is the lowest score at which the policy refuses this push
    /// with every other fact unchanged (found by bisection; the policy allows it at 0).
    fn risk_cause(&mut self, loaded: &Loaded, at_actual: &policy::Context) -> String {
        let actual = at_actual.risk_score;
        let too_high = || {
            format!(
                "risk score {} is too high for this push",
                score_text(actual)
            )
        };
        let (mut allowed, mut denied) = (0u16, actual.ten_thousandths());
        let mut c = at_actual.clone();
        while denied - allowed > 1 {
            let mid = allowed + (denied - allowed) / 2;
            // INVARIANT: mid < actual, a valid score; no result is a bare "too high".
            let Ok(score) = policy::RiskScore::from_ten_thousandths(mid) else {
                return too_high();
            };
            c.risk_score = score;
            match self.eval(loaded, &c) {
                Some(true) => allowed = mid,
                Some(false) => denied = mid,
                None => return too_high(),
            }
        }
        match policy::RiskScore::from_ten_thousandths(denied) {
            Ok(limit) => format!("risk score {} ≥ {}", score_text(actual), score_text(limit)),
            Err(_) => too_high(),
        }
    }

    /// The agent has no open task about this repository: the last one it had, if any.
    async fn no_task(&mut self) -> String {
        if self.ended.is_none() {
            let object = self.object();
            let last = self
                .state
                .store
                .task_list(None, Some(self.agent.as_str()), 50)
                .await
                .ok()
                .and_then(|tasks| {
                    tasks
                        .into_iter()
                        .find(|t| crate::tasks_api::resources_of(t).contains(&object))
                });
            self.ended = Some(last);
        }
        match self.ended.as_ref().and_then(Option::as_ref) {
            Some(t) => {
                let state = if t.state == "open" {
                    "expired"
                } else {
                    t.state.as_str()
                };
                format!("task `{}` is {state} (no open task grants write)", t.id)
            }
            None => format!(
                "`{}` has no open task for repository `{}`",
                self.agent, self.repository
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names() {
        for ok in [
            "refs/heads/main",
            "refs/heads/fix/T-1",
            "refs/tags/v1.0",
            "refs/heads/a.b",
        ] {
            assert!(check_ref(ok).is_ok(), "{ok}");
        }
        for bad in [
            "main",
            "refs/heads/",
            "refs/heads/a..b",
            "refs/heads/a b",
            "refs/heads/a~1",
            "refs/heads/a^",
            "refs/heads/a:b",
            "refs/heads/a?",
            "refs/heads/a*",
            "refs/heads/a[",
            "refs/heads/a\\b",
            "refs/heads/.hidden",
            "refs/heads/x.lock",
            "refs/heads/a//b",
            "refs/heads/a@{1}",
            "refs/heads/a.",
            "refs/heads/a\u{7f}",
            "refs/heads/a\nb",
        ] {
            assert!(check_ref(bad).is_err(), "{bad:?}");
        }
        assert!(check_ref(&format!("refs/heads/{}", "a".repeat(MAX_REF_LEN))).is_err());
    }

    #[test]
    fn repository_names() {
        for ok in ["warden", "acme/warden", "bugfix-demo", "a.b_c"] {
            assert!(check_repository(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", ".git", "/abs", "a//b", "a/../b", "a:b", "a#b", "a b", "a/", "-x",
        ] {
            assert!(check_repository(bad).is_err(), "{bad:?}");
        }
        assert!(check_repository(&"a".repeat(MAX_REPOSITORY_LEN + 1)).is_err());
    }

    #[test]
    fn object_ids_and_operations() {
        let zero = "0".repeat(40);
        let a = "a".repeat(40);
        assert!(check_oid("old", &a).is_ok());
        assert!(check_oid("old", &"b".repeat(64)).is_ok());
        assert!(check_oid("old", &"A".repeat(40)).is_err());
        assert!(check_oid("old", "abc").is_err());
        let u = |old: &str, new: &str| RefUpdate {
            name: "refs/heads/x".into(),
            old: old.into(),
            new: new.into(),
        };
        assert_eq!(operation(&u(&zero, &a)), "create");
        assert_eq!(operation(&u(&a, &zero)), "delete");
        assert_eq!(operation(&u(&a, &"c".repeat(40))), "update");
        let req = |refs| GitAuthorize {
            repository: "r".into(),
            agent_token: None,
            package: None,
            refs,
        };
        assert!(check_request(&req(vec![u(&zero, &zero)])).is_err());
        assert!(check_request(&req(vec![u(&a, &"b".repeat(64))])).is_err());
        assert!(check_request(&req(Vec::new())).is_err());
        assert!(check_request(&req((0..=MAX_REFS).map(|_| u(&zero, &a)).collect())).is_err());
        assert!(check_request(&req(vec![u(&zero, &a)])).is_ok());
    }

    #[test]
    fn scores_read_as_people_write_them() {
        let s = |t| score_text(policy::RiskScore::from_ten_thousandths(t).unwrap());
        assert_eq!(s(7000), "0.7");
        assert_eq!(s(5000), "0.5");
        assert_eq!(s(1234), "0.1234");
        assert_eq!(s(0), "0.0");
        assert_eq!(s(10_000), "1.0");
    }
}
