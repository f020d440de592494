//! What one Rego built-in call may cost: the part of the evaluation budget that regorus's
//! timer cannot enforce.
//!
//! regorus reads its execution timer between steps of the interpreter — before every call,
//! every iteration — but never inside a built-in: one call runs to completion, however long it
//! takes and whatever it allocates. `count(numbers.range(1, 30000000)) > 5` spent 2.3 s and
//! ~660 MB in a single call and was then *allowed*; `numbers.range(1, 1e12)` would ask the
//! allocator for terabytes up front and abort the process. So Warden admits, at upload, only
//! the built-ins whose *result* it can bound:
//!
//! - [`Class::Bounded`]: the result is at most proportional to the arguments' sizes. The
//!   arguments are the request (at most the context limit), text of the package itself, or
//!   values built during the evaluation — within the time budget — so a call can add at most a
//!   constant factor to what the budget already let the evaluation build.
//! - [`Class::Capped`]: built-ins whose result's size is set by an argument's *value*
//!   (`numbers.range`), or is the *product* of two sizes (`concat`'s delimiter repeated between
//!   every element, `replace`, `strings.replace_n`), or is many small values (`split`). Warden
//!   registers its own implementations of these under the same names — regorus looks up
//!   extensions before built-ins, which `tests::capped_builtins_replace_regorus_ones` proves —
//!   and each computes its result's size first and fails past [`MAX_GENERATED_ELEMENTS`] or
//!   [`MAX_GENERATED_BYTES`] before allocating it. Literal arguments over the cap are refused
//!   at upload.
//! - [`Class::Format`]: `sprintf`, whose format string can ask for a width of any size
//!   (`%0999999999d`): it must be called with a string literal format whose widths are at most
//!   [`MAX_FORMAT_WIDTH`].
//! - [`Class::Refused`]: the built-ins whose result cannot be bounded that way, each with the
//!   reason, and any built-in of a later regorus that nobody has classified yet.
//!
//! What this does not bound is the *time* of one call on large arguments (`trim` with a long
//! cut set, arithmetic on numbers with hundreds of thousands of digits): that is at most a
//! product of argument sizes, which the 32 KiB context and the package's own size bound, and
//! the server runs Rego evaluations so that such an overrun holds only its own decision (see
//! `docs/policy.md`, "The evaluation budget").

use regorus::unstable::{Expr, Ref, Span};
use regorus::{Engine, Value};

use super::deps::located;
use crate::Diagnostic;

/// Most elements one capped built-in call may generate (`numbers.range`, `split`).
pub const MAX_GENERATED_ELEMENTS: usize = 100_000;

/// Longest string, in bytes, one capped built-in call may generate (`concat`, `replace`,
/// `strings.replace_n`).
pub const MAX_GENERATED_BYTES: usize = 1024 * 1024;

/// Widest field or precision a `sprintf` format may ask for (`%64d`, `%.64f`).
pub const MAX_FORMAT_WIDTH: u32 = 64;

/// Longest `sprintf` format string, in bytes.
pub const MAX_FORMAT_BYTES: usize = 4096;

/// The words every budget refusal at evaluation starts with, so a caller (and a person reading
/// a decision's errors) can tell an exhausted budget from a policy's own error.
pub(crate) const EXCEEDED: &str = "evaluation budget exceeded";

/// How Warden treats a regorus built-in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Result at most proportional to the arguments' sizes.
    Bounded,
    /// Replaced by Warden's implementation, which caps the result before allocating it.
    Capped,
    /// `sprintf`: only with a literal format of bounded widths.
    Format,
    /// Not available, for this reason.
    Refused(&'static str),
}

