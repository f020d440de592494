//! The decision request and the one context shape both policy languages see.

use std::fmt;
use std::io;

use identity::SpiffeId;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::PolicyError;

/// Attributes as a JSON object: manifest and task attributes, the caller's request attributes.
pub type Attributes = Map<String, Value>;

/// One authorization question: may `principal` do `action` on `resource`, given `context`?
///
/// The JSON form of a `Request` (its `Serialize` output) is exactly the `input` document a
/// Rego package sees:
///
/// ```json
/// {
///   "principal": "spiffe://example.org/agent/coder",
///   "action": "write",
///   "resource": {"type": "Repository", "id": "warden"},
///   "context": {
///     "agent": {"kind": "coder", "owner": "platform-team", "attributes": {}},
///     "task": {"id": "t-42", "type": "patch_bug", "attributes": {}},
///     "risk_score": 0.2,
///     "hold": false,
///     "delegation": ["spiffe://example.org/agent/planner"],
///     "time": 1767225600,
///     "request": {}
///   }
/// }
/// ```
///
/// Cedar sees the same facts as `Agent::"<principal>"`, `Action::"<action>"`,
/// `<resource.type>::"<resource.id>"` and a `context` record of the same shape, where
/// `risk_score` is a Cedar `decimal` and `delegation` a `Set<String>` (see [`Context`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The agent asking, as proven by its credential (never taken from the request body).
    pub principal: SpiffeId,
    /// The action, e.g. `write`: a Cedar action id in the package's schema.
    pub action: String,
    /// What the action is on.
    pub resource: Resource,
    /// Facts the PDP fills in itself plus the caller's request attributes.
    pub context: Context,
}

/// The object of a request: an entity type and id, e.g. `Repository` / `warden`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// The entity type; in Cedar it must be declared in the schema (it may be namespaced,
    /// `Git::Repository`). Serialized as `type`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The entity id.
    pub id: String,
}

/// The decision context. Everything except `request` is filled in by the PDP's caller inside
/// Warden from its own records, so an agent cannot lie about it.
///
/// | field | JSON (Rego `input.context`) | Cedar `context` type |
/// |---|---|---|
/// | `agent` | `{"kind", "owner", "attributes": {…}}` | record |
/// | `task` | `{"id", "type", "attributes": {…}}`, absent when the agent has no current task | optional record (`task?`) |
/// | `risk_score` | number in `[0, 1]`, at most 4 decimals | `decimal` |
/// | `hold` | bool | `Bool` |
/// | `delegation` | array of SPIFFE IDs, presenter first | `Set<String>` |
/// | `time` | integer, Unix seconds | `Long` |
/// | `request` | the caller's attributes, an object | record |
///
/// A Cedar schema must declare every attribute supplied here (optional ones with `?`);
/// anything undeclared makes the request invalid rather than silently ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// The agent's registration metadata and manifest attributes.
    pub agent: Agent,
    /// The agent's current task, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    /// The agent's current risk score (0 until monitoring exists).
    pub risk_score: RiskScore,
    /// Whether the agent is on hold.
    pub hold: bool,
    /// The delegation chain of the presented token (SPIFFE IDs).
    pub delegation: Vec<SpiffeId>,
    /// The decision time, Unix seconds, as the caller read it from its clock.
    pub time: i64,
    /// The caller's request attributes.
    pub request: Attributes,
    /// The relations the principal holds on the resource in the relationship store (e.g.
    /// `writer`), sorted; filled in by Warden for packages that use them
    /// ([`CompiledPackage::wants_relations`](crate::CompiledPackage::wants_relations)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relations: Vec<String>,
}

/// Registration metadata and manifest attributes of the requesting agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// The kind of agent from its registration, e.g. `coder`.
    pub kind: String,
    /// Who registered (owns) the agent.
    pub owner: String,
    /// Attributes from the agent's manifest.
    pub attributes: Attributes,
}

/// The agent's current task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// The task id.
    pub id: String,
    /// The task type, e.g. `patch_bug`. Serialized as `type`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The task's attributes.
    pub attributes: Attributes,
}

/// A risk score in `[0, 1]` with four decimal places — the precision of Cedar's `decimal`.
///
/// In JSON (and so in Rego) it is a number; in Cedar a `decimal`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RiskScore(u16);

impl RiskScore {
    /// No risk: the score of every agent until monitoring exists.
    pub const ZERO: RiskScore = RiskScore(0);
    /// The largest score, 1.0.
    pub const MAX: RiskScore = RiskScore(10_000);

