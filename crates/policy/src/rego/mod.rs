//! Rego packages through regorus: parsing, the entry point, time-limited fail-closed decisions.
//!
//! Evaluation is bounded three ways. **Time**: regorus's execution timer
//! (`Engine::set_execution_timer_config`) checks the monotonic clock every
//! [`TIMER_CHECK_INTERVAL`] units of interpreter work and aborts past
//! [`Limits::rego_time_limit`]. **Recursion and depth**: upload refuses recursive rules and
//! functions and dependency chains longer than [`deps::MAX_DEPENDENCY_DEPTH`] ([`deps`]).
//! **Stack**: evaluation runs with at least [`STACK_RED_ZONE`] bytes of stack, on a fresh
//! [`EVAL_STACK`]-byte stack (`stacker`) when the calling thread has less left. Any error or
//! timeout is a deny carrying the reason.

mod deps;

use std::collections::HashSet;
use std::num::NonZeroU32;

use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value as RegoValue};

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
            Err(d) => {
                return Err(PolicyError::InvalidPackage {
                    diagnostics: vec![d],
                });
            }
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

    /// Evaluates `rule` over `input` within the time limit, on a stack of known size.
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
        stacker::maybe_grow(STACK_RED_ZONE, EVAL_STACK, || {
            engine.eval_rule(rule.to_owned())
        })
        .map_err(|e| diag::from_rego("", &e.to_string()).to_string())
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

fn deny(errors: Vec<String>) -> Decision {
    Decision {
        effect: Effect::Deny,
        determining: Vec::new(),
        errors,
    }
}
