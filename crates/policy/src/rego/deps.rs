//! Static analysis of Rego modules at upload: refuse recursion, overly deep rule chains, and
//! calls of built-ins whose cost the evaluation budget cannot bound ([`super::budget`]).
//!
//! OPA rejects recursive policies at compile time. regorus detects a recursive *rule* only
//! while evaluating, and a recursive *function* (or a very long chain of rules or functions)
//! recurses on the native stack until the process aborts. So Warden checks, at upload, the
//! graph "rule or function A refers to rule or function B": it must have no cycle and no
//! path longer than [`MAX_DEPENDENCY_DEPTH`]. Evaluation then needs a bounded amount of
//! stack, which [`super`] guarantees by running it on a stack of known size.
//!
//! References are resolved like OPA's dependency analysis, erring on the side of an extra
//! edge: `data.a.b` and import aliases resolve to their path, a bare name to the same
//! package; a reference with a dynamic part (`data.a[x]`) depends on every rule below its
//! static prefix; a reference into a rule's value (`data.a.r.field`) depends on that rule.
//!
//! The same walk finds every function call and every `with … as` replacement; a call that
//! names no rule or function of the package is a built-in, checked by
//! [`budget::check_call`](super::budget::check_call).
//!
//! Uses regorus's `unstable` AST; the walk recurses over expressions, whose nesting the
//! regorus parser bounds (32 levels).

use std::collections::HashMap;

use regorus::unstable::{Expr, Literal, Module, Query, Ref, Rule, RuleHead, Span};

use super::budget;
use crate::Diagnostic;

/// Longest chain of rule / function dependencies accepted, counting the entry rule.
pub(crate) const MAX_DEPENDENCY_DEPTH: usize = 32;

struct Node {
    path: Vec<String>,
    span: Span,
    edges: Vec<usize>,
}

/// A function call: the called name's static path and where it starts, and the arguments.
type Call<'a> = (Vec<String>, &'a Span, &'a [Ref<Expr>]);

/// What a rule refers to.
#[derive(Default)]
struct Found<'a> {
    /// Static paths of every reference (`data.a.b`, `x`, `f`).
    refs: Vec<Vec<String>>,
    /// Every call.
    calls: Vec<Call<'a>>,
    /// Every `with … as X` whose `X` is a name: its static path and span.
    replacements: Vec<(Vec<String>, &'a Span)>,
}