    /// A score from ten-thousandths (`2_500` is 0.25); more than 10,000 is refused.
    pub fn from_ten_thousandths(value: u16) -> Result<Self, PolicyError> {
        if value > Self::MAX.0 {
            return Err(PolicyError::InvalidRequest {
                reason: format!("risk score `{value}` ten-thousandths is above 1.0"),
            });
        }
        Ok(Self(value))
    }

    /// A score from a float in `[0, 1]`, rounded to four decimals; NaN and out-of-range
    /// values are refused.
    pub fn from_f64(value: f64) -> Result<Self, PolicyError> {
        if !(0.0..=1.0).contains(&value) {
            return Err(PolicyError::InvalidRequest {
                reason: format!("risk score `{value}` is not in [0, 1]"),
            });
        }
        let scaled = (value * 10_000.0).round();
        // INVARIANT: value is in [0, 1], so scaled is in [0, 10000] and fits a u16.
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "range checked above"
        )]
        let ten_thousandths = scaled as u16;
        Self::from_ten_thousandths(ten_thousandths)
    }

    /// The score in ten-thousandths.
    pub fn ten_thousandths(self) -> u16 {
        self.0
    }

    /// The score as a float (what Rego compares).
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }

    /// The Cedar `decimal` literal text, always four decimals: `0.2500`.
    pub fn to_cedar_decimal(self) -> String {
        format!("{}.{:04}", self.0 / 10_000, self.0 % 10_000)
    }
}

impl fmt::Display for RiskScore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_cedar_decimal())
    }
}

impl Serialize for RiskScore {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.as_f64())
    }
}

impl<'de> Deserialize<'de> for RiskScore {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        RiskScore::from_f64(value).map_err(D::Error::custom)
    }
}

/// Limits applied to every decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest context accepted, in bytes of its JSON serialization (default 64 KiB).
    pub max_context_bytes: usize,
    /// Deepest context accepted, counting the context object itself as level 1 and every
    /// nested object or array as one more (default 16).
    pub max_context_depth: usize,
    /// Wall-clock budget for one Rego evaluation (default 10 ms); past it the decision is a
    /// deny carrying the reason.
    pub rego_time_limit: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_context_bytes: 64 * 1024,
            max_context_depth: 16,
            rego_time_limit: std::time::Duration::from_millis(10),
        }
    }
}

/// Checks the context against `limits`.
///
/// One walk, without recursion, finds the depth and an upper bound of the JSON size, so a
/// hostile, deeply nested attribute map is refused before anything recursive (serialization,
/// conversion) touches it. Only a context whose bound passes the size limit is serialized to
/// count its bytes exactly — a small one is accepted without.
pub(crate) fn check_context(context: &Context, limits: &Limits) -> Result<(), PolicyError> {
    // context = 1, agent / task = 2, their attributes = 3; delegation array and request = 2.
    let mut depth = 2;
    // Every field name, bracket and separator of the context, `hold`, `time` and
    // `risk_score` (≤ 24 characters each, as numbers go): well under this.
    let mut bytes = 256usize;
    let task = context.task.as_ref();
    for (base, map) in [
        (3, Some(&context.agent.attributes)),
        (3, task.map(|task| &task.attributes)),
        (2, Some(&context.request)),
    ] {
        if let Some(map) = map {
            let (deepest, size) = walk(map.iter().map(|(k, v)| (Some(k), v)), base, limits);
            depth = depth.max(deepest);
            bytes = bytes.saturating_add(size);
        }
    }
    if depth > limits.max_context_depth {
        return Err(PolicyError::ContextTooDeep {
            limit: limits.max_context_depth,
        });
    }
    let strings = [&context.agent.kind, &context.agent.owner]
        .into_iter()
        .chain(task.into_iter().flat_map(|task| [&task.id, &task.kind]))
        .chain(&context.relations)
        .map(|s| string_bound(s))
        .chain(
            context
                .delegation
                .iter()
                .map(|id| string_bound(id.as_str())),
        );
    for size in strings {
        bytes = bytes.saturating_add(size.saturating_add(1));
    }
    if bytes > limits.max_context_bytes {
        exact_size(context, limits)?;
    }
    Ok(())
}

