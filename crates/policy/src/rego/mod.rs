//! Rego packages through regorus: parsing, the entry point, budgeted fail-closed decisions.
//!
//! Evaluation is bounded four ways. **Time**: regorus's execution timer
//! (`Engine::set_execution_timer_config`) checks the monotonic clock every
//! [`TIMER_CHECK_INTERVAL`] units of interpreter work and aborts past
//! [`Limits::rego_time_limit`]. **What one built-in call may allocate**, which the timer cannot
//! interrupt: upload admits only built-ins whose result Warden can bound, and Warden's own
//! implementations of the rest cap their results ([`budget`]). **Recursion and depth**: upload
//! refuses recursive rules and functions and dependency chains longer than
//! [`deps::MAX_DEPENDENCY_DEPTH`] ([`deps`]). **Stack**: evaluation runs with at least
//! [`STACK_RED_ZONE`] bytes of stack, on a fresh [`EVAL_STACK`]-byte stack (`stacker`) when the
//! calling thread has less left. Any error, exceeded budget or panic inside regorus is a deny
//! carrying the reason. `print` output is gathered and dropped, never written to stderr.

pub(crate) mod budget;
mod deps;

use std::collections::HashSet;
use std::num::NonZeroU32;

use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, LimitError, Value as RegoValue};

use crate::{Decision, Diagnostic, Effect, Limits, PolicyError, Request, diag};

/// How many regorus work units pass between two reads of the clock.
const TIMER_CHECK_INTERVAL: NonZeroU32 = NonZeroU32::MIN.saturating_add(15);
/// Stack an evaluation is guaranteed; a bounded-depth policy needs far less (about 1 MiB at
/// the depth limit in an unoptimized build).
const STACK_RED_ZONE: usize = 4 * 1024 * 1024;
/// Size of the stack allocated for an evaluation when the caller's has less than the red zone.
const EVAL_STACK: usize = 16 * 1024 * 1024;

pub(crate) struct RegoPackage {
    /// Policies loaded and prepared once; every decision evaluates a clone (which shares the
    /// compiled policy) so decisions do not contend.
    engine: Engine,
    entrypoint: String,
    /// Every rule's path, e.g. `data.warden.coder.allow`.
    rules: HashSet<String>,
}

impl RegoPackage {
    /// Compiles sorted `(name, text)` files with the given or default entry point.
    pub(crate) fn compile(
        files: &[(&str, &str)],
        entrypoint: Option<&str>,
    ) -> Result<Self, PolicyError> {
        let mut engine = Engine::new();
        // OPA's non-strict mode turns a failing built-in into "undefined", which a `not` can
        // turn into a pass; strict mode makes it an error, and an error is a deny.
        engine.set_strict_builtin_errors(true);
        // regorus writes `print` output to stderr unless it gathers it: a decision does no I/O.
        engine.set_gather_prints(true);
        budget::install(&mut engine).map_err(PolicyError::invalid_package)?;
        let mut errors = Vec::new();
        let mut first_package = None;
        if files.is_empty() {
            errors.push(Diagnostic::general(
                "a Rego package needs at least one `.rego` file",
            ));
        }
        for &(name, text) in files {
            if !name.ends_with(".rego") {
                errors.push(Diagnostic::in_file(
                    name,
                    "a Rego package holds only `.rego` files",
                ));
                continue;
            }
            match engine.add_policy(name.to_owned(), text.to_owned()) {
                Ok(package) => {
                    first_package.get_or_insert(package);
                }
                Err(e) => errors.push(diag::from_rego(name, &e.to_string())),
            }
        }
        if !errors.is_empty() {
            return Err(PolicyError::InvalidPackage {
                diagnostics: errors,
            });
        }
        let rules = match deps::check(engine.get_modules()) {
            Ok(rules) => rules.into_iter().collect(),
            Err(diagnostics) => return Err(PolicyError::InvalidPackage { diagnostics }),
        };
        let entrypoint = match (entrypoint, first_package) {
            (Some(e), _) => e.to_owned(),
            (None, Some(package)) => format!("{package}.allow"),
            (None, None) => {
                return Err(PolicyError::invalid_package(
                    "a Rego package needs at least one `.rego` file",
                ));
            }
        };
        // Analyses the modules (e.g. recursion, unsafe variables), prepares the engine for
        // evaluation, and refuses an entry point that names no rule.
        if let Err(e) = engine.compile_with_entrypoint(&entrypoint.as_str().into()) {
            let mut d = diag::from_rego("", &e.to_string());
            if d.line.is_none() {
                d.message = format!("entry point `{entrypoint}`: {}", d.message);
            }
            return Err(PolicyError::InvalidPackage {
                diagnostics: vec![d],
            });
        }
        Ok(Self {
            engine,
            entrypoint,
            rules,
        })
    }

    pub(crate) fn entrypoint(&self) -> &str {
        &self.entrypoint
    }

    /// Evaluates the entry point over `request` with its checked `context`. Only `true`
    /// allows; undefined or `false` denies; anything else, a runtime error or the time limit
    /// denies with the reason.
    /// Whether the package has a rule at exactly `path` (`data.a.b.allow`).
    pub(crate) fn defines(&self, path: &str) -> bool {
        self.rules.contains(path)
    }

