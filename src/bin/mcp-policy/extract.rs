//! Finding mcp-policy configurations in a file: a policy JSON, an Envoy configuration (YAML or JSON) with
//! HTTP Wasm filters, or Istio `WasmPlugin` / `TrafficExtension` manifests, one or many YAML documents.

use serde::Deserialize;
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

/// The `@type` of an Envoy HTTP Wasm filter configuration (listener filter chains, ECDS, per-route
/// `typed_per_filter_config`, Istio `EnvoyFilter` patches: wherever it appears).
pub const WASM_TYPE: &str = "envoy.extensions.filters.http.wasm.v3.Wasm";
/// The only `configuration` type mcp-policy reads its policy from.
pub const STRING_VALUE_TYPE: &str = "google.protobuf.StringValue";

/// One configuration found in a file.
#[derive(Debug)]
pub struct Found {
    /// Where in the file, e.g. `document 2: spec.pluginConfig`; empty for a policy file.
    pub location: String,
    /// The policy JSON to validate, or why none could be read at that place (with the fix).
    pub policy: Result<Vec<u8>, String>,
    /// What runs the policy, which decides the `hold_headers` it needs.
    pub host: Host,
}

/// Where a policy was found: what will run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A policy file on its own: nothing to compare `hold_headers` with.
    PolicyFile,
    /// An Envoy HTTP Wasm filter. `stop_iteration` is its `config.allow_on_headers_stop_iteration` (`None`:
    /// absent, which Envoy reads as false); `field` is the path of that field in the file.
    EnvoyWasm {
        stop_iteration: Option<bool>,
        field: String,
    },
    /// An Istio resource (`WasmPlugin`, `TrafficExtension`): no way to set `allow_on_headers_stop_iteration`.
    /// `config` is the path of the policy (e.g. `spec.pluginConfig`).
    Istio { kind: &'static str, config: String },
}

/// Top-level keys of an Envoy bootstrap: a JSON file with one of these is a bootstrap, not a policy.
const BOOTSTRAP_KEYS: &[&str] = &[
    "static_resources",
    "dynamic_resources",
    "admin",
    "node",
    "layered_runtime",
    "cluster_manager",
    "overload_manager",
    "bootstrap_extensions",
];

/// Everything to check in `bytes`. `name` (the file name) decides JSON or YAML by its extension; other
/// names are sniffed. `Err` when the file cannot be read as either.
pub fn extract(name: &str, bytes: &[u8]) -> Result<Vec<Found>, String> {
    let lower = name.to_ascii_lowercase();
    let yaml_name = lower.ends_with(".yaml") || lower.ends_with(".yml");
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if !yaml_name
        && (lower.ends_with(".json") || first == Some(b'{'))
        && !is_envoy_or_k8s_json(bytes)
    {
        // A policy file: validated byte for byte as the filter would read it.
        return Ok(vec![Found {
            location: String::new(),
            policy: Ok(bytes.to_vec()),
            host: Host::PolicyFile,
        }]);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 text ({e})"))?;
    from_yaml(text)
}

/// True for a JSON document that is an Envoy bootstrap or a Kubernetes manifest rather than a policy.
fn is_envoy_or_k8s_json(bytes: &[u8]) -> bool {
    match serde_json::from_slice::<Json>(bytes) {
        Ok(Json::Object(top)) => {
            BOOTSTRAP_KEYS.iter().any(|k| top.contains_key(*k))
                || (top.contains_key("apiVersion") && top.contains_key("kind"))
        }
        _ => false,
    }
}

fn from_yaml(text: &str) -> Result<Vec<Found>, String> {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let mut v = Yaml::deserialize(doc).map_err(|e| format!("not valid YAML: {e}"))?;
        v.apply_merge()
            .map_err(|e| format!("not valid YAML: {e}"))?;
        docs.push(v);
    }
    let multi = docs.iter().filter(|d| !d.is_null()).count() > 1;
    let mut found = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let prefix = if multi {
            format!("document {}: ", i + 1)
        } else {
            String::new()
        };
        let mut here = Vec::new();
        walk(doc, &mut String::new(), &mut here);
        found.extend(here.into_iter().map(|f| Found {
            location: format!("{prefix}{}", f.location),
            ..f
        }));
    }
    Ok(found)
}

fn str_at<'v>(v: &'v Yaml, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Yaml::as_str)
}

fn type_is(v: &Yaml, suffix: &str) -> bool {
    // Envoy accepts any prefix before the last '/' (type.googleapis.com/ by convention).
    str_at(v, "@type").is_some_and(|t| t.rsplit('/').next() == Some(suffix))
}