/// Built-ins whose result is at most proportional to the size of their arguments (sorting:
/// `n log n` time). Each was read in regorus 0.14's source.
const BOUNDED: &[&str] = &[
    "__builtin_sets.intersection",
    "__builtin_sets.union",
    "abs",
    "array.concat",
    "array.reverse",
    "array.slice",
    "base64.decode",
    "base64.encode",
    "base64.is_valid",
    "base64url.decode",
    "base64url.encode",
    "base64url.encode_no_pad",
    "bits.and",
    "bits.negate",
    "bits.or",
    "bits.rsh",
    "bits.xor",
    "ceil",
    "contains",
    "count",
    "endswith",
    "floor",
    "format_int",
    "glob.match",
    "glob.quote_meta",
    "graph.reachable",
    "hex.decode",
    "hex.encode",
    "indexof",
    "indexof_n",
    "intersection",
    "is_array",
    "is_boolean",
    "is_null",
    "is_number",
    "is_object",
    "is_set",
    "is_string",
    "json.filter",
    "json.is_valid",
    "json.marshal",
    "json.remove",
    "json.unmarshal",
    "lower",
    "max",
    "min",
    "net.cidr_contains",
    "net.cidr_is_valid",
    "object.filter",
    "object.get",
    "object.keys",
    "object.remove",
    "object.subset",
    "object.union",
    "object.union_n",
    "product",
    "rand.intn",
    "regex.find_n",
    "regex.is_valid",
    "regex.match",
    "regex.split",
    "round",
    "semver.compare",
    "semver.is_valid",
    "sort",
    "startswith",
    "strings.any_prefix_match",
    "strings.any_suffix_match",
    "strings.count",
    "strings.reverse",
    "substring",
    "sum",
    "to_number",
    "trace",
    "trim",
    "trim_left",
    "trim_prefix",
    "trim_right",
    "trim_space",
    "trim_suffix",
    "type_name",
    "union",
    "units.parse",
    "units.parse_bytes",
    "upper",
    "urlquery.decode",
    "urlquery.decode_object",
    "urlquery.encode",
    "urlquery.encode_object",
];

/// Built-ins Warden replaces with capped implementations ([`install`]).
const CAPPED: &[&str] = &[
    "concat",
    "numbers.range",
    "numbers.range_step",
    "replace",
    "split",
    "strings.replace_n",
];

/// Built-ins that are not available, and why.
const REFUSED: &[(&str, &str)] = &[
    (
        "bits.lsh",
        "its result's size is set by the shift amount (`bits.lsh(1, 4000000000)` is a 500 MB number)",
    ),
    (
        "graph.reachable_paths",
        "the number of paths it returns can grow exponentially with the graph",
    ),
    (
        "json.marshal_with_options",
        "its `indent` option is repeated at every level, so its result is the value's size times the indent's",
    ),
    (
        "net.cidr_expand",
        "its result's size is set by the prefix length (`0.0.0.0/0` is four billion addresses)",
    ),
    (
        "regex.find_all_string_submatch_n",
        "every match brings every capture group, so its result is the input's size times the pattern's groups",
    ),
    (
        "regex.replace",
        "its result is the input's size times the replacement's",
    ),
    (
        "regex.template_match",
        "it can panic on input shorter than the template; use `regex.match`",
    ),
    (
        "walk",
        "its result grows with its argument's size times its depth",
    ),
];

/// How Warden treats the built-in `name`; `None` when regorus has no built-in of that name.
pub(crate) fn class(name: &str) -> Option<Class> {
    if BOUNDED.contains(&name) {
        Some(Class::Bounded)
    } else if CAPPED.contains(&name) {
        Some(Class::Capped)
    } else if name == "sprintf" {
        Some(Class::Format)
    } else if let Some((_, why)) = REFUSED.iter().find(|(n, _)| *n == name) {
        Some(Class::Refused(why))
    } else if regorus::unstable::BUILTINS.contains_key(name) {
        // A built-in of a newer regorus that nobody has classified yet: refused until someone
        // reads it.
        Some(Class::Refused("Warden has not classified its cost"))
    } else {
        None
    }
}

// ---- at upload -------------------------------------------------------------------------------