    /// Evaluates `rule` over `input` within the budget, on a stack of known size. A panic
    /// inside regorus is an error like any other (fail closed), not a crash.
    fn eval(
        &self,
        rule: &str,
        input: serde_json::Value,
        limits: &Limits,
    ) -> Result<RegoValue, String> {
        let mut engine = self.engine.clone();
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: limits.rego_time_limit,
            check_interval: TIMER_CHECK_INTERVAL,
        });
        engine.set_input(RegoValue::from(input));
        let evaluated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            stacker::maybe_grow(STACK_RED_ZONE, EVAL_STACK, || {
                engine.eval_rule(rule.to_owned())
            })
        }));
        match evaluated {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(failure(&e, limits)),
            Err(_) => Err(format!(
                "the Rego engine failed while evaluating `{rule}` (a bug in regorus); denied"
            )),
        }
    }

    /// The value of `rule` for `input` (`None` when undefined). A runtime error or timeout is
    /// an `Err`.
    pub(crate) fn eval_rule(
        &self,
        rule: &str,
        input: serde_json::Value,
        limits: &Limits,
    ) -> Result<Option<serde_json::Value>, PolicyError> {
        if !self.defines(rule) {
            return Err(PolicyError::InvalidRequest {
                reason: format!("the package has no rule `{rule}`"),
            });
        }
        match self.eval(rule, input, limits) {
            Ok(RegoValue::Undefined) => Ok(None),
            Ok(value) => {
                serde_json::to_value(&value)
                    .map(Some)
                    .map_err(|e| PolicyError::Evaluation {
                        reason: format!("result of `{rule}` is not JSON: {e}"),
                    })
            }
            Err(reason) => Err(PolicyError::Evaluation { reason }),
        }
    }

    /// Evaluates the entry point over `request`. Only `true` allows; undefined or `false`
    /// denies; anything else, a runtime error or the time limit denies with the reason.
    pub(crate) fn decide(
        &self,
        request: &Request,
        limits: &Limits,
    ) -> Result<Decision, PolicyError> {
        // The request's JSON form is the input document.
        let input = serde_json::to_value(request).map_err(|e| PolicyError::InvalidRequest {
            reason: format!("request does not serialize: {e}"),
        })?;
        Ok(match self.eval(&self.entrypoint, input, limits) {
            Ok(RegoValue::Bool(true)) => Decision {
                effect: Effect::Allow,
                determining: vec![self.entrypoint.clone()],
                errors: Vec::new(),
            },
            Ok(RegoValue::Bool(false) | RegoValue::Undefined) => deny(Vec::new()),
            Ok(other) => deny(vec![format!(
                "entry point `{}` produced {other}, not a boolean",
                self.entrypoint
            )]),
            Err(reason) => deny(vec![reason]),
        })
    }
}

/// Why an evaluation failed, as a decision's error: an exceeded time limit says so in the
/// budget's words; anything else is regorus's located message.
fn failure(e: &anyhow::Error, limits: &Limits) -> String {
    let timed_out = e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<LimitError>(),
            Some(LimitError::TimeLimitExceeded { .. })
        )
    });
    if timed_out {
        format!(
            "{}: the evaluation ran past its {:?} time limit",
            budget::EXCEEDED,
            limits.rego_time_limit
        )
    } else {
        diag::from_rego("", &e.to_string()).to_string()
    }
}

fn deny(errors: Vec<String>) -> Decision {
    Decision {
        effect: Effect::Deny,
        determining: Vec::new(),
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic inside regorus is a deny naming the rule (fail closed), not a crash of the
    /// decision's thread.
    #[test]
    fn a_panic_inside_regorus_is_a_deny() {
        let mut package = RegoPackage::compile(
            &[("p.rego", "package p\nimport rego.v1\nallow if boom(1)\n")],
            None,
        )
        .unwrap();
        package
            .engine
            .add_extension(
                "boom".to_owned(),
                1,
                Box::new(|_: Vec<RegoValue>| -> anyhow::Result<RegoValue> {
                    panic!("a bug in the engine")
                }),
            )
            .unwrap();
        let request: Request = serde_json::from_value(serde_json::json!({
            "principal": "spiffe://example.org/agent/coder",
            "action": "write",
            "resource": {"type": "Repository", "id": "warden"},
            "context": {"agent": {"kind": "", "owner": "", "attributes": {}},
                        "risk_score": 0, "hold": false, "delegation": [], "time": 0,
                        "request": {}, "relations": []},
        }))
        .unwrap();
        let decision = package.decide(&request, &Limits::default()).unwrap();
        assert_eq!(decision.effect, Effect::Deny);
        assert_eq!(
            decision.errors,
            ["the Rego engine failed while evaluating `data.p.allow` (a bug in regorus); denied"]
        );
        let err = package
            .eval_rule("data.p.allow", serde_json::json!({}), &Limits::default())
            .unwrap_err();
        assert!(err.to_string().contains("the Rego engine failed"), "{err}");
    }
}