fn is_typed_struct_of_wasm(v: &Yaml) -> bool {
    (type_is(v, "udpa.type.v1.TypedStruct") || type_is(v, "xds.type.v3.TypedStruct"))
        && str_at(v, "type_url").is_some_and(|t| t.rsplit('/').next() == Some(WASM_TYPE))
}

/// The Istio kinds that carry an mcp-policy policy, and where their `pluginConfig` is under `spec`.
const ISTIO_KINDS: &[(&str, &[&str])] = &[
    ("WasmPlugin", &["pluginConfig"]),
    // Istio 1.30+: supersedes WasmPlugin; the Wasm settings are under spec.wasm.
    ("TrafficExtension", &["wasm", "pluginConfig"]),
];

/// The kind and `pluginConfig` path of an Istio extension resource.
fn istio_kind(v: &Yaml) -> Option<(&'static str, &'static [&'static str])> {
    if !str_at(v, "apiVersion").is_some_and(|a| a.starts_with("extensions.istio.io/")) {
        return None;
    }
    let kind = str_at(v, "kind")?;
    ISTIO_KINDS.iter().find(|(k, _)| *k == kind).copied()
}

/// A path segment: `.key` for plain keys, `["key"]` otherwise.
fn push_key(path: &mut String, key: &str) {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    } else {
        path.push('[');
        path.push_str(&Json::String(key.to_owned()).to_string());
        path.push(']');
    }
}

fn walk(v: &Yaml, path: &mut String, out: &mut Vec<Found>) {
    if let Some((kind, config)) = istio_kind(v) {
        out.push(from_istio(v, path, kind, config));
        return;
    }
    if type_is(v, WASM_TYPE) {
        out.push(from_wasm_filter(v, path));
        return;
    }
    if is_typed_struct_of_wasm(v) {
        // {"@type": ".../xds.type.v3.TypedStruct", "type_url": ".../...wasm.v3.Wasm", "value": {config: ...}}, as
        // in many Istio EnvoyFilter examples.
        let wasm = v.get("value").unwrap_or(&Yaml::Null);
        out.push(from_wasm_filter(wasm, &at(path, "value")));
        return;
    }
    let len = path.len();
    match v {
        Yaml::Mapping(m) => {
            for (k, child) in m {
                match k {
                    Yaml::String(s) => push_key(path, s),
                    other => push_key(path, &scalar_text(other)),
                }
                walk(child, path, out);
                path.truncate(len);
            }
        }
        Yaml::Sequence(items) => {
            for (i, child) in items.iter().enumerate() {
                path.push_str(&format!("[{i}]"));
                walk(child, path, out);
                path.truncate(len);
            }
        }
        Yaml::Tagged(t) => walk(&t.value, path, out),
        _ => {}
    }
}

fn at(path: &str, field: &str) -> String {
    let mut p = path.to_owned();
    push_key(&mut p, field);
    p
}

fn from_istio(v: &Yaml, path: &str, kind: &'static str, config: &[&str]) -> Found {
    let name = v
        .get("metadata")
        .and_then(|m| str_at(m, "name"))
        .unwrap_or("(unnamed)");
    let mut field = "spec".to_owned();
    let mut cfg = v.get("spec");
    for k in config {
        push_key(&mut field, k);
        cfg = cfg.and_then(|c| c.get(*k));
    }
    let location = format!("{kind} {name}: {}", at_path(path, &field));
    let policy = match cfg {
        None | Some(Yaml::Null) => Err(format!(
            "no {field}; fix: put the policy under {field}, written as YAML \
             (version: \"1\", hold_headers: false, default: deny, tools: {{...}})"
        )),
        Some(c @ Yaml::Mapping(_)) => yaml_to_json(c, &field).and_then(|j| {
            serde_json::to_vec(&j).map_err(|e| format!("cannot convert {field} to JSON: {e}"))
        }),
        Some(other) => Err(format!(
            "{field} is {}, not a mapping; fix: write the policy's fields under it as YAML keys",
            yaml_kind(other)
        )),
    };
    Found {
        location,
        policy,
        host: Host::Istio {
            kind,
            config: field,
        },
    }
}