/// Checks one call of the built-in `name` (a call that names no function of the package) at
/// upload: refused built-ins, `sprintf` without a literal format, a capped built-in given an
/// output argument or literal bounds over its cap.
pub(crate) fn check_call(name: &str, span: &Span, params: &[Ref<Expr>]) -> Result<(), Diagnostic> {
    match class(name) {
        None | Some(Class::Bounded) => Ok(()),
        Some(Class::Refused(why)) => Err(refused(span, name, why)),
        Some(Class::Format) => check_format(params),
        Some(Class::Capped) => {
            let arity = capped_arity(name);
            if params.len() != arity {
                return Err(located(
                    span,
                    format!(
                        "`{name}` takes {arity} arguments; assign its result (`x := {name}(…)`) instead of passing an output argument"
                    ),
                ));
            }
            let literal_count = match (name, params) {
                ("numbers.range", [a, b]) => match (integer_literal(a), integer_literal(b)) {
                    (Some(a), Some(b)) => Some(a.abs_diff(b).saturating_add(1)),
                    _ => None,
                },
                ("numbers.range_step", [a, b, step]) => {
                    match (
                        integer_literal(a),
                        integer_literal(b),
                        integer_literal(step),
                    ) {
                        (Some(a), Some(b), Some(step)) if step > 0 => {
                            Some((a.abs_diff(b) / step.unsigned_abs()).saturating_add(1))
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            match literal_count {
                Some(n) if n > MAX_GENERATED_ELEMENTS as u128 => Err(located(
                    span,
                    format!(
                        "`{name}` would generate {n} elements; one call may generate at most {MAX_GENERATED_ELEMENTS} (the evaluation budget)"
                    ),
                )),
                _ => Ok(()),
            }
        }
    }
}

/// Checks a built-in named as the replacement of a `with` modifier (`with f as net.cidr_expand`),
/// which would otherwise call it with whatever `f` is called with.
pub(crate) fn check_replacement(name: &str, span: &Span) -> Result<(), Diagnostic> {
    match class(name) {
        None | Some(Class::Bounded | Class::Capped) => Ok(()),
        Some(Class::Refused(why)) => Err(refused(span, name, why)),
        Some(Class::Format) => Err(located(
            span,
            "`sprintf` may only be called directly, with a literal format string".to_owned(),
        )),
    }
}

fn refused(span: &Span, name: &str, why: &str) -> Diagnostic {
    located(
        span,
        format!("built-in `{name}` is not available in Warden: {why}"),
    )
}

/// An integer literal, possibly negated.
fn integer_literal(expr: &Expr) -> Option<i128> {
    match expr {
        Expr::Number { value, .. } => match value {
            Value::Number(n) if n.is_integer() => n.as_i128(),
            _ => None,
        },
        Expr::UnaryExpr { expr, .. } => integer_literal(expr)?.checked_neg(),
        _ => None,
    }
}

/// `sprintf`'s format must be a string literal of at most [`MAX_FORMAT_BYTES`] whose widths and
/// precisions are ASCII digits up to [`MAX_FORMAT_WIDTH`]: regorus pads to any width it is
/// given, and a width in other digits (`%٣d`) makes it panic.
fn check_format(params: &[Ref<Expr>]) -> Result<(), Diagnostic> {
    let Some(first) = params.first() else {
        return Ok(());
    };
    let (Expr::String { value, .. } | Expr::RawString { value, .. }) = first.as_ref() else {
        return Err(located(
            first.span(),
            "`sprintf` needs a string literal as its format: a computed format could ask for any width"
                .to_owned(),
        ));
    };
    let Ok(format) = value.as_string() else {
        return Ok(());
    };
    if format.len() > MAX_FORMAT_BYTES {
        return Err(located(
            first.span(),
            format!(
                "`sprintf` format is {} bytes; at most {MAX_FORMAT_BYTES} are allowed",
                format.len()
            ),
        ));
    }
    // The same scan as regorus's `sprintf`: after `%`, a `.` or a digit starts a width that
    // runs over every following numeric character.
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        match chars.next() {
            Some(c) if c == '.' || c.is_numeric() => {
                let mut digits = String::new();
                if c != '.' {
                    digits.push(c);
                }
                while let Some(&d) = chars.peek().filter(|d| d.is_numeric()) {
                    digits.push(d);
                    chars.next();
                }
                let width = if digits.is_empty() {
                    Some(0)
                } else if digits.bytes().all(|d| d.is_ascii_digit()) {
                    digits.parse::<u32>().ok()
                } else {
                    None
                };
                if width.is_none_or(|w| w > MAX_FORMAT_WIDTH) {
                    return Err(located(
                        first.span(),
                        format!(
                            "`sprintf` width `{digits}` is not allowed: widths and precisions are ASCII digits up to {MAX_FORMAT_WIDTH}"
                        ),
                    ));
                }
            }
            // `%%`, a verb, or the end (which regorus reports when it evaluates the call).
            _ => {}
        }
    }
    Ok(())
}

// ---- at evaluation ---------------------------------------------------------------------------

type Builtin = fn(Vec<Value>) -> anyhow::Result<Value>;

/// Warden's implementations of the [`Class::Capped`] built-ins, with their arity.
const IMPLEMENTATIONS: &[(&str, u8, Builtin)] = &[
    ("concat", 2, concat),
    ("numbers.range", 2, range),
    ("numbers.range_step", 3, range_step),
    ("replace", 3, replace),
    ("split", 2, split),
    ("strings.replace_n", 2, replace_n),
];

fn capped_arity(name: &str) -> usize {
    IMPLEMENTATIONS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map_or(0, |(_, arity, _)| usize::from(*arity))
}

/// Registers Warden's capped built-ins on `engine`, in place of regorus's.
pub(crate) fn install(engine: &mut Engine) -> Result<(), String> {
    for &(name, arity, f) in IMPLEMENTATIONS {
        engine
            .add_extension(name.to_owned(), arity, Box::new(f))
            .map_err(|e| format!("cannot register `{name}`: {e}"))?;
    }
    Ok(())
}

fn over_elements(name: &str, n: u128) -> anyhow::Result<()> {
    if n > MAX_GENERATED_ELEMENTS as u128 {
        anyhow::bail!(
            "{EXCEEDED}: `{name}` would generate {n} elements; one call may generate at most {MAX_GENERATED_ELEMENTS}"
        );
    }
    Ok(())
}

fn over_bytes(name: &str, n: usize) -> anyhow::Result<()> {
    if n > MAX_GENERATED_BYTES {
        anyhow::bail!(
            "{EXCEEDED}: `{name}` would generate a string of {n} bytes; one call may generate at most {MAX_GENERATED_BYTES}"
        );
    }
    Ok(())
}

fn string<'a>(name: &str, v: &'a Value) -> anyhow::Result<&'a str> {
    match v {
        Value::String(s) => Ok(s),
        other => anyhow::bail!("`{name}` expects string argument. Got `{other}` instead"),
    }
}

fn integer(name: &str, v: &Value) -> anyhow::Result<i128> {
    match v {
        Value::Number(n) if n.is_integer() => n.as_i128().ok_or_else(|| {
            anyhow::anyhow!("`{name}` supports integers between -2^127 and 2^127 only. Got `{v}`")
        }),
        Value::Number(_) => anyhow::bail!("`{name}` expects integer arguments. Got `{v}`"),
        other => anyhow::bail!("`{name}` expects numeric argument. Got `{other}` instead"),
    }
}

/// `numbers.range(a, b)`: the integers from `a` to `b`, both included, counting down when
/// `b < a`.
fn range(args: Vec<Value>) -> anyhow::Result<Value> {
    let name = "numbers.range";
    let [a, b] = args.as_slice() else {
        anyhow::bail!("`{name}` expects 2 arguments");
    };
    let (a, b) = (integer(name, a)?, integer(name, b)?);
    steps(name, a, b, 1)
}

/// `numbers.range_step(a, b, step)`: from `a` towards `b` in steps of `step` (> 0), not past
/// `b`.
fn range_step(args: Vec<Value>) -> anyhow::Result<Value> {
    let name = "numbers.range_step";
    let [a, b, step] = args.as_slice() else {
        anyhow::bail!("`{name}` expects 3 arguments");
    };
    let (a, b) = (integer(name, a)?, integer(name, b)?);
    let step = match integer(name, step) {
        Ok(s) if s > 0 => s,
        _ => anyhow::bail!("`{name}` step must be a positive integer. Got `{step}`"),
    };
    steps(name, a, b, step)
}

/// The `count` values from `a` towards `b` in steps of `step` (> 0), refused past the cap
/// before any is made.
fn steps(name: &str, a: i128, b: i128, step: i128) -> anyhow::Result<Value> {
    let count = (a.abs_diff(b) / step.unsigned_abs()).saturating_add(1);
    over_elements(name, count)?;
    let step = if b >= a { step } else { -step };
    // Every value taken lies between `a` and `b`; the one past the last may not exist.
    let values: Vec<Value> = std::iter::successors(Some(a), |v| v.checked_add(step))
        .take(usize::try_from(count).unwrap_or(MAX_GENERATED_ELEMENTS))
        .map(Value::from)
        .collect();
    Ok(Value::from(values))
}

/// The strings of an array or set, in regorus's order.
fn strings<'a>(name: &str, v: &'a Value) -> anyhow::Result<Vec<&'a str>> {
    let items: Box<dyn Iterator<Item = &Value>> = match v {
        Value::Array(a) => Box::new(a.iter()),
        Value::Set(s) => Box::new(s.iter()),
        _ => anyhow::bail!("`{name}` expects array/set of strings."),
    };
    items
        .enumerate()
        .map(|(idx, item)| match item {
            Value::String(s) => Ok(s.as_ref()),
            _ => {
                anyhow::bail!("`{name}` expects string collection. Element {idx} is not a string.")
            }
        })
        .collect()
}

