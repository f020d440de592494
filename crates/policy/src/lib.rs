//! Warden's policy decision point (PDP): Cedar and Rego policy packages over live context.
//!
//! A *package* is what an operator uploads as one version: Cedar policies (`*.cedar`) with
//! exactly one Cedar schema (`*.cedarschema`, human syntax), or Rego modules (`*.rego`) with
//! an entry point. [`CompiledPackage::compile`] parses it, validates Cedar policies strictly
//! against the schema, and reports the engines' diagnostics with file, line and column;
//! [`CompiledPackage::decide`] answers a [`Request`].
//!
//! ```
//! use policy::{CompiledPackage, Language, Limits, PackageSource};
//!
//! let source = PackageSource {
//!     language: Language::Cedar,
//!     files: vec![
//!         ("a.cedarschema".into(), "entity Agent; entity Doc; \
//!           action read appliesTo { principal: Agent, resource: Doc, context: {} };".into()),
//!         ("a.cedar".into(), "permit(principal, action, resource);".into()),
//!     ],
//!     entrypoint: None,
//! };
//! let package = CompiledPackage::compile(&source)?;
//! assert_eq!(package.content_hash().len(), 64);
//! # Ok::<(), policy::PolicyError>(())
//! ```
//!
//! Pure logic: no I/O, no clock reads (the decision time is an input), no randomness. The
//! one exception is Rego's evaluation time limit, which regorus enforces with a monotonic
//! clock. A Rego evaluation is bounded in time and in what each built-in call may allocate
//! (see [`MAX_GENERATED_ELEMENTS`] and `docs/policy.md`, "The evaluation budget"); a package
//! calling a built-in whose cost cannot be bounded is refused at upload.
//!
//! Cedar packages are evaluated through an index ([`index`]) that hands the Cedar
//! authorizer only the policies whose scope can match the request; results are identical to
//! the plain authorizer over the whole set ([`CompiledPackage::decide_unindexed`]).

#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod cedar;
mod diag;
pub mod index;

pub use index::CedarIndex;
mod rego;
mod request;

pub use rego::budget::{
    MAX_FORMAT_BYTES, MAX_FORMAT_WIDTH, MAX_GENERATED_BYTES, MAX_GENERATED_ELEMENTS,
};
pub use request::{Agent, Attributes, Context, Limits, Request, Resource, RiskScore, Task};

/// Largest package accepted, all files together, in bytes.
pub const MAX_PACKAGE_BYTES: usize = 16 * 1024 * 1024;

/// A policy language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Cedar (`cedar-policy`), Warden's native language.
    Cedar,
    /// Rego (`regorus`), for teams with existing OPA policies.
    Rego,
}

impl Language {
    /// The lowercase name: `cedar` or `rego`.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Cedar => "cedar",
            Language::Rego => "rego",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Language {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cedar" => Ok(Language::Cedar),
            "rego" => Ok(Language::Rego),
            other => Err(PolicyError::InvalidPackage {
                diagnostics: vec![Diagnostic::general(format!(
                    "unknown policy language `{other}` (expected `cedar` or `rego`)"
                ))],
            }),
        }
    }
}

/// A policy package as uploaded: its language, its files and (Rego only) its entry point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageSource {
    /// The language of every file in the package.
    pub language: Language,
    /// `(file name, text)` pairs. Cedar: `*.cedar` files and exactly one `*.cedarschema`.
    /// Rego: `*.rego` files. Names must be unique; their order does not matter.
    pub files: Vec<(String, String)>,
    /// Rego only: the rule deciding `allow`, e.g. `data.warden.coder.allow`. Default:
    /// `data.<package of the first file by name>.allow`. Must be `None` for Cedar.
    pub entrypoint: Option<String>,
}

