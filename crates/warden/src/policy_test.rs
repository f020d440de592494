//! `warden policy test DIR`: a policy package's tests, run offline — no server, no token —
//! so operators can check a package in CI before they push it.
//!
//! DIR holds the package, the same files `warden policy push` takes (`*.cedar` and exactly
//! one `*.cedarschema`, or `*.rego`; the language follows from the extensions, `--language`
//! picks one when DIR holds both), and test files `*.tests.json`, in DIR itself or in
//! DIR/tests/. The package is compiled and every test's request decided exactly as the
//! server decides (`policy::CompiledPackage::decide`, the server's limits).
//!
//! A test file (unknown fields anywhere are refused):
//!
//! ```json
//! {"tests": [
//!   {"name": "coder writes while patching",
//!    "request": {"principal": "spiffe://example.org/agent/coder", "action": "write",
//!                "resource": {"type": "Repository", "id": "warden"},
//!                "context": {"task": {"type": "patch_bug"}, "risk_score": 0.2}},
//!    "expect": "allow",
//!    "determining": {"cedar": ["coder-write-while-patching"], "rego": ["data.warden.coder.allow"]}},
//!   {"name": "undeclared action",
//!    "request": {"principal": "spiffe://example.org/agent/coder", "action": "delete",
//!                "resource": {"type": "Repository", "id": "warden"}},
//!    "expect": {"cedar": "invalid", "rego": "deny"}}
//! ]}
//! ```
//!
//! - `request` is `policy::Request`'s JSON — the `input` a Rego package sees — where the
//!   context may leave fields out: `context` itself, `agent` (`kind`, `owner` `""`,
//!   `attributes` `{}`), `risk_score` `0`, `hold` `false`, `delegation` `[]`, `time` `0`,
//!   `request` `{}`; `task` is absent unless given, and a given task needs its `type` (`id`
//!   defaults to `""`, `attributes` to `{}`).
//! - `expect`: `allow`, `deny` or `invalid` (the request is refused: an action, entity type or
//!   attribute the Cedar schema does not declare, a context over the limits).
//! - `determining` (optional): the exact policies that decided, in any order — Cedar policy
//!   ids, or the Rego entry point on an allow (`[]` on a Rego deny).
//! - `errors` (optional, default `false`): whether the decision carries evaluation errors (a
//!   Cedar policy that failed and was skipped, a Rego runtime error or timeout). By default a
//!   decision with errors fails the test, so a deny caused by a broken rule never passes as
//!   an intended deny.
//!
//! `expect`, `determining` and `errors` each take either one value for every language or an
//! object keyed by language (`{"cedar": …, "rego": …}`), so one file can serve a Cedar and a
//! Rego version of the same policy. A test whose `expect` does not name the package's
//! language is skipped; `determining` not naming it is not checked; `errors` not naming it
//! is `false`.
//!
//! Exit status: 0 every test passed; 1 a test failed or the package does not compile; 2 the
//! tests could not be run (a file unreadable, a test file malformed, no package or no tests,
//! DIR holding both languages without `--language`).

use std::fmt;
use std::io::{self, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use identity::SpiffeId;
use policy::{
    Agent, Attributes, CompiledPackage, Context, Decision, Language, Limits, PackageSource,
    PolicyError, Request, Resource, RiskScore, Task,
};
use serde::Deserialize;
use serde::de::{self, IntoDeserializer};

/// Where test files are looked for besides DIR itself.
const TESTS_SUBDIR: &str = "tests";
/// The suffix of a test file's name.
const TESTS_SUFFIX: &str = ".tests.json";

/// Largest decision context the server's decision APIs accept (it records the whole request
/// with the decision, in a bounded ledger entry); a test holds contexts to the same limit.
const SERVER_MAX_CONTEXT_BYTES: usize = 32 * 1024;

/// `warden policy test DIR`
#[derive(Debug, clap::Args)]
pub(crate) struct TestArgs {
    /// Directory holding the package's files and its `*.tests.json` files (also read from
    /// DIR/tests/)
    dir: PathBuf,
    /// Which files of DIR form the package; required when DIR holds both Cedar and Rego files
    #[arg(long, value_enum)]
    language: Option<LanguageArg>,
    /// Rego: the rule that decides [default: data.<package>.allow]
    #[arg(long)]
    entrypoint: Option<String>,
    /// Rego: the time budget of one evaluation in milliseconds, past which the decision is a
    /// deny with an error (the server's budget is 10)
    #[arg(long, value_name = "MS", default_value_t = 10)]
    rego_time_limit: u64,
}

/// A package language on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LanguageArg {
    Cedar,
    Rego,
}