/// `concat(delimiter, collection)`.
fn concat(args: Vec<Value>) -> anyhow::Result<Value> {
    let name = "concat";
    let [delimiter, collection] = args.as_slice() else {
        anyhow::bail!("`{name}` expects 2 arguments");
    };
    let delimiter = string(name, delimiter)?;
    let items = strings(name, collection)?;
    let size = items
        .iter()
        .map(|s| s.len())
        .fold(0usize, usize::saturating_add)
        .saturating_add(
            delimiter
                .len()
                .saturating_mul(items.len().saturating_sub(1)),
        );
    over_bytes(name, size)?;
    Ok(Value::String(items.join(delimiter).into()))
}

/// The length of `s.replace(old, new)`, without building it.
fn replaced_len(s: &str, old: &str, new: &str) -> usize {
    let count = if old.is_empty() {
        s.chars().count().saturating_add(1)
    } else {
        s.matches(old).count()
    };
    (s.len() - count * old.len()).saturating_add(count.saturating_mul(new.len()))
}

/// `replace(s, old, new)`: every `old` in `s` replaced by `new`.
fn replace(args: Vec<Value>) -> anyhow::Result<Value> {
    let name = "replace";
    let [s, old, new] = args.as_slice() else {
        anyhow::bail!("`{name}` expects 3 arguments");
    };
    let (s, old, new) = (string(name, s)?, string(name, old)?, string(name, new)?);
    over_bytes(name, replaced_len(s, old, new))?;
    Ok(Value::String(s.replace(old, new).into()))
}