impl PackageSource {
    /// The package's content hash: lowercase hex SHA-256 over a canonical encoding, so the
    /// same package always has the same hash whatever order its files were given in.
    ///
    /// Encoding: the ASCII tag `warden-policy-package-v1`, then each field as an 8-byte
    /// big-endian length followed by its bytes: the language (`cedar` / `rego`); the entry
    /// point (`0x00` if absent, `0x01` followed by the text if present); then the file count
    /// (8-byte big-endian) and, for each file sorted by name (bytewise), its name and its
    /// text.
    pub fn content_hash(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"warden-policy-package-v1");
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        };
        field(self.language.as_str().as_bytes());
        match &self.entrypoint {
            None => field(&[0]),
            Some(e) => field(&[&[1u8][..], e.as_bytes()].concat()),
        }
        let mut files: Vec<&(String, String)> = self.files.iter().collect();
        files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        field(&(files.len() as u64).to_be_bytes());
        for (name, text) in files {
            field(name.as_bytes());
            field(text.as_bytes());
        }
        hex::encode(hasher.finalize())
    }

    /// The files sorted by name, refusing duplicate or empty names and oversized packages.
    fn sorted_files(&self) -> Result<Vec<(&str, &str)>, PolicyError> {
        let total: usize = self.files.iter().map(|(n, t)| n.len() + t.len()).sum();
        if total > MAX_PACKAGE_BYTES {
            return Err(PolicyError::invalid_package(format!(
                "package is {total} bytes, more than the {MAX_PACKAGE_BYTES}-byte limit"
            )));
        }
        let mut files: Vec<(&str, &str)> = self
            .files
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for pair in files.windows(2) {
            if let [(a, _), (b, _)] = pair {
                if a == b {
                    return Err(PolicyError::invalid_package(format!(
                        "file name `{a}` appears twice"
                    )));
                }
            }
        }
        if files.iter().any(|(n, _)| n.is_empty()) {
            return Err(PolicyError::invalid_package("a file has an empty name"));
        }
        Ok(files)
    }
}

/// A compiled, validated package, ready to decide. Cheap to share across threads
/// (`Send + Sync`); deciding takes `&self`.
pub struct CompiledPackage {
    content_hash: String,
    warnings: Vec<Diagnostic>,
    engine: Engine,
}

enum Engine {
    Cedar(Box<cedar::CedarPackage>),
    Rego(Box<rego::RegoPackage>),
}

impl fmt::Debug for CompiledPackage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledPackage")
            .field("language", &self.language())
            .field("content_hash", &self.content_hash)
            .finish_non_exhaustive()
    }
}

impl CompiledPackage {
    /// Parses and validates `source`. Cedar policies are validated against the package's
    /// schema in strict mode; every error is returned as a [`Diagnostic`] with file, line
    /// and column where the engine gives a location.
    pub fn compile(source: &PackageSource) -> Result<Self, PolicyError> {
        let files = source.sorted_files()?;
        let (engine, warnings) = match source.language {
            Language::Cedar => {
                if source.entrypoint.is_some() {
                    return Err(PolicyError::invalid_package(
                        "a Cedar package has no entry point; leave it unset",
                    ));
                }
                let (package, warnings) = cedar::CedarPackage::compile(&files)?;
                (Engine::Cedar(Box::new(package)), warnings)
            }
            Language::Rego => {
                let package = rego::RegoPackage::compile(&files, source.entrypoint.as_deref())?;
                (Engine::Rego(Box::new(package)), Vec::new())
            }
        };
        Ok(Self {
            content_hash: source.content_hash(),
            warnings,
            engine,
        })
    }

    /// The package's language.
    pub fn language(&self) -> Language {
        match self.engine {
            Engine::Cedar(_) => Language::Cedar,
            Engine::Rego(_) => Language::Rego,
        }
    }

    /// The content hash of the source it was compiled from ([`PackageSource::content_hash`]).
    pub fn content_hash(&self) -> &str {
        &self.content_hash
    }

    /// Non-fatal findings of the Cedar schema parser and validator (e.g. shadowed names,
    /// impossible policies). Always empty for Rego.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// The Rego rule that decides, e.g. `data.warden.coder.allow`; `None` for Cedar.
    pub fn entrypoint(&self) -> Option<&str> {
        match &self.engine {
            Engine::Cedar(_) => None,
            Engine::Rego(r) => Some(r.entrypoint()),
        }
    }