/// Checks `modules` for recursion, for dependency chains deeper than [`MAX_DEPENDENCY_DEPTH`]
/// and for built-ins the evaluation budget cannot bound; returns the path of every rule
/// (`data.a.b.allow`), or every refusal found.
pub(crate) fn check(modules: &[Ref<Module>]) -> Result<Vec<String>, Vec<Diagnostic>> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut by_path: HashMap<Vec<String>, usize> = HashMap::new();
    // (module index, node, rule)
    let mut rules: Vec<(usize, usize, &Rule)> = Vec::new();
    let mut packages: Vec<Vec<String>> = Vec::new();
    for (m, module) in modules.iter().enumerate() {
        let mut package = vec!["data".to_owned()];
        package.extend(static_path(&module.package.refr).0);
        for rule in &module.policy {
            let head = match rule.as_ref() {
                Rule::Spec { head, .. } => match head {
                    RuleHead::Compr { refr, .. }
                    | RuleHead::Set { refr, .. }
                    | RuleHead::Func { refr, .. } => refr,
                },
                Rule::Default { refr, .. } => refr,
            };
            let mut path = package.clone();
            path.extend(static_path(head).0);
            let node = *by_path.entry(path.clone()).or_insert_with(|| {
                nodes.push(Node {
                    path,
                    span: rule.span().clone(),
                    edges: Vec::new(),
                });
                nodes.len() - 1
            });
            rules.push((m, node, rule.as_ref()));
        }
        packages.push(package);
    }

    // Every proper prefix of a node's path → the nodes below it.
    let mut below: HashMap<&[String], Vec<usize>> = HashMap::new();
    for (i, node) in nodes.iter().enumerate() {
        for len in 1..node.path.len() {
            below.entry(&node.path[..len]).or_default().push(i);
        }
    }

    let mut edges: Vec<(usize, usize)> = Vec::new();
    let mut refused = Vec::new();
    for &(m, node, rule) in &rules {
        let Some(module) = modules.get(m) else {
            continue;
        };
        let Some(package) = packages.get(m) else {
            continue;
        };
        let imports = imports_of(module);
        let mut found = Found::default();
        collect_rule(rule, &mut found);
        // A name that resolves to no rule or function of the package is a built-in (or
        // unknown, which regorus reports when it evaluates the call).
        let builtin = |components: &[String]| -> Option<String> {
            let root = components.first()?;
            if root == "data" || root == "input" || imports.contains_key(root) {
                return None;
            }
            let mut path = package.clone();
            path.extend(components.iter().cloned());
            (!by_path.contains_key(&path)).then(|| components.join("."))
        };
        for (components, span, params) in &found.calls {
            if let Some(name) = builtin(components) {
                if let Err(d) = budget::check_call(&name, span, params) {
                    refused.push(d);
                }
            }
        }
        for (components, span) in &found.replacements {
            if let Some(name) = builtin(components) {
                if let Err(d) = budget::check_replacement(&name, span) {
                    refused.push(d);
                }
            }
        }
        for r in found.refs {
            let Some(path) = resolve(r, package, &imports) else {
                continue;
            };
            for len in 1..=path.len() {
                if let Some(&target) = by_path.get(&path[..len]) {
                    edges.push((node, target));
                }
            }
            if let Some(targets) = below.get(path.as_slice()) {
                edges.extend(targets.iter().map(|&t| (node, t)));
            }
        }
    }
    for (from, to) in edges {
        if let Some(n) = nodes.get_mut(from) {
            n.edges.push(to);
        }
    }
    for n in &mut nodes {
        n.edges.sort_unstable();
        n.edges.dedup();
    }
    depths(&nodes).map_err(|d| vec![d])?;
    if !refused.is_empty() {
        return Err(refused);
    }
    Ok(nodes.iter().map(|n| n.path.join(".")).collect())
}

/// Iterative DFS computing each node's longest dependency chain; fails on a cycle or a chain
/// over the limit.
fn depths(nodes: &[Node]) -> Result<(), Diagnostic> {
    const UNSEEN: usize = 0;
    const ACTIVE: usize = usize::MAX;
    // depth[i]: UNSEEN, ACTIVE (on the DFS stack), or the finished depth (≥ 1).
    let mut depth = vec![UNSEEN; nodes.len()];
    let mut parent = vec![usize::MAX; nodes.len()];
    for root in 0..nodes.len() {
        if depth[root] != UNSEEN {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        depth[root] = ACTIVE;
        while let Some(&mut (n, ref mut next)) = stack.last_mut() {
            let edges = &nodes[n].edges;
            if let Some(&child) = edges.get(*next) {
                *next += 1;
                match depth[child] {
                    UNSEEN => {
                        depth[child] = ACTIVE;
                        parent[child] = n;
                        stack.push((child, 0));
                    }
                    ACTIVE => return Err(cycle(nodes, &parent, n, child)),
                    _ => {}
                }
                continue;
            }
            let d = 1 + edges.iter().map(|&c| depth[c]).max().unwrap_or(0);
            if d > MAX_DEPENDENCY_DEPTH {
                return Err(located(
                    &nodes[n].span,
                    format!(
                        "`{}` starts a chain of {d} dependent rules or functions; at most {MAX_DEPENDENCY_DEPTH} are allowed",
                        nodes[n].path.join(".")
                    ),
                ));
            }
            depth[n] = d;
            stack.pop();
        }
    }
    Ok(())
}

fn cycle(nodes: &[Node], parent: &[usize], from: usize, to: usize) -> Diagnostic {
    let mut chain = vec![nodes[to].path.join(".")];
    let mut at = from;
    let mut names = vec![nodes[from].path.join(".")];
    while at != to && parent[at] != usize::MAX {
        at = parent[at];
        names.push(nodes[at].path.join("."));
    }
    names.reverse();
    chain.splice(0..0, names);
    chain.dedup();
    if chain.len() == 1 {
        chain.push(chain[0].clone());
    }
    located(
        &nodes[to].span,
        format!("recursion is not allowed: {}", chain.join(" → ")),
    )
}

/// A diagnostic at `span`.
pub(super) fn located(span: &Span, message: String) -> Diagnostic {
    Diagnostic {
        file: span.source.get_path().clone(),
        line: Some(span.line),
        column: Some(span.col),
        message,
        help: None,
    }
}

/// Import alias → imported `data` path.
fn imports_of(module: &Module) -> HashMap<String, Vec<String>> {
    let mut imports = HashMap::new();
    for import in &module.imports {
        let (path, _) = static_path(&import.refr);
        if path.first().map(String::as_str) != Some("data") {
            continue;
        }
        let alias = match &import.r#as {
            Some(span) => span.text().to_owned(),
            None => match path.last() {
                Some(last) => last.clone(),
                None => continue,
            },
        };
        imports.insert(alias, path);
    }
    imports
}