impl From<LanguageArg> for Language {
    fn from(l: LanguageArg) -> Self {
        match l {
            LanguageArg::Cedar => Language::Cedar,
            LanguageArg::Rego => Language::Rego,
        }
    }
}

/// How a run ended, as the process exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// Every test that applies passed (exit 0).
    Passed,
    /// A test failed or the package does not compile (exit 1).
    Failed,
    /// The tests could not be run (exit 2).
    Unusable,
}

impl Status {
    fn code(self) -> i32 {
        match self {
            Status::Passed => 0,
            Status::Failed => 1,
            Status::Unusable => 2,
        }
    }
}

/// What ended a run before or instead of its tests: the status and what to tell the user.
#[derive(Debug)]
struct Stop {
    status: Status,
    message: String,
}

impl Stop {
    fn unusable(message: impl Into<String>) -> Self {
        Self {
            status: Status::Unusable,
            message: message.into(),
        }
    }
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        Stop::unusable(format!("cannot write the results: {e}"))
    }
}

/// Runs the tests, prints the results and ends the process with the status unless every test
/// passed (then it returns, and `warden` exits 0).
pub(crate) fn run_and_exit(args: &TestArgs) {
    let status = {
        let stdout = io::stdout();
        let mut out = stdout.lock();
        let status = match run(args, &mut out) {
            Ok(status) => status,
            Err(stop) => {
                eprintln!("error: {}", stop.message);
                stop.status
            }
        };
        // `process::exit` runs no destructors: nothing may stay buffered.
        if out.flush().is_err() {
            Status::Unusable
        } else {
            status
        }
    };
    if status != Status::Passed {
        std::process::exit(status.code());
    }
}