/// Checks an arbitrary JSON document (Rego `input` sent as is) against the context limits.
pub(crate) fn check_value(value: &Value, limits: &Limits) -> Result<(), PolicyError> {
    let (depth, bytes) = walk(std::iter::once((None, value)), 0, limits);
    if depth > limits.max_context_depth {
        return Err(PolicyError::ContextTooDeep {
            limit: limits.max_context_depth,
        });
    }
    if bytes > limits.max_context_bytes {
        exact_size(value, limits)?;
    }
    Ok(())
}

/// Serializes `value` to count its bytes, stopping once past the limit.
fn exact_size(value: &impl Serialize, limits: &Limits) -> Result<(), PolicyError> {
    let mut counter = ByteCounter {
        count: 0,
        limit: limits.max_context_bytes,
    };
    if serde_json::to_writer(&mut counter, value).is_err() || counter.count > counter.limit {
        return Err(PolicyError::ContextTooLarge {
            limit: limits.max_context_bytes,
        });
    }
    Ok(())
}

/// At most the bytes of `s` as a JSON string: quotes, and every byte escaped as `\u00XX`.
fn string_bound(s: &str) -> usize {
    s.len().saturating_mul(6).saturating_add(2)
}

/// Walks the members of a container at level `base` (with their keys, for an object) without
/// recursion. Returns the deepest level reached, counting every nested object or array as one
/// more (it stops once past the depth limit), and an upper bound of the bytes the container
/// takes as JSON: brackets, separators, keys and values, a number counted as 24 characters
/// (the longest `serde_json` writes).
fn walk<'a>(
    members: impl Iterator<Item = (Option<&'a String>, &'a Value)>,
    base: usize,
    limits: &Limits,
) -> (usize, usize) {
    let mut deepest = base;
    let mut bytes = 2usize;
    let mut stack: Vec<(Option<&String>, &Value, usize)> =
        members.map(|(key, value)| (key, value, base)).collect();
    while let Some((key, value, parent)) = stack.pop() {
        let key_bytes = key.map_or(0, |k| string_bound(k).saturating_add(1));
        bytes = bytes.saturating_add(key_bytes.saturating_add(1));
        let value_bytes = match value {
            Value::Object(map) => {
                deepest = deepest.max(parent + 1);
                stack.extend(map.iter().map(|(k, v)| (Some(k), v, parent + 1)));
                2
            }
            Value::Array(items) => {
                deepest = deepest.max(parent + 1);
                stack.extend(items.iter().map(|v| (None, v, parent + 1)));
                2
            }
            Value::String(s) => string_bound(s),
            Value::Number(_) => 24,
            Value::Bool(_) => 5,
            Value::Null => 4,
        };
        bytes = bytes.saturating_add(value_bytes);
        if deepest > limits.max_context_depth {
            break;
        }
    }
    (deepest, bytes)
}