    /// Decides `request`.
    ///
    /// `Err` means the request itself is unacceptable — an action or entity type the Cedar
    /// schema does not declare, a context that does not match the schema, or a context over
    /// `limits` — never a silent deny. A policy that fails while evaluating is not an `Err`:
    /// Cedar skips it and reports it in [`Decision::errors`]; a Rego runtime error or
    /// timeout is a [`Effect::Deny`] carrying the reason (fail-closed).
    pub fn decide(&self, request: &Request, limits: &Limits) -> Result<Decision, PolicyError> {
        self.decide_with(request, limits, cedar::Evaluation::Indexed)
    }

    /// [`decide`](Self::decide) without the index: Cedar evaluates every policy of the
    /// package with the plain `cedar_policy::Authorizer`. Results are identical by
    /// construction (see [`index`]); this exists to prove that and to measure the gain. Same
    /// as `decide` for Rego.
    pub fn decide_unindexed(
        &self,
        request: &Request,
        limits: &Limits,
    ) -> Result<Decision, PolicyError> {
        self.decide_with(request, limits, cedar::Evaluation::Full)
    }

    /// Whether a decision on `action` uses the relations the principal holds on the resource
    /// ([`Context::relations`]): for Cedar, when the action's context in the schema declares
    /// `relations` (e.g. `relations?: Set<String>`); for Rego, always (the input carries
    /// them). Warden computes them only when this is true.
    pub fn wants_relations(&self, action: &str) -> bool {
        match &self.engine {
            Engine::Cedar(c) => c.wants_relations(action),
            Engine::Rego(_) => true,
        }
    }

    /// The agent's task as this package's `action` can take it: for Cedar, none when the
    /// action's context declares no `task`, and only the task attributes it declares; for
    /// Rego, unchanged.
    pub fn fit_task(&self, action: &str, task: Option<Task>) -> Option<Task> {
        match &self.engine {
            Engine::Cedar(c) => c.fit_task(action, task),
            Engine::Rego(_) => task,
        }
    }

    fn decide_with(
        &self,
        request: &Request,
        limits: &Limits,
        evaluation: cedar::Evaluation,
    ) -> Result<Decision, PolicyError> {
        request::check_context(&request.context, limits)?;
        match &self.engine {
            Engine::Cedar(c) => c.decide(request, evaluation),
            Engine::Rego(r) => r.decide(request, limits),
        }
    }
}

impl CompiledPackage {
    /// Rego only: whether the package has a rule at exactly `path`, e.g.
    /// `data.warden.coder.allow` (for OPA's data API). Always `false` for Cedar.
    pub fn defines(&self, path: &str) -> bool {
        match &self.engine {
            Engine::Cedar(_) => false,
            Engine::Rego(r) => r.defines(path),
        }
    }

    /// Rego only: the value of the rule at `path` for `input`, as sent (OPA's data API);
    /// `None` when the rule is undefined. `input` is held to the context limits; a runtime
    /// error or timeout is [`PolicyError::Evaluation`]. A Cedar package, or a path that is no
    /// rule, is [`PolicyError::InvalidRequest`].
    pub fn eval_rule(
        &self,
        path: &str,
        input: serde_json::Value,
        limits: &Limits,
    ) -> Result<Option<serde_json::Value>, PolicyError> {
        match &self.engine {
            Engine::Cedar(_) => Err(PolicyError::InvalidRequest {
                reason: "a Cedar package has no rules to evaluate by path".to_owned(),
            }),
            Engine::Rego(r) => {
                request::check_value(&input, limits)?;
                r.eval_rule(path, input, limits)
            }
        }
    }
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// The request is allowed.
    Allow,
    /// The request is denied (explicitly, by default, or because evaluation failed).
    Deny,
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Allow or deny.
    pub effect: Effect,
    /// What determined the effect, sorted. Cedar: the ids of the satisfied `forbid` policies
    /// on a deny, or of the satisfied `permit` policies on an allow (empty on a default
    /// deny); an id is the policy's `@id("…")` annotation, else `policy<N>` numbering the
    /// package's policies from 0 in file-name then source order. Rego: the entry point on an
    /// allow, empty on a deny.
    pub determining: Vec<String>,
    /// Evaluation errors, sorted. Cedar: one per policy that failed and was skipped. Rego: the
    /// runtime error or timeout that made this a deny.
    pub errors: Vec<String>,
}

