//! OpenFGA's JSON authorization model (`openfga/api` `authzmodel.proto`), written exactly as
//! the official `@openfga/syntax-transformer` `transformDSLToJSONObject` writes it, and read
//! in either the transformer's or the protobuf-JSON spelling (`computedUserset` or
//! `computed_userset`, `type_definitions` or `typeDefinitions`, …).

use serde_json::{Map, Value, json};

use crate::error::RebacError;
use crate::model::{RelationDefinition, Rewrite, TypeDefinition, TypeRestriction};

pub(crate) fn rewrite_to_json(rewrite: &Rewrite) -> Value {
    match rewrite {
        Rewrite::This => json!({"this": {}}),
        Rewrite::Computed(r) => json!({"computedUserset": {"relation": r}}),
        Rewrite::TupleToUserset { tupleset, computed } => json!({
            "tupleToUserset": {
                "computedUserset": {"relation": computed},
                "tupleset": {"relation": tupleset},
            }
        }),
        Rewrite::Union(c) => {
            json!({"union": {"child": c.iter().map(rewrite_to_json).collect::<Vec<_>>()}})
        }
        Rewrite::Intersection(c) => {
            json!({"intersection": {"child": c.iter().map(rewrite_to_json).collect::<Vec<_>>()}})
        }
        Rewrite::Difference { base, subtract } => json!({
            "difference": {"base": rewrite_to_json(base), "subtract": rewrite_to_json(subtract)}
        }),
    }
}

fn restriction_to_json(r: &TypeRestriction) -> Value {
    match r {
        TypeRestriction::Type(t) => json!({"type": t}),
        TypeRestriction::Wildcard(t) => json!({"type": t, "wildcard": {}}),
        TypeRestriction::Userset {
            type_name,
            relation,
        } => json!({"type": type_name, "relation": relation}),
    }
}

pub(crate) fn model_to_json(schema_version: &str, types: &[TypeDefinition]) -> Value {
    let mut out = Map::new();
    out.insert("schema_version".into(), json!(schema_version));
    let defs: Vec<Value> = types
        .iter()
        .map(|t| {
            let mut relations = Map::new();
            let mut metadata = Map::new();
            for r in &t.relations {
                relations.insert(r.name.clone(), rewrite_to_json(&r.rewrite));
                let types: Vec<Value> = r
                    .directly_related_user_types
                    .iter()
                    .map(restriction_to_json)
                    .collect();
                metadata.insert(
                    r.name.clone(),
                    json!({"directly_related_user_types": types}),
                );
            }
            let metadata = if metadata.is_empty() {
                Value::Null
            } else {
                json!({"relations": metadata})
            };
            json!({"type": t.name, "relations": relations, "metadata": metadata})
        })
        .collect();
    if !defs.is_empty() {
        out.insert("type_definitions".into(), Value::Array(defs));
    }
    Value::Object(out)
}

fn bad(message: impl Into<String>) -> RebacError {
    RebacError::model(None, message)
}

/// `obj[snake]` or `obj[camel]`.
fn field<'a>(obj: &'a Map<String, Value>, snake: &str, camel: &str) -> Option<&'a Value> {
    obj.get(snake)
        .or_else(|| obj.get(camel))
        .filter(|v| !v.is_null())
}

fn string_field(obj: &Map<String, Value>, snake: &str, camel: &str) -> Option<String> {
    field(obj, snake, camel)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn relation_of(v: &Value, what: &str) -> Result<String, RebacError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad(format!("`{what}` must be an object")))?;
    if let Some(o) = obj
        .get("object")
        .and_then(Value::as_str)
        .filter(|o| !o.is_empty())
    {
        return Err(bad(format!(
            "`{what}` with an `object` (`{o}`) is not supported"
        )));
    }
    obj.get("relation")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| bad(format!("`{what}` needs a `relation`")))
}

fn children(v: &Value, what: &str) -> Result<Vec<Rewrite>, RebacError> {
    let list = v
        .get("child")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(format!("`{what}` needs a `child` list")))?;
    list.iter().map(rewrite_from_json).collect()
}