/// Compiles the package in `args.dir`, runs its tests and writes one line per test and a
/// summary to `out`.
fn run(args: &TestArgs, out: &mut dyn Write) -> Result<Status, Stop> {
    let dir = &args.dir;
    let source = package_source(dir, args.language.map(Language::from), &args.entrypoint)?;
    let files = test_files(dir)?;
    let mut suites = Vec::new();
    let mut problems = Vec::new();
    for path in files {
        match load(&path) {
            Ok(tests) => suites.push((path, tests)),
            Err(message) => problems.push(message),
        }
    }
    if !problems.is_empty() {
        return Err(Stop::unusable(problems.join("\nerror: ")));
    }

    let package = match CompiledPackage::compile(&source) {
        Ok(p) => p,
        Err(PolicyError::InvalidPackage { diagnostics }) => {
            let mut message = format!(
                "{} is not a valid {} package:",
                dir.display(),
                source.language
            );
            for d in diagnostics {
                message.push_str(&format!("\n  {}", located_in(dir, d)));
            }
            return Err(Stop {
                status: Status::Failed,
                message,
            });
        }
        Err(e) => {
            return Err(Stop {
                status: Status::Failed,
                message: format!("{}: {e}", dir.display()),
            });
        }
    };
    let names: Vec<&str> = source.files.iter().map(|(n, _)| n.as_str()).collect();
    writeln!(
        out,
        "{} package {}: {}{} (sha256 {})",
        package.language(),
        dir.display(),
        names.join(", "),
        package
            .entrypoint()
            .map(|e| format!(", entry point {e}"))
            .unwrap_or_default(),
        package.content_hash()
    )?;
    for w in package.warnings() {
        writeln!(out, "warning: {}", located_in(dir, w.clone()))?;
    }

    let limits = Limits {
        max_context_bytes: SERVER_MAX_CONTEXT_BYTES,
        rego_time_limit: std::time::Duration::from_millis(args.rego_time_limit),
        ..Limits::default()
    };
    let (mut passed, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    for (path, tests) in &suites {
        writeln!(out, "\n{}: {} tests", path.display(), tests.len())?;
        for test in tests {
            match check(&package, &limits, test) {
                Verdict::Pass => {
                    passed += 1;
                    writeln!(out, "ok   {}", test.name)?;
                }
                Verdict::Fail(why) => {
                    failed += 1;
                    writeln!(out, "FAIL {}: {why}", test.name)?;
                }
                Verdict::Skip => {
                    skipped += 1;
                    writeln!(
                        out,
                        "skip {} (no expectation for {})",
                        test.name,
                        package.language()
                    )?;
                }
            }
        }
    }
    let result = if failed == 0 { "ok" } else { "FAILED" };
    writeln!(
        out,
        "\ntest result: {result}. {passed} passed; {failed} failed; {skipped} skipped"
    )?;
    if passed + failed == 0 {
        return Err(Stop::unusable(format!(
            "no test in {} applies to the {} package",
            dir.display(),
            package.language()
        )));
    }
    Ok(if failed == 0 {
        Status::Passed
    } else {
        Status::Failed
    })
}

/// A diagnostic with its file named by its path under `dir`, so editors can jump to it.
fn located_in(dir: &Path, mut d: policy::Diagnostic) -> policy::Diagnostic {
    if !d.file.is_empty() {
        d.file = dir.join(&d.file).display().to_string();
    }
    d
}

/// The package in `dir`: its `*.cedar` + `*.cedarschema` files or its `*.rego` files.
fn package_source(
    dir: &Path,
    language: Option<Language>,
    entrypoint: &Option<String>,
) -> Result<PackageSource, Stop> {
    let mut cedar = Vec::new();
    let mut rego = Vec::new();
    for (name, path) in files_in(dir)? {
        if name.ends_with(".cedar") || name.ends_with(".cedarschema") {
            cedar.push((name, path));
        } else if name.ends_with(".rego") {
            rego.push((name, path));
        }
    }
    let list = |files: &[(String, PathBuf)]| {
        files
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (language, chosen) = match (language, cedar.is_empty(), rego.is_empty()) {
        (Some(Language::Cedar), false, _) | (None, false, true) => (Language::Cedar, cedar),
        (Some(Language::Rego), _, false) | (None, true, false) => (Language::Rego, rego),
        (None, false, false) => {
            return Err(Stop::unusable(format!(
                "{} holds both Cedar ({}) and Rego ({}) files: choose the package with \
                 `--language cedar` or `--language rego`",
                dir.display(),
                list(&cedar),
                list(&rego)
            )));
        }
        (Some(l), _, _) => {
            return Err(Stop::unusable(format!(
                "{} holds no {l} policy files ({})",
                dir.display(),
                match l {
                    Language::Cedar => "`*.cedar` and one `*.cedarschema`",
                    Language::Rego => "`*.rego`",
                }
            )));
        }
        (None, true, true) => {
            return Err(Stop::unusable(format!(
                "{} holds no policy files (`*.cedar` and one `*.cedarschema`, or `*.rego`)",
                dir.display()
            )));
        }
    };
    if language == Language::Cedar && entrypoint.is_some() {
        return Err(Stop::unusable(
            "`--entrypoint` applies to Rego packages only",
        ));
    }
    let mut files = Vec::with_capacity(chosen.len());
    for (name, path) in chosen {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Stop::unusable(format!("cannot read {}: {e}", path.display())))?;
        files.push((name, text));
    }
    Ok(PackageSource {
        language,
        files,
        entrypoint: entrypoint.clone(),
    })
}

/// The regular files directly in `dir` (following symbolic links) with their names, sorted by
/// name.
fn files_in(dir: &Path) -> Result<Vec<(String, PathBuf)>, Stop> {
    let cannot = |e: io::Error| Stop::unusable(format!("cannot read {}: {e}", dir.display()));
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(cannot)? {
        let path = entry.map_err(cannot)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if path.is_file() {
            files.push((name.to_owned(), path.clone()));
        }
    }
    files.sort();
    Ok(files)
}

/// The test files: `DIR/*.tests.json`, then `DIR/tests/*.tests.json`, each sorted by name.
fn test_files(dir: &Path) -> Result<Vec<PathBuf>, Stop> {
    let mut found = Vec::new();
    let sub = dir.join(TESTS_SUBDIR);
    for d in [dir, sub.as_path()] {
        if d == sub && !sub.is_dir() {
            continue;
        }
        found.extend(
            files_in(d)?
                .into_iter()
                .filter(|(name, _)| name.ends_with(TESTS_SUFFIX))
                .map(|(_, path)| path),
        );
    }
    if found.is_empty() {
        return Err(Stop::unusable(format!(
            "no test files (`*{TESTS_SUFFIX}`) in {} or {}",
            dir.display(),
            sub.display()
        )));
    }
    Ok(found)
}

/// Reads, parses and checks one test file; the error names the file (and the line and column
/// of a JSON error).
fn load(path: &Path) -> Result<Vec<TestCase>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}{e}", path.display()))
}