/// The `data` path a reference (components from its root) points at, if it points into
/// `data` at all.
fn resolve(
    components: Vec<String>,
    package: &[String],
    imports: &HashMap<String, Vec<String>>,
) -> Option<Vec<String>> {
    let root = components.first()?;
    if root == "data" {
        return Some(components);
    }
    if root == "input" {
        return None;
    }
    if let Some(target) = imports.get(root) {
        let mut path = target.clone();
        path.extend(components.into_iter().skip(1));
        return Some(path);
    }
    let mut path = package.to_vec();
    path.extend(components);
    Some(path)
}

/// The static components of a reference chain from its root variable (`a.b["c"][x].d` →
/// `[a, b, c]`) and the expressions inside it still to be walked (dynamic indexes, or a
/// root that is not a variable).
fn static_path(expr: &Expr) -> (Vec<String>, Vec<&Expr>) {
    let mut chain = Vec::new();
    let mut at = expr;
    while let Expr::RefDot { refr, .. } | Expr::RefBrack { refr, .. } = at {
        chain.push(at);
        at = refr;
    }
    let mut rest = Vec::new();
    let mut components = Vec::new();
    let mut dynamic = false;
    match at {
        Expr::Var { span, .. } => components.push(span.text().to_owned()),
        other => {
            rest.push(other);
            dynamic = true;
        }
    }
    for link in chain.into_iter().rev() {
        match link {
            Expr::RefDot { field, .. } if !dynamic => components.push(field.0.text().to_owned()),
            Expr::RefBrack { index, .. } => {
                let literal = match index.as_ref() {
                    Expr::String { value, .. } | Expr::RawString { value, .. } => {
                        value.as_string().ok().map(|s| s.to_string())
                    }
                    _ => None,
                };
                match literal {
                    Some(s) if !dynamic => components.push(s),
                    _ => {
                        dynamic = true;
                        rest.push(index);
                    }
                }
            }
            _ => {}
        }
    }
    (components, rest)
}

/// Where a reference chain starts (`numbers` in `numbers.range`).
fn root_span(expr: &Expr) -> &Span {
    let mut at = expr;
    while let Expr::RefDot { refr, .. } | Expr::RefBrack { refr, .. } = at {
        at = refr;
    }
    at.span()
}

