//! JSON Schema → Gemini `Schema` (tool parameters and `responseSchema`).

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// The keys of Gemini's `Schema` (a subset of OpenAPI 3.0). Everything else
/// (`additionalProperties`, `$schema`, `strict`, `const`, `examples`...) is refused by Gemini
/// with "Unknown name", so it is dropped.
const SCHEMA_KEYS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
];

/// A JSON Schema as a Gemini `Schema`: local `$ref`s inlined, `type: [t, "null"]` as `nullable`,
/// `const` as a one-value `enum`, enum values as strings (Gemini's enums are strings), unknown
/// keys dropped.
pub(crate) fn schema(s: &Value, param: &str) -> Result<Value> {
    let defs = s
        .get("$defs")
        .or_else(|| s.get("definitions"))
        .cloned()
        .unwrap_or(Value::Null);
    clean(s, &defs, param, 0)
}

fn clean(s: &Value, defs: &Value, param: &str, depth: usize) -> Result<Value> {
    // Deep enough for any real schema; a recursive `$ref` would otherwise never end.
    if depth > 32 {
        return Err(Error::invalid_param(
            param,
            "the schema is too deep (or recursive) for Gemini",
        ));
    }
    let Some(o) = s.as_object() else {
        return Ok(s.clone());
    };
    if let Some(r) = o.get("$ref").and_then(Value::as_str) {
        let name = r
            .strip_prefix("#/$defs/")
            .or_else(|| r.strip_prefix("#/definitions/"));
        let Some(target) = name.and_then(|n| defs.get(n)) else {
            return Err(Error::invalid_param(
                param,
                format!("schema reference '{r}' cannot be resolved for Gemini"),
            ));
        };
        return clean(target, defs, param, depth + 1);
    }
    let mut out = Map::new();
    for (k, v) in o {
        match k.as_str() {
            "type" => match v {
                Value::Array(types) => {
                    let real: Vec<&Value> = types
                        .iter()
                        .filter(|t| t.as_str() != Some("null"))
                        .collect();
                    if real.len() < types.len() {
                        out.insert("nullable".into(), true.into());
                    }
                    if let Some(t) = real.first() {
                        out.insert("type".into(), (*t).clone());
                    }
                }
                _ => {
                    out.insert(k.clone(), v.clone());
                }
            },
            "properties" => {
                let mut props = Map::new();
                for (pk, pv) in v.as_object().into_iter().flatten() {
                    props.insert(pk.clone(), clean(pv, defs, param, depth + 1)?);
                }
                out.insert(k.clone(), Value::Object(props));
            }
            "items" => {
                out.insert(k.clone(), clean(v, defs, param, depth + 1)?);
            }
            "anyOf" | "oneOf" => {
                let mut alts = Vec::new();
                for a in v.as_array().into_iter().flatten() {
                    // `{"type": "null"}` alternatives are Gemini's `nullable`.
                    if a.get("type").and_then(Value::as_str) == Some("null") {
                        out.insert("nullable".into(), true.into());
                    } else {
                        alts.push(clean(a, defs, param, depth + 1)?);
                    }
                }
                match alts.len() {
                    0 => {}
                    1 => {
                        if let Some(Value::Object(one)) = alts.pop() {
                            for (ak, av) in one {
                                out.entry(ak).or_insert(av);
                            }
                        }
                    }
                    _ => {
                        out.insert("anyOf".into(), Value::Array(alts));
                    }
                }
            }
            "enum" => {
                let vals = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| !e.is_null())
                    .map(|e| match e {
                        Value::String(s) => Value::String(s.clone()),
                        other => Value::String(other.to_string()),
                    })
                    .collect();
                out.insert(k.clone(), Value::Array(vals));
            }
            "const" => {
                let c = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.insert("enum".into(), json!([c]));
            }
            _ if SCHEMA_KEYS.contains(&k.as_str()) => {
                out.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
    if out.contains_key("enum") && !out.contains_key("type") {
        out.insert("type".into(), "string".into());
    }
    Ok(Value::Object(out))
}