/// Parses and checks a test file's text; the error starts with `:LINE:COLUMN: ` or `: `, to
/// follow the file name.
fn parse(text: &str) -> Result<Vec<TestCase>, String> {
    let file: Object<TestFile> = serde_json::from_str(text).map_err(|e| {
        if e.line() == 0 {
            return format!(": {e}");
        }
        let message = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        let message = message.strip_suffix(&position).unwrap_or(&message);
        // serde_json counts a column 0 before a line's first character; editors start at 1.
        format!(":{}:{}: {message}", e.line(), e.column().max(1))
    })?;
    let tests: Vec<TestCase> = file.0.tests.into_iter().map(|t| t.0).collect();
    if tests.is_empty() {
        return Err(": `tests` is empty".to_owned());
    }
    let mut names = std::collections::HashSet::new();
    for (i, test) in tests.iter().enumerate() {
        if test.name.trim().is_empty() {
            return Err(format!(": test {} has an empty `name`", i + 1));
        }
        if !names.insert(test.name.as_str()) {
            return Err(format!(": two tests are named `{}`", test.name));
        }
        for language in [Language::Cedar, Language::Rego] {
            if test.expect.get(language) != Some(&Expected::Invalid) {
                continue;
            }
            for (field, given) in [
                (
                    "determining",
                    test.determining
                        .as_ref()
                        .is_some_and(|d| d.get(language).is_some()),
                ),
                (
                    "errors",
                    test.errors.as_ref().and_then(|e| e.get(language)) == Some(&true),
                ),
            ] {
                if given {
                    return Err(format!(
                        ": test `{}`: `{field}` is meaningless when the {language} request is \
                         expected to be invalid (no decision is made)",
                        test.name
                    ));
                }
            }
        }
    }
    Ok(tests)
}

/// A test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    tests: Vec<Object<TestCase>>,
}

/// A `T` read from a JSON object only: serde's derived structs also take an array of their
/// fields in order, which would make a mistaken test file parse (or fail confusingly).
#[derive(Debug)]
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for Visit<T> {
            type Value = Object<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Object)
            }
        }

        deserializer.deserialize_map(Visit(PhantomData))
    }
}

/// One test: a request and what the package must answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: String,
    request: TestRequest,
    expect: ByLanguage<Expected>,
    #[serde(default)]
    determining: Option<ByLanguage<Vec<String>>>,
    #[serde(default)]
    errors: Option<ByLanguage<bool>>,
}

/// The expected outcome of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expected {
    Allow,
    Deny,
    Invalid,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expected::Allow => "allow",
            Expected::Deny => "deny",
            Expected::Invalid => "invalid",
        })
    }
}