impl Decision {
    /// Whether the request is allowed.
    pub fn is_allowed(&self) -> bool {
        self.effect == Effect::Allow
    }
}

/// One finding of a policy engine, located where the engine says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// The package file it is in; empty when it concerns the package as a whole.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<u32>,
    /// 1-based column in characters, when known.
    pub column: Option<u32>,
    /// The engine's message.
    pub message: String,
    /// The engine's hint, if any.
    pub help: Option<String>,
}

impl Diagnostic {
    fn general(message: impl Into<String>) -> Self {
        Self {
            file: String::new(),
            line: None,
            column: None,
            message: message.into(),
            help: None,
        }
    }

    fn in_file(file: &str, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            ..Self::general(message)
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.file.is_empty() {
            write!(f, "{}:", self.file)?;
            if let Some(line) = self.line {
                write!(f, "{line}:")?;
                if let Some(column) = self.column {
                    write!(f, "{column}:")?;
                }
            }
            f.write_str(" ")?;
        }
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, " (help: {help})")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong compiling a package or deciding a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The package does not parse or validate; the diagnostics say where and why.
    #[error("invalid policy package: {}", summarize(diagnostics))]
    InvalidPackage {
        /// Every error found, in file order.
        diagnostics: Vec<Diagnostic>,
    },
    /// The request names something the package's schema does not declare (an action, an
    /// entity type), or its context does not match the schema.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// The engine's explanation.
        reason: String,
    },
    /// The context's JSON form is larger than allowed.
    #[error("context is larger than {limit} bytes")]
    ContextTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The context nests deeper than allowed.
    #[error("context nests deeper than {limit} levels")]
    ContextTooDeep {
        /// The limit in force.
        limit: usize,
    },
    /// Evaluating a Rego rule by path ([`CompiledPackage::eval_rule`]) failed at run time or
    /// ran out of time. (A decision never fails this way: it denies with the reason.)
    #[error("rego evaluation failed: {reason}")]
    Evaluation {
        /// regorus's error.
        reason: String,
    },
}

impl PolicyError {
    fn invalid_package(message: impl Into<String>) -> Self {
        PolicyError::InvalidPackage {
            diagnostics: vec![Diagnostic::general(message)],
        }
    }
}

/// At most this many diagnostics are written out in an [`PolicyError::InvalidPackage`]
/// message; the rest are counted (the error's `diagnostics` field keeps them all).
const DIAGNOSTICS_IN_MESSAGE: usize = 20;