/// A writer that only counts, and fails once past its limit so serialization stops early.
struct ByteCounter {
    count: usize,
    limit: usize,
}

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.count = self.count.saturating_add(buf.len());
        if self.count > self.limit {
            return Err(io::Error::other("context too large"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context(request: Value) -> Context {
        let Value::Object(request) = request else {
            unreachable!("test passes objects")
        };
        Context {
            agent: Agent {
                kind: "coder".into(),
                owner: "team".into(),
                attributes: Map::new(),
            },
            task: None,
            risk_score: RiskScore::ZERO,
            hold: false,
            delegation: vec![],
            time: 0,
            request,
            relations: vec![],
        }
    }

    fn nested(levels: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!({ "n": v });
        }
        v
    }

    #[test]
    fn depth_counts_every_level() {
        let limits = Limits::default();
        // request at level 2; `nested(k)` adds k levels below it.
        for (inner, ok) in [(0, true), (13, true), (14, true), (15, false), (400, false)] {
            let ctx = context(json!({ "x": nested(inner) }));
            let got = check_context(&ctx, &limits);
            assert_eq!(got.is_ok(), ok, "inner depth {inner}: {got:?}");
            // The walk agrees with the depth of the full JSON form.
            let depth = json_depth(&serde_json::to_value(&ctx).unwrap());
            assert_eq!(depth <= limits.max_context_depth, ok, "inner depth {inner}");
        }
    }

    fn json_depth(v: &Value) -> usize {
        match v {
            Value::Object(m) => 1 + m.values().map(json_depth).max().unwrap_or(0),
            Value::Array(a) => 1 + a.iter().map(json_depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    #[test]
    fn size_limit_is_bytes_of_json() {
        let limits = Limits::default();
        for (len, ok) in [(100, true), (60_000, true), (70_000, false)] {
            let ctx = context(json!({ "blob": "x".repeat(len) }));
            assert_eq!(check_context(&ctx, &limits).is_ok(), ok, "len {len}");
        }
    }

    /// The limit is exact at the byte: a context of exactly the limit passes, one byte more is
    /// refused — whether the quick bound or the serialization decides.
    #[test]
    fn size_limit_is_exact_at_the_boundary() {
        let planner = SpiffeId::parse("spiffe://example.org/agent/planner").unwrap();
        let cases = [
            context(json!({})),
            context(json!({ "blob": "x".repeat(300) })),
            context(
                json!({ "quote\"d": "tab\t, newline\n, nul\u{0}, \\ and \u{7f}", "é": "ünï😀" }),
            ),
            context(
                json!({ "n": [1, -9_223_372_036_854_775_808_i64, 18_446_744_073_709_551_615_u64, 1.5e-300, -0.1] }),
            ),
            context(json!({ "deep": [[[{ "a": [true, false, null] }]]], "empty": {} })),
            Context {
                task: Some(Task {
                    id: "t\"1".into(),
                    kind: "patch_bug".into(),
                    attributes: json!({ "k": "v" }).as_object().cloned().unwrap(),
                }),
                delegation: vec![planner.clone(), planner],
                relations: vec!["writer".into(), "reader".into()],
                risk_score: RiskScore::from_f64(0.1234).unwrap(),
                time: -1_767_225_600,
                hold: true,
                ..context(json!({ "x": "y" }))
            },
        ];
        for (i, ctx) in cases.iter().enumerate() {
            let exact = serde_json::to_vec(ctx).unwrap().len();
            let at = |limit| Limits {
                max_context_bytes: limit,
                ..Limits::default()
            };
            assert!(
                check_context(ctx, &at(exact)).is_ok(),
                "case {i}: {exact} bytes at its size"
            );
            assert!(
                matches!(
                    check_context(ctx, &at(exact - 1)),
                    Err(PolicyError::ContextTooLarge { .. })
                ),
                "case {i}: {exact} bytes one under"
            );
            let value = serde_json::to_value(ctx).unwrap();
            assert!(
                check_value(&value, &at(exact)).is_ok(),
                "case {i} as a value"
            );
            assert!(
                check_value(&value, &at(exact - 1)).is_err(),
                "case {i} as a value, one under"
            );
        }
    }

    #[test]
    fn risk_score_encodings() {
        for (f, tt, cedar, ok) in [
            (0.0, 0, "0.0000", true),
            (0.2, 2_000, "0.2000", true),
            (0.49995, 5_000, "0.5000", true),
            (1.0, 10_000, "1.0000", true),
            (1.5, 0, "", false),
            (-0.1, 0, "", false),
            (f64::NAN, 0, "", false),
        ] {
            match RiskScore::from_f64(f) {
                Ok(score) => {
                    assert!(ok, "{f} accepted");
                    assert_eq!(score.ten_thousandths(), tt);
                    assert_eq!(score.to_cedar_decimal(), cedar);
                }
                Err(_) => assert!(!ok, "{f} refused"),
            }
        }
        assert!(RiskScore::from_ten_thousandths(10_001).is_err());
    }

    #[test]
    fn request_json_is_the_documented_shape() {
        let request = Request {
            principal: SpiffeId::parse("spiffe://example.org/agent/coder").unwrap(),
            action: "write".into(),
            resource: Resource {
                kind: "Repository".into(),
                id: "warden".into(),
            },
            context: Context {
                task: Some(Task {
                    id: "t-1".into(),
                    kind: "patch_bug".into(),
                    attributes: Map::new(),
                }),
                risk_score: RiskScore::from_f64(0.2).unwrap(),
                ..context(json!({}))
            },
        };
        let v = serde_json::to_value(&request).unwrap();
        assert_eq!(
            v,
            json!({
                "principal": "spiffe://example.org/agent/coder",
                "action": "write",
                "resource": {"type": "Repository", "id": "warden"},
                "context": {
                    "agent": {"kind": "coder", "owner": "team", "attributes": {}},
                    "task": {"id": "t-1", "type": "patch_bug", "attributes": {}},
                    "risk_score": 0.2,
                    "hold": false,
                    "delegation": [],
                    "time": 0,
                    "request": {}
                }
            })
        );
        let back: Request = serde_json::from_value(v).unwrap();
        assert_eq!(back, request);
    }
}