/// `policy::Request`'s JSON with defaults for the context fields a test leaves out. Converted
/// with exhaustive struct literals, so a field added to the request cannot go unnoticed here.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    principal: SpiffeId,
    action: String,
    resource: Resource,
    #[serde(default)]
    context: TestContext,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TestContext {
    agent: TestAgent,
    task: Option<TestTask>,
    risk_score: RiskScore,
    hold: bool,
    delegation: Vec<SpiffeId>,
    time: i64,
    request: Attributes,
    /// Relations the principal holds on the resource (as Warden fills them in from the
    /// relationship store).
    relations: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TestAgent {
    kind: String,
    owner: String,
    attributes: Attributes,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestTask {
    #[serde(default)]
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    attributes: Attributes,
}

impl TestRequest {
    fn to_request(&self) -> Request {
        let c = &self.context;
        Request {
            principal: self.principal.clone(),
            action: self.action.clone(),
            resource: self.resource.clone(),
            context: Context {
                agent: Agent {
                    kind: c.agent.kind.clone(),
                    owner: c.agent.owner.clone(),
                    attributes: c.agent.attributes.clone(),
                },
                task: c.task.as_ref().map(|t| Task {
                    id: t.id.clone(),
                    kind: t.kind.clone(),
                    attributes: t.attributes.clone(),
                }),
                risk_score: c.risk_score,
                hold: c.hold,
                delegation: c.delegation.clone(),
                time: c.time,
                request: c.request.clone(),
                relations: c.relations.clone(),
            },
        }
    }
}

/// One value for every language, or values keyed by language.
#[derive(Debug, PartialEq)]
enum ByLanguage<T> {
    All(T),
    Each { cedar: Option<T>, rego: Option<T> },
}

impl<T> ByLanguage<T> {
    /// The value for `language`, if there is one.
    fn get(&self, language: Language) -> Option<&T> {
        match (self, language) {
            (ByLanguage::All(v), _) => Some(v),
            (ByLanguage::Each { cedar, .. }, Language::Cedar) => cedar.as_ref(),
            (ByLanguage::Each { rego, .. }, Language::Rego) => rego.as_ref(),
        }
    }
}

/// The keyed form of [`ByLanguage`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EachLanguage<T> {
    cedar: Option<T>,
    rego: Option<T>,
}

/// What a value of a [`ByLanguage`] field looks like, for error messages.
trait Described {
    const WHAT: &'static str;
}

impl Described for Expected {
    const WHAT: &'static str = "`allow`, `deny` or `invalid`";
}

impl Described for Vec<String> {
    const WHAT: &'static str = "an array of policy ids";
}

impl Described for bool {
    const WHAT: &'static str = "a boolean";
}

impl<'de, T: Deserialize<'de> + Described> Deserialize<'de> for ByLanguage<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de> + Described> de::Visitor<'de> for Visit<T> {
            type Value = ByLanguage<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "{}, or an object keyed by language (`cedar`, `rego`)",
                    T::WHAT
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(ByLanguage::All)
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(ByLanguage::All)
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(ByLanguage::All)
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let each =
                    EachLanguage::<T>::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if each.cedar.is_none() && each.rego.is_none() {
                    return Err(de::Error::custom(
                        "an object keyed by language must name `cedar` or `rego`",
                    ));
                }
                Ok(ByLanguage::Each {
                    cedar: each.cedar,
                    rego: each.rego,
                })
            }
        }

        deserializer.deserialize_any(Visit(PhantomData))
    }
}

/// The result of one test.
#[derive(Debug, PartialEq)]
enum Verdict {
    Pass,
    /// Failed: expected what, got what.
    Fail(String),
    /// The test has no expectation for the package's language.
    Skip,
}

/// Decides `test`'s request with `package` and compares the answer with the expectation.
fn check(package: &CompiledPackage, limits: &Limits, test: &TestCase) -> Verdict {
    let language = package.language();
    let Some(&expected) = test.expect.get(language) else {
        return Verdict::Skip;
    };
    let determining = test.determining.as_ref().and_then(|d| d.get(language));
    let errors = test.errors.as_ref().and_then(|e| e.get(language)) == Some(&true);
    let decision = match package.decide(&test.request.to_request(), limits) {
        Ok(decision) => decision,
        Err(_) if expected == Expected::Invalid => return Verdict::Pass,
        Err(e) => return Verdict::Fail(format!("expected {expected}, got invalid ({e})")),
    };
    let got = if decision.is_allowed() {
        Expected::Allow
    } else {
        Expected::Deny
    };
    let mut want_determining = determining.cloned();
    if let Some(d) = &mut want_determining {
        d.sort();
    }
    let mut got_determining = decision.determining.clone();
    got_determining.sort();
    let pass = got == expected
        && want_determining
            .as_ref()
            .is_none_or(|d| *d == got_determining)
        && errors != decision.errors.is_empty();
    if pass {
        return Verdict::Pass;
    }
    let mut want = expected.to_string();
    if let Some(d) = &want_determining {
        want.push_str(&format!(", determining {}", json_list(d)));
    }
    if expected != Expected::Invalid {
        want.push_str(if errors {
            ", with errors"
        } else {
            ", no errors"
        });
    }
    Verdict::Fail(format!("expected {want}; got {}", describe(&decision)))
}