/// One diagnostic on the message's line; several as a count, then one indented line each
/// (the first [`DIAGNOSTICS_IN_MESSAGE`], then how many more).
fn summarize(diagnostics: &[Diagnostic]) -> String {
    match diagnostics {
        [] => "no diagnostics".to_owned(),
        [one] => one.to_string(),
        all => {
            let mut out = format!("{} errors:", all.len());
            for d in all.iter().take(DIAGNOSTICS_IN_MESSAGE) {
                out.push_str("\n  ");
                out.push_str(&d.to_string());
            }
            if all.len() > DIAGNOSTICS_IN_MESSAGE {
                out.push_str(&format!(
                    "\n  … and {} more",
                    all.len() - DIAGNOSTICS_IN_MESSAGE
                ));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(files: &[(&str, &str)], entrypoint: Option<&str>) -> PackageSource {
        PackageSource {
            language: Language::Rego,
            files: files
                .iter()
                .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
                .collect(),
            entrypoint: entrypoint.map(str::to_owned),
        }
    }

    #[test]
    fn content_hash_is_canonical() {
        let a = source(&[("a", "1"), ("b", "2")], None);
        let b = source(&[("b", "2"), ("a", "1")], None);
        assert_eq!(
            a.content_hash(),
            b.content_hash(),
            "file order does not matter"
        );
        let different = [
            source(&[("a", "1"), ("b", "3")], None),
            source(&[("a", "1"), ("c", "2")], None),
            source(&[("a", "1"), ("b", "2")], Some("")),
            source(&[("a", "1"), ("b", "2")], Some("data.x.allow")),
            source(&[("a1", ""), ("b", "2")], None),
            source(&[("a", "1b"), ("", "2")], None),
            PackageSource {
                language: Language::Cedar,
                ..a.clone()
            },
        ];
        for d in &different {
            assert_ne!(a.content_hash(), d.content_hash(), "{d:?}");
        }
        // A fixed vector, so the definition cannot drift unnoticed.
        assert_eq!(
            source(&[], None).content_hash(),
            hex::encode(Sha256::digest(
                [
                    &b"warden-policy-package-v1"[..],
                    &4u64.to_be_bytes(),
                    b"rego",
                    &1u64.to_be_bytes(),
                    &[0],
                    &8u64.to_be_bytes(),
                    &0u64.to_be_bytes(),
                ]
                .concat()
            ))
        );
    }

    #[test]
    fn language_names() {
        for l in [Language::Cedar, Language::Rego] {
            assert_eq!(l.as_str().parse::<Language>().unwrap(), l);
        }
        assert!("opa".parse::<Language>().is_err());
    }

    /// Every diagnostic of a package is in the error's message, each with its place, not
    /// just the first.
    #[test]
    fn every_diagnostic_is_in_the_message() {
        let schema = include_str!("../../../examples/policies/coder/coder.cedarschema");
        let policies = "permit(principal, action == Action::\"read\", resource) when { context.one };\n\
                        permit(principal, action == Action::\"read\", resource) when { context.two };\n\
                        permit(principal, action == Action::\"read\", resource) when { context.three };\n";
        let err = CompiledPackage::compile(&PackageSource {
            language: Language::Cedar,
            files: [
                ("p.cedar".to_owned(), policies.to_owned()),
                ("s.cedarschema".to_owned(), schema.to_owned()),
            ]
            .into_iter()
            .collect(),
            entrypoint: None,
        })
        .expect_err("three unknown attributes");
        let PolicyError::InvalidPackage { diagnostics } = &err else {
            panic!("expected an invalid package, got {err:?}")
        };
        assert_eq!(diagnostics.len(), 3, "{diagnostics:?}");
        let message = err.to_string();
        assert!(
            message.starts_with("invalid policy package: 3 errors:\n"),
            "{message}"
        );
        for (line, attribute) in [(1, "one"), (2, "two"), (3, "three")] {
            assert!(
                message.contains(&format!("\n  p.cedar:{line}:")) && message.contains(attribute),
                "line {line} (`{attribute}`) is missing: {message}"
            );
        }
        assert!(!message.contains("more"), "{message}");
    }

    /// A package with very many errors: the first ones written out, the rest counted.
    #[test]
    fn the_message_is_bounded() {
        let many: Vec<Diagnostic> = (1..=25)
            .map(|i| Diagnostic {
                line: Some(i),
                ..Diagnostic::in_file("p.cedar", format!("error {i}"))
            })
            .collect();
        let message = PolicyError::InvalidPackage { diagnostics: many }.to_string();
        assert!(message.starts_with("invalid policy package: 25 errors:\n"));
        assert_eq!(
            message.lines().count(),
            1 + DIAGNOSTICS_IN_MESSAGE + 1,
            "{message}"
        );
        assert!(message.contains("\n  p.cedar:20: error 20\n"), "{message}");
        assert!(!message.contains("error 21"), "{message}");
        assert!(message.ends_with("\n  … and 5 more"), "{message}");
        // One diagnostic stays on the message's line.
        let one = PolicyError::invalid_package("no files").to_string();
        assert_eq!(one, "invalid policy package: no files");
    }

    #[test]
    fn compiled_package_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<CompiledPackage>();
    }
}