/// `field` (a path from the document's root) below `path` (where the resource sits, empty at the top).
fn at_path(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn from_wasm_filter(v: &Yaml, path: &str) -> Found {
    let cfg = v.get("config");
    let name = cfg
        .and_then(|c| str_at(c, "name"))
        .filter(|n| !n.is_empty());
    let where_ = if path.is_empty() {
        "(top level)".to_owned()
    } else {
        path.to_owned()
    };
    let location = match name {
        Some(n) => format!("{where_} (Wasm plugin {n})"),
        None => where_,
    };
    let fix_shape = "fix: set config.configuration to {\"@type\": \"type.googleapis.com/google.protobuf.StringValue\", \
                     \"value\": <the policy JSON as a string>}";
    let policy = match cfg.and_then(|c| c.get("configuration")) {
        None => Err(format!("this Wasm filter has no config.configuration, so mcp-policy would get an empty policy; {fix_shape}")),
        Some(conf) if type_is(conf, STRING_VALUE_TYPE) => match conf.get("value") {
            // proto3: an absent string is empty; the policy parser says what an empty policy means.
            None | Some(Yaml::Null) => Ok(Vec::new()),
            Some(Yaml::String(s)) => Ok(s.as_bytes().to_vec()),
            Some(other) => Err(format!(
                "config.configuration.value is {}, not a string; fix: write the policy JSON as a string, e.g. `value: |` \
                 followed by the JSON on indented lines",
                yaml_kind(other)
            )),
        },
        Some(conf) => {
            let t = str_at(conf, "@type").unwrap_or("(no @type)");
            Err(format!("config.configuration is of type {t}; mcp-policy reads its policy from a {STRING_VALUE_TYPE}; {fix_shape}"))
        }
    };
    let stop_iteration = cfg
        .and_then(|c| c.get("allow_on_headers_stop_iteration"))
        .and_then(bool_of);
    let host = Host::EnvoyWasm {
        stop_iteration,
        field: at(&at(path, "config"), "allow_on_headers_stop_iteration"),
    };
    Found {
        location,
        policy,
        host,
    }
}

/// A boolean field as Envoy reads it (proto3 JSON also takes the strings "true" and "false").
fn bool_of(v: &Yaml) -> Option<bool> {
    match v {
        Yaml::Bool(b) => Some(*b),
        Yaml::String(s) if s == "true" => Some(true),
        Yaml::String(s) if s == "false" => Some(false),
        _ => None,
    }
}

fn yaml_kind(v: &Yaml) -> &'static str {
    match v {
        Yaml::Null => "null",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(_) => "a number",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "a mapping",
        Yaml::Tagged(_) => "a tagged value",
    }
}

fn scalar_text(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => s.clone(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Null => "null".into(),
        other => yaml_kind(other).into(),
    }
}