pub(crate) fn rewrite_from_json(v: &Value) -> Result<Rewrite, RebacError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("a relation definition must be an object"))?;
    let present: Vec<(&String, &Value)> = obj.iter().filter(|(_, v)| !v.is_null()).collect();
    let [(key, value)] = present.as_slice() else {
        return Err(bad(
            "a relation definition must have exactly one of `this`, `computedUserset`, \
             `tupleToUserset`, `union`, `intersection`, `difference`",
        ));
    };
    match key.as_str() {
        "this" => Ok(Rewrite::This),
        "computedUserset" | "computed_userset" => {
            Ok(Rewrite::Computed(relation_of(value, "computedUserset")?))
        }
        "tupleToUserset" | "tuple_to_userset" => {
            let o = value
                .as_object()
                .ok_or_else(|| bad("`tupleToUserset` must be an object"))?;
            let tupleset = o
                .get("tupleset")
                .ok_or_else(|| bad("`tupleToUserset` needs a `tupleset`"))?;
            let computed = field(o, "computed_userset", "computedUserset")
                .ok_or_else(|| bad("`tupleToUserset` needs a `computedUserset`"))?;
            Ok(Rewrite::TupleToUserset {
                tupleset: relation_of(tupleset, "tupleset")?,
                computed: relation_of(computed, "computedUserset")?,
            })
        }
        "union" => Ok(Rewrite::Union(children(value, "union")?)),
        "intersection" => Ok(Rewrite::Intersection(children(value, "intersection")?)),
        "difference" => {
            let base = value
                .get("base")
                .ok_or_else(|| bad("`difference` needs a `base`"))?;
            let subtract = value
                .get("subtract")
                .ok_or_else(|| bad("`difference` needs a `subtract`"))?;
            Ok(Rewrite::Difference {
                base: Box::new(rewrite_from_json(base)?),
                subtract: Box::new(rewrite_from_json(subtract)?),
            })
        }
        other => Err(bad(format!("unknown relation definition `{other}`"))),
    }
}

fn restriction_from_json(v: &Value) -> Result<TypeRestriction, RebacError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("a directly related user type must be an object"))?;
    let type_name = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("a directly related user type needs a `type`"))?
        .to_owned();
    if let Some(c) = obj
        .get("condition")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
    {
        return Err(RebacError::ConditionUnsupported {
            position: None,
            message: format!("`{type_name}` carries the condition `{c}`"),
        });
    }
    let relation = obj
        .get("relation")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let wildcard = obj.get("wildcard").is_some_and(|w| !w.is_null());
    match (relation, wildcard) {
        (Some(_), true) => Err(bad(format!(
            "`{type_name}` cannot be both a userset and a wildcard"
        ))),
        (Some(r), false) => Ok(TypeRestriction::Userset {
            type_name,
            relation: r.to_owned(),
        }),
        (None, true) => Ok(TypeRestriction::Wildcard(type_name)),
        (None, false) => Ok(TypeRestriction::Type(type_name)),
    }
}

/// Reads the JSON model into schema version and type definitions (no semantic checks).
pub(crate) fn model_from_json(v: &Value) -> Result<(String, Vec<TypeDefinition>), RebacError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("an authorization model must be a JSON object"))?;
    let schema_version = string_field(obj, "schema_version", "schemaVersion")
        .ok_or_else(|| bad("the model has no `schema_version`"))?;
    if field(obj, "conditions", "conditions")
        .is_some_and(|c| c.as_object().is_none_or(|c| !c.is_empty()))
    {
        return Err(RebacError::ConditionUnsupported {
            position: None,
            message: "the model defines `conditions`".into(),
        });
    }
    let empty = Vec::new();
    let defs = match field(obj, "type_definitions", "typeDefinitions") {
        Some(d) => d
            .as_array()
            .ok_or_else(|| bad("`type_definitions` must be a list"))?,
        None => &empty,
    };
    let mut types = Vec::with_capacity(defs.len());
    for d in defs {
        let d = d
            .as_object()
            .ok_or_else(|| bad("a type definition must be an object"))?;
        let name = d
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a type definition needs a `type`"))?
            .to_owned();
        let metadata = d
            .get("metadata")
            .and_then(|m| m.get("relations"))
            .and_then(Value::as_object);
        let mut relations = Vec::new();
        if let Some(rels) = field(d, "relations", "relations") {
            let rels = rels
                .as_object()
                .ok_or_else(|| bad(format!("`relations` of `{name}` must be an object")))?;
            for (rname, rw) in rels {
                let rewrite = rewrite_from_json(rw)
                    .map_err(|e| prefix(e, &format!("relation `{name}#{rname}`")))?;
                let mut directly_related = Vec::new();
                let list = metadata
                    .and_then(|m| m.get(rname))
                    .and_then(Value::as_object)
                    .and_then(|meta| {
                        field(
                            meta,
                            "directly_related_user_types",
                            "directlyRelatedUserTypes",
                        )
                    });
                if let Some(list) = list {
                    let list = list.as_array().ok_or_else(|| {
                        bad(format!(
                            "`directly_related_user_types` of `{name}#{rname}` must be a list"
                        ))
                    })?;
                    for item in list {
                        directly_related.push(restriction_from_json(item)?);
                    }
                }
                relations.push(RelationDefinition {
                    name: rname.clone(),
                    rewrite,
                    directly_related_user_types: directly_related,
                    position: None,
                });
            }
        }
        types.push(TypeDefinition {
            name,
            relations,
            position: None,
        });
    }
    Ok((schema_version, types))
}

fn prefix(e: RebacError, what: &str) -> RebacError {
    match e {
        RebacError::InvalidModel { position, message } => RebacError::InvalidModel {
            position,
            message: format!("{what}: {message}"),
        },
        other => other,
    }
}