/// `allow, determining [...], errors [...]`
fn describe(decision: &Decision) -> String {
    format!(
        "{}, determining {}, errors {}",
        if decision.is_allowed() {
            "allow"
        } else {
            "deny"
        },
        json_list(&decision.determining),
        json_list(&decision.errors)
    )
}

/// A list of strings as JSON, so ids with spaces or commas stay unambiguous.
fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| format!("{items:?}"))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        reason = "tests"
    )]

    use super::*;
    use serde_json::json;

    const CEDAR: &str = include_str!("../../../examples/policies/coder/coder.cedar");
    const SCHEMA: &str = include_str!("../../../examples/policies/coder/coder.cedarschema");
    const REGO: &str = include_str!("../../../examples/policies/coder/coder.rego");
    const SEED_TESTS: &str =
        include_str!("../../../examples/policies/coder/tests/coder.tests.json");

    fn cedar() -> CompiledPackage {
        CompiledPackage::compile(&PackageSource {
            language: Language::Cedar,
            files: vec![
                ("coder.cedar".into(), CEDAR.into()),
                ("coder.cedarschema".into(), SCHEMA.into()),
            ],
            entrypoint: None,
        })
        .unwrap()
    }

    fn rego() -> CompiledPackage {
        CompiledPackage::compile(&PackageSource {
            language: Language::Rego,
            files: vec![("coder.rego".into(), REGO.into())],
            entrypoint: None,
        })
        .unwrap()
    }

    /// Generous, so a busy machine running a debug build cannot time Rego out.
    fn limits() -> Limits {
        Limits {
            rego_time_limit: std::time::Duration::from_secs(5),
            ..Limits::default()
        }
    }

    fn one(test: serde_json::Value) -> Result<Vec<TestCase>, String> {
        parse(&json!({ "tests": [test] }).to_string())
    }

    fn write() -> serde_json::Value {
        json!({"principal": "spiffe://example.org/agent/coder", "action": "write",
               "resource": {"type": "Repository", "id": "warden"},
               "context": {"task": {"type": "patch_bug"}, "risk_score": 0.2}})
    }

    #[test]
    fn a_full_request_document_reads_back_unchanged() {
        let full = json!({
            "principal": "spiffe://example.org/agent/coder",
            "action": "write",
            "resource": {"type": "Repository", "id": "warden"},
            "context": {
                "agent": {"kind": "coder", "owner": "platform-team", "attributes": {"a": 1}},
                "task": {"id": "t-1", "type": "patch_bug", "attributes": {"b": [true]}},
                "risk_score": 0.25,
                "hold": true,
                "delegation": ["spiffe://example.org/agent/planner"],
                "time": 1_767_225_600,
                "request": {"c": {"d": "e"}}
            }
        });
        let request: Request = serde_json::from_value(full.clone()).unwrap();
        let tests = one(json!({"name": "t", "request": full, "expect": "deny"})).unwrap();
        assert_eq!(tests[0].request.to_request(), request);
    }

    #[test]
    fn context_fields_left_out_take_documented_defaults() {
        let tests = one(json!({"name": "t", "expect": "deny", "request": {
            "principal": "spiffe://example.org/agent/coder", "action": "read",
            "resource": {"type": "Repository", "id": "warden"}}}))
        .unwrap();
        let request = tests[0].request.to_request();
        assert_eq!(
            serde_json::to_value(&request.context).unwrap(),
            json!({"agent": {"kind": "", "owner": "", "attributes": {}}, "risk_score": 0.0,
                   "hold": false, "delegation": [], "time": 0, "request": {}})
        );
        let tests = one(json!({"name": "t", "expect": "allow", "request": write()})).unwrap();
        let task = tests[0].request.to_request().context.task.unwrap();
        assert_eq!((task.id.as_str(), task.kind.as_str()), ("", "patch_bug"));
        assert!(task.attributes.is_empty());
    }

    #[test]
    fn expectations_are_one_value_or_keyed_by_language() {
        let tests = one(json!({"name": "t", "request": write(),
            "expect": {"cedar": "invalid", "rego": "deny"},
            "determining": {"rego": []}, "errors": false}))
        .unwrap();
        let t = &tests[0];
        assert_eq!(t.expect.get(Language::Cedar), Some(&Expected::Invalid));
        assert_eq!(t.expect.get(Language::Rego), Some(&Expected::Deny));
        let determining = t.determining.as_ref().unwrap();
        assert_eq!(determining.get(Language::Cedar), None);
        assert_eq!(determining.get(Language::Rego), Some(&vec![]));
        assert_eq!(t.errors, Some(ByLanguage::All(false)));
    }

    /// Malformed files are refused with the line and column and a message naming the problem.
    #[test]
    fn malformed_test_files_are_refused_with_a_position() {
        let cases: &[(&str, &str)] = &[
            ("{\"tests\": [}", ":1:12: "),
            ("{\"tests\": [], \"extra\": 1}", "unknown field `extra`"),
            ("{\"tests\": []}", "`tests` is empty"),
            ("[]", ":1:1: invalid type: sequence, expected a JSON object"),
            (
                "{\"tests\": [[\"t\"]]}",
                ":1:11: invalid type: sequence, expected a JSON object",
            ),
            ("{\"tests\": [{}]}", ":1:13: missing field `name`"),
            ("{\"tests\": []} x", ":1:15: trailing characters"),
        ];
        for (text, needle) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
        let rows = [
            (
                json!({"name": "t", "request": write(), "expect": "allowed"}),
                "unknown variant `allowed`, expected one of `allow`, `deny`, `invalid`",
            ),
            (
                json!({"name": "t", "request": write(), "expect": 1}),
                "expected `allow`, `deny` or `invalid`, or an object keyed by language",
            ),
            (
                json!({"name": "t", "request": write(), "expect": {"opa": "allow"}}),
                "unknown field `opa`, expected `cedar` or `rego`",
            ),
            (
                json!({"name": "t", "request": write(), "expect": {}}),
                "must name `cedar` or `rego`",
            ),
            (
                json!({"name": "t", "request": write(), "expect": "deny", "determinig": []}),
                "unknown field `determinig`",
            ),
            (
                json!({"name": "t", "request": write(), "expect": "deny", "determining": "p"}),
                "expected a sequence",
            ),
            (
                json!({"name": "t", "expect": "deny", "request": {"principal": "coder",
                    "action": "write", "resource": {"type": "Repository", "id": "w"}}}),
                "coder",
            ),
            (
                json!({"name": "t", "expect": "deny", "request": {
                    "principal": "spiffe://example.org/a", "action": "write",
                    "resource": {"type": "Repository", "id": "w"},
                    "context": {"risk": 0.2}}}),
                "unknown field `risk`",
            ),
            (
                json!({"name": "t", "expect": "deny", "request": {
                    "principal": "spiffe://example.org/a", "action": "write",
                    "resource": {"type": "Repository", "id": "w"},
                    "context": {"risk_score": 1.5}}}),
                "risk score",
            ),
            (
                json!({"name": " ", "request": write(), "expect": "deny"}),
                "empty `name`",
            ),
            (
                json!({"name": "t", "request": write(), "expect": "invalid", "determining": []}),
                "`determining` is meaningless",
            ),
            (
                json!({"name": "t", "request": write(), "expect": {"rego": "invalid"},
                       "errors": {"rego": true}}),
                "`errors` is meaningless when the rego request",
            ),
        ];
        for (test, needle) in rows {
            let err = one(test.clone()).unwrap_err();
            assert!(err.contains(needle), "{test}: {err}");
            assert!(err.starts_with(':'), "{err}");
        }
        let twice = json!({"name": "same", "request": write(), "expect": "allow"});
        let err = parse(&json!({ "tests": [twice, twice] }).to_string()).unwrap_err();
        assert!(err.contains("two tests are named `same`"), "{err}");
    }

    #[test]
    fn the_seed_tests_pass_in_both_languages() {
        let tests = parse(SEED_TESTS).unwrap();
        for package in [cedar(), rego()] {
            for test in &tests {
                assert_eq!(
                    check(&package, &limits(), test),
                    Verdict::Pass,
                    "{}: {}",
                    package.language(),
                    test.name
                );
            }
        }
    }

    #[test]
    fn verdicts_say_what_was_expected_and_what_came() {
        let cedar = cedar();
        let rego = rego();
        let rows = [
            (
                json!({"expect": "deny"}),
                &cedar,
                Verdict::Fail(
                    "expected deny, no errors; got allow, determining \
                     [\"coder-write-while-patching\"], errors []"
                        .into(),
                ),
            ),
            (
                json!({"expect": "allow", "determining": ["other", "another"]}),
                &cedar,
                Verdict::Fail(
                    "expected allow, determining [\"another\",\"other\"], no errors; got allow, \
                     determining [\"coder-write-while-patching\"], errors []"
                        .into(),
                ),
            ),
            (
                json!({"expect": "allow", "errors": true}),
                &rego,
                Verdict::Fail(
                    "expected allow, with errors; got allow, determining \
                     [\"data.warden.coder.allow\"], errors []"
                        .into(),
                ),
            ),
            (json!({"expect": {"cedar": "allow"}}), &rego, Verdict::Skip),
            (
                json!({"expect": "invalid"}),
                &cedar,
                Verdict::Fail(
                    "expected invalid; got allow, determining \
                     [\"coder-write-while-patching\"], errors []"
                        .into(),
                ),
            ),
        ];
        for (fields, package, verdict) in rows {
            let mut test = json!({"name": "t", "request": write()});
            for (k, v) in fields.as_object().unwrap() {
                test[k] = v.clone();
            }
            let tests = one(test).unwrap();
            assert_eq!(check(package, &limits(), &tests[0]), verdict, "{fields}");
        }

        let mut undeclared = write();
        undeclared["action"] = json!("delete");
        let tests = one(json!({"name": "t", "request": undeclared, "expect": "deny"})).unwrap();
        let Verdict::Fail(why) = check(&cedar, &limits(), &tests[0]) else {
            panic!("an invalid request is no deny")
        };
        assert!(
            why.starts_with("expected deny, got invalid (") && why.contains("`delete`"),
            "{why}"
        );
    }

    /// A Rego rule that fails at run time denies with an error, which fails a test expecting
    /// a plain deny unless the test says errors are expected.
    #[test]
    fn evaluation_errors_fail_a_test_unless_expected() {
        let package = CompiledPackage::compile(&PackageSource {
            language: Language::Rego,
            files: vec![(
                "broken.rego".into(),
                "package broken\nimport rego.v1\nallow if { 1 / 0 == 1 }\n".into(),
            )],
            entrypoint: None,
        })
        .unwrap();
        let decision = package.decide(
            &one(json!({"name": "t", "request": write(), "expect": "deny"})).unwrap()[0]
                .request
                .to_request(),
            &limits(),
        );
        // Only meaningful if the rule does fail at run time.
        let decision = decision.unwrap();
        assert!(!decision.errors.is_empty(), "{decision:?}");
        let plain = one(json!({"name": "t", "request": write(), "expect": "deny"})).unwrap();
        assert!(matches!(
            check(&package, &limits(), &plain[0]),
            Verdict::Fail(why) if why.contains("no errors; got deny")
        ));
        let expected =
            one(json!({"name": "t", "request": write(), "expect": "deny", "errors": true}))
                .unwrap();
        assert_eq!(check(&package, &limits(), &expected[0]), Verdict::Pass);
    }
}