/// YAML to JSON for a policy written as YAML (Istio's `pluginConfig`). Refuses what JSON cannot say (non-string
/// keys, NaN and infinities, tags) rather than guessing, naming the path.
pub fn yaml_to_json(v: &Yaml, path: &str) -> Result<Json, String> {
    Ok(match v {
        Yaml::Null => Json::Null,
        Yaml::Bool(b) => Json::Bool(*b),
        Yaml::Number(n) => {
            if let Some(u) = n.as_u64() {
                Json::from(u)
            } else if let Some(i) = n.as_i64() {
                Json::from(i)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                match serde_json::Number::from_f64(f) {
                    Some(x) => Json::Number(x),
                    None => {
                        return Err(format!(
                            "{path}: {n} has no JSON equivalent; fix: use a finite number"
                        ))
                    }
                }
            }
        }
        Yaml::String(s) => Json::String(s.clone()),
        Yaml::Sequence(items) => Json::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, x)| yaml_to_json(x, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Mapping(m) => {
            let mut obj = serde_json::Map::new();
            for (k, x) in m {
                let Yaml::String(key) = k else {
                    return Err(format!(
                        "{path}: the key {} is {}, not a string; fix: quote it (\"{}\")",
                        scalar_text(k),
                        yaml_kind(k),
                        scalar_text(k)
                    ));
                };
                let mut p = path.to_owned();
                push_key(&mut p, key);
                obj.insert(key.clone(), yaml_to_json(x, &p)?);
            }
            Json::Object(obj)
        }
        Yaml::Tagged(t) => {
            return Err(format!(
                "{path}: YAML tag {} is not supported here; fix: remove the tag",
                t.tag
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(name: &str, text: &str) -> Vec<(String, Result<String, String>)> {
        extract(name, text.as_bytes())
            .unwrap()
            .into_iter()
            .map(|f| (f.location, f.policy.map(|b| String::from_utf8(b).unwrap())))
            .collect()
    }

    #[test]
    fn a_json_file_is_the_policy_verbatim() {
        let text = "{\"version\":\"1\", \"version\":\"1\"}";
        assert_eq!(
            policies("p.json", text),
            vec![(String::new(), Ok(text.to_owned()))]
        );
        // Sniffed when the name says nothing.
        assert_eq!(policies("policy", text).len(), 1);
    }

    #[test]
    fn a_json_bootstrap_is_searched() {
        let text = r#"{"static_resources": {"x": [{"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {"configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": "{}"}}}]}}"#;
        let found = policies("envoy.json", text);
        assert_eq!(
            found,
            vec![("static_resources.x[0]".to_owned(), Ok("{}".to_owned()))]
        );
    }

    #[test]
    fn wasm_filters_at_any_depth() {
        let text = r#"
a:
  - typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
      config:
        name: one
        configuration:
          "@type": type.googleapis.com/google.protobuf.StringValue
          value: '{"version":"1"}'
routes:
  - typed_per_filter_config:
      envoy.filters.http.wasm:
        "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
        config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
          config: {}
"#;
        let found = policies("e.yaml", text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            found[0],
            (
                "a[0].typed_config (Wasm plugin one)".to_owned(),
                Ok(r#"{"version":"1"}"#.to_owned())
            )
        );
        assert_eq!(
            found[1].0,
            r#"routes[0].typed_per_filter_config["envoy.filters.http.wasm"].config"#
        );
        assert!(found[1]
            .1
            .as_ref()
            .unwrap_err()
            .contains("no config.configuration"));
    }

    #[test]
    fn typed_struct_wrapped_wasm_in_an_istio_envoyfilter() {
        let text = r#"
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: mcp-policy}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.wasm
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
          value:
            config:
              configuration:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: '{"version":"1"}'
"#;
        let found = policies("ef.yaml", text);
        assert_eq!(
            found,
            vec![(
                "spec.configPatches[0].patch.value.typed_config.value".to_owned(),
                Ok(r#"{"version":"1"}"#.to_owned())
            )]
        );
    }

    #[test]
    fn other_configuration_types_are_refused() {
        let text = r#"
"@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
config:
  configuration:
    "@type": type.googleapis.com/google.protobuf.BytesValue
    value: e30=
"#;
        let found = policies("e.yaml", text);
        assert!(
            found[0].1.as_ref().unwrap_err().contains("BytesValue"),
            "{found:?}"
        );
        let text = "\"@type\": x/envoy.extensions.filters.http.wasm.v3.Wasm\nconfig:\n  configuration:\n    \"@type\": x/google.protobuf.StringValue\n    value: {a: 1}\n";
        assert!(policies("e.yaml", text)[0]
            .1
            .as_ref()
            .unwrap_err()
            .contains("not a string"));
    }

    #[test]
    fn wasm_plugins_in_multi_document_manifests() {
        let text = r#"
apiVersion: v1
kind: Service
metadata: {name: s}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: mcp-policy}
spec:
  url: oci://example/mcp-policy:1
  pluginConfig:
    version: "1"
    default: deny
    tools:
      get_run: {}
      "delete_*": {action: deny, reason: no}
      search_runs:
        conditions: [{path: args.max_results, op: lte, value: 100}]
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: empty}
spec: {}
"#;
        let found = policies("istio.yaml", text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            found[0].0,
            "document 2: WasmPlugin mcp-policy: spec.pluginConfig"
        );
        let policy: Json = serde_json::from_str(found[0].1.as_ref().unwrap()).unwrap();
        assert_eq!(
            policy["tools"]["search_runs"]["conditions"][0]["value"],
            100
        );
        assert_eq!(policy["version"], "1");
        assert!(found[1]
            .1
            .as_ref()
            .unwrap_err()
            .contains("no spec.pluginConfig"));
    }

    #[test]
    fn yaml_that_json_cannot_say() {
        let bad = |doc: &str| {
            let v: Yaml = serde_yaml_ng::from_str(doc).unwrap();
            yaml_to_json(&v, "spec.pluginConfig").unwrap_err()
        };
        assert!(bad("tools: {1: {}}").contains("spec.pluginConfig.tools: the key 1 is a number"));
        assert!(bad("max: .nan").contains("finite"));
        assert!(bad("x: !custom 1").contains("tag"));
    }

    #[test]
    fn yaml_errors() {
        assert!(extract("a.yaml", b"a: [")
            .unwrap_err()
            .contains("not valid YAML"));
        assert!(extract("a.yaml", b"a: 1\na: 2\n")
            .unwrap_err()
            .contains("duplicate"));
        assert!(extract("a.yaml", b"\xff").unwrap_err().contains("UTF-8"));
        assert!(policies("a.yaml", "just: text\n").is_empty());
    }
}