fn collect_rule<'a>(rule: &'a Rule, out: &mut Found<'a>) {
    match rule {
        Rule::Spec { head, bodies, .. } => {
            match head {
                RuleHead::Compr { refr, assign, .. } => {
                    walk_head_ref(refr, out);
                    if let Some(a) = assign {
                        walk(&a.value, out);
                    }
                }
                RuleHead::Set { refr, key, .. } => {
                    walk_head_ref(refr, out);
                    if let Some(k) = key {
                        walk(k, out);
                    }
                }
                RuleHead::Func { assign, .. } => {
                    if let Some(a) = assign {
                        walk(&a.value, out);
                    }
                }
            }
            for body in bodies {
                if let Some(a) = &body.assign {
                    walk(&a.value, out);
                }
                walk_query(&body.query, out);
            }
        }
        Rule::Default { value, .. } => walk(value, out),
    }
}

/// A rule head's own path is a definition, not a reference; only its dynamic keys are walked.
fn walk_head_ref<'a>(refr: &'a Expr, out: &mut Found<'a>) {
    for e in static_path(refr).1 {
        walk(e, out);
    }
}

fn walk_query<'a>(query: &'a Query, out: &mut Found<'a>) {
    for stmt in &query.stmts {
        match &stmt.literal {
            Literal::SomeVars { .. } => {}
            Literal::SomeIn {
                key,
                value,
                collection,
                ..
            } => {
                if let Some(k) = key {
                    walk(k, out);
                }
                walk(value, out);
                walk(collection, out);
            }
            Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => walk(expr, out),
            Literal::Every { domain, query, .. } => {
                walk(domain, out);
                walk_query(query, out);
            }
        }
        for w in &stmt.with_mods {
            walk(&w.refr, out);
            walk(&w.r#as, out);
            let (path, rest) = static_path(&w.r#as);
            if rest.is_empty() && !path.is_empty() {
                out.replacements.push((path, w.r#as.span()));
            }
        }
    }
}

fn walk<'a>(expr: &'a Expr, out: &mut Found<'a>) {
    match expr {
        Expr::String { .. }
        | Expr::RawString { .. }
        | Expr::Number { .. }
        | Expr::Bool { .. }
        | Expr::Null { .. } => {}
        Expr::Var { .. } | Expr::RefDot { .. } | Expr::RefBrack { .. } => {
            let (components, rest) = static_path(expr);
            if !components.is_empty() {
                out.refs.push(components);
            }
            for e in rest {
                walk(e, out);
            }
        }
        Expr::Array { items, .. } | Expr::Set { items, .. } => {
            for i in items {
                walk(i, out);
            }
        }
        Expr::Object { fields, .. } => {
            for (_, k, v) in fields {
                walk(k, out);
                walk(v, out);
            }
        }
        Expr::ArrayCompr { term, query, .. } | Expr::SetCompr { term, query, .. } => {
            walk(term, out);
            walk_query(query, out);
        }
        Expr::ObjectCompr {
            key, value, query, ..
        } => {
            walk(key, out);
            walk(value, out);
            walk_query(query, out);
        }
        Expr::Call { fcn, params, .. } => {
            let (name, _) = static_path(fcn);
            if !name.is_empty() {
                out.calls.push((name, root_span(fcn), params));
            }
            walk(fcn, out);
            for p in params {
                walk(p, out);
            }
        }
        Expr::UnaryExpr { expr, .. } => walk(expr, out),
        Expr::BinExpr { lhs, rhs, .. }
        | Expr::BoolExpr { lhs, rhs, .. }
        | Expr::ArithExpr { lhs, rhs, .. }
        | Expr::AssignExpr { lhs, rhs, .. } => {
            walk(lhs, out);
            walk(rhs, out);
        }
        Expr::Membership {
            key,
            value,
            collection,
            ..
        } => {
            if let Some(k) = key {
                walk(k, out);
            }
            walk(value, out);
            walk(collection, out);
        }
    }
}