/// `strings.replace_n(patterns, s)`: each `old: new` of `patterns` replaced in turn, in key
/// order.
fn replace_n(args: Vec<Value>) -> anyhow::Result<Value> {
    let name = "strings.replace_n";
    let [patterns, s] = args.as_slice() else {
        anyhow::bail!("`{name}` expects 2 arguments");
    };
    let Value::Object(patterns) = patterns else {
        anyhow::bail!("`{name}` expects object argument. Got `{patterns}` instead");
    };
    let mut s = string(name, s)?.to_owned();
    for (old, new) in patterns.iter_sorted() {
        let (Value::String(old), Value::String(new)) = (old, new) else {
            anyhow::bail!("`{name}` expects string keys and values in pattern object.");
        };
        over_bytes(name, replaced_len(&s, old, new))?;
        s = s.replace(old.as_ref(), new.as_ref());
    }
    Ok(Value::String(s.into()))
}

/// `split(s, delimiter)`: the parts of `s` between delimiters; each character when the
/// delimiter is empty (as Go's `strings.Split`).
fn split(args: Vec<Value>) -> anyhow::Result<Value> {
    let name = "split";
    let [s, delimiter] = args.as_slice() else {
        anyhow::bail!("`{name}` expects 2 arguments");
    };
    let (s, delimiter) = (string(name, s)?, string(name, delimiter)?);
    let parts = if delimiter.is_empty() {
        s.chars().count()
    } else {
        s.matches(delimiter).count() + 1
    };
    over_elements(name, parts as u128)?;
    let parts: Vec<Value> = if delimiter.is_empty() {
        s.chars().map(|c| Value::from(c.to_string())).collect()
    } else {
        s.split(delimiter).map(Value::from).collect()
    };
    Ok(Value::from(parts))
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;

    /// Every built-in of the regorus in use is classified on purpose — none falls to the
    /// "not classified" refusal — and every name in the lists is one of its built-ins.
    #[test]
    fn every_regorus_builtin_is_classified() {
        let builtins = &*regorus::unstable::BUILTINS;
        let unclassified: Vec<&&str> = builtins
            .keys()
            .filter(|name| {
                !(BOUNDED.contains(name)
                    || CAPPED.contains(name)
                    || **name == "sprintf"
                    || REFUSED.iter().any(|(n, _)| n == *name))
            })
            .collect();
        assert!(
            unclassified.is_empty(),
            "regorus built-ins not classified: {unclassified:?}"
        );
        for name in BOUNDED
            .iter()
            .chain(CAPPED)
            .chain(REFUSED.iter().map(|(n, _)| n))
        {
            assert!(
                builtins.contains_key(name),
                "`{name}` is no regorus built-in"
            );
        }
        for (name, arity, _) in IMPLEMENTATIONS {
            assert!(CAPPED.contains(name));
            assert_eq!(
                builtins.get(name).map(|b| b.1),
                Some(*arity),
                "arity of `{name}`"
            );
        }
        assert_eq!(IMPLEMENTATIONS.len(), CAPPED.len());
    }

    const RULES: &str = r#"package t
import rego.v1
r_range := numbers.range(input.args[0], input.args[1])
r_range_step := numbers.range_step(input.args[0], input.args[1], input.args[2])
r_concat := concat(input.args[0], input.args[1])
r_concat_set := concat(input.args[0], {x | some x in input.args[1]})
r_replace := replace(input.args[0], input.args[1], input.args[2])
r_replace_n := strings.replace_n(input.args[0], input.args[1])
r_split := split(input.args[0], input.args[1])
"#;

    fn engine(capped: bool) -> Engine {
        let mut engine = Engine::new();
        engine.set_strict_builtin_errors(true);
        if capped {
            install(&mut engine).unwrap();
        }
        engine
            .add_policy("t.rego".to_owned(), RULES.to_owned())
            .unwrap();
        engine
    }

    fn eval(engine: &Engine, rule: &str, args: &serde_json::Value) -> Result<Value, String> {
        let mut engine = engine.clone();
        engine.set_input(Value::from(serde_json::json!({ "args": args })));
        engine
            .eval_rule(format!("data.t.{rule}"))
            .map_err(|e| e.to_string())
    }

    /// Warden's capped built-ins are the ones evaluation uses (regorus resolves extensions
    /// before its built-ins): past the cap they refuse where regorus's would allocate.
    #[test]
    fn capped_builtins_replace_regorus_ones() {
        let (plain, capped) = (engine(false), engine(true));
        let args = serde_json::json!([1, 150_000]);
        let Ok(Value::Array(all)) = eval(&plain, "r_range", &args) else {
            panic!("regorus's numbers.range")
        };
        assert_eq!(all.len(), 150_000);
        let err = eval(&capped, "r_range", &args).unwrap_err();
        assert!(err.contains(EXCEEDED) && err.contains("150000"), "{err}");
    }

    /// Within the caps, Warden's built-ins answer exactly as regorus's: the same value, or an
    /// error where regorus errs, on a table of edge cases and on random strings.
    #[test]
    fn capped_builtins_answer_as_regorus_within_the_caps() {
        use serde_json::json;
        let (plain, capped) = (engine(false), engine(true));
        let mut cases = vec![
            ("r_range", json!([1, 5])),
            ("r_range", json!([5, 1])),
            ("r_range", json!([0, 0])),
            ("r_range", json!([-3, 3])),
            ("r_range", json!([1.5, 3])),
            ("r_range", json!(["1", 3])),
            (
                "r_range",
                json!([9_007_199_254_740_993i64, 9_007_199_254_740_990i64]),
            ),
            ("r_range_step", json!([1, 10, 3])),
            ("r_range_step", json!([10, 1, 3])),
            ("r_range_step", json!([0, 0, 1])),
            ("r_range_step", json!([1, 2, 5])),
            ("r_range_step", json!([1, 2, 0])),
            ("r_range_step", json!([1, 2, -1])),
            ("r_range_step", json!([1, 2, 0.5])),
            ("r_concat", json!([",", ["a", "b", "c"]])),
            ("r_concat", json!(["", []])),
            ("r_concat", json!(["-", ["é"]])),
            ("r_concat", json!(["-", ["a", 1]])),
            ("r_concat", json!([1, ["a"]])),
            ("r_concat", json!(["-", "ab"])),
            ("r_concat_set", json!(["/", ["b", "a", "c", "a"]])),
            ("r_replace", json!(["aaa", "a", "bb"])),
            ("r_replace", json!(["abc", "", "-"])),
            ("r_replace", json!(["héllo", "l", "L"])),
            ("r_replace", json!(["", "", "x"])),
            ("r_replace", json!(["x", "y", "z"])),
            ("r_replace", json!(["x", 1, "z"])),
            ("r_replace_n", json!([{"a": "b", "b": "c"}, "aabb"])),
            ("r_replace_n", json!([{}, "aabb"])),
            ("r_replace_n", json!([{"": "-"}, "ab"])),
            ("r_replace_n", json!([{"a": 1}, "ab"])),
            ("r_replace_n", json!([["a"], "ab"])),
            ("r_split", json!(["a,b,,c", ","])),
            ("r_split", json!(["héllo", ""])),
            ("r_split", json!(["", ","])),
            ("r_split", json!(["", ""])),
            ("r_split", json!([",", ","])),
            ("r_split", json!([1, ","])),
        ];
        let mut rng = StdRng::seed_from_u64(7);
        let text = |rng: &mut StdRng, max: usize| -> String {
            let len = rng.gen_range(0..=max);
            (0..len)
                .map(|_| ['a', 'b', 'é', ','][rng.gen_range(0..4)])
                .collect()
        };
        for _ in 0..300 {
            let (s, a, b) = (text(&mut rng, 12), text(&mut rng, 2), text(&mut rng, 3));
            cases.push(("r_replace", json!([s, a, b])));
            cases.push(("r_split", json!([s, a])));
            cases.push(("r_concat", json!([a, [s, b, s]])));
            cases.push(("r_replace_n", json!([{a.clone(): b, b.clone(): a}, s])));
            let (x, y) = (rng.gen_range(-20..20), rng.gen_range(-20..20));
            cases.push(("r_range", json!([x, y])));
            cases.push(("r_range_step", json!([x, y, rng.gen_range(1..5)])));
        }
        for (rule, args) in &cases {
            let want = eval(&plain, rule, args);
            let got = eval(&capped, rule, args);
            match (&want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(w, g, "{rule}({args})"),
                (Err(_), Err(_)) => {}
                _ => panic!("{rule}({args}): regorus {want:?}, Warden {got:?}"),
            }
        }
    }
}
