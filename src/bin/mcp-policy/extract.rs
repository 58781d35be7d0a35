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
    /// Where in the file: `listener "mcp" > filter "envoy.filters.http.wasm" (Wasm plugin mcp_policy)` (the
    /// names that hold a Wasm filter, or its path when names are missing or shared),
    /// `document 2: WasmPlugin mcp-policy: spec.pluginConfig`; empty for a policy file.
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
        let mut spots = Vec::new();
        let mut names = Vec::new();
        if let Some(resource) = k8s_resource(doc) {
            names.push(Name {
                end: 0,
                label: resource,
                filter: None,
            });
        }
        walk(doc, "", &mut String::new(), &mut names, &mut spots);
        found.extend(locate(spots).into_iter().map(|f| Found {
            location: format!("{prefix}{}", f.location),
            ..f
        }));
    }
    Ok(found)
}

/// A configuration found in one document, before its location is chosen.
struct Spot {
    /// `location` is the path from the document's root (always unambiguous), or the Istio resource.
    found: Found,
    /// Where it is by the names of what holds it (`listener "mcp" > filter "mcp_policy"`), when some are known.
    named: Option<String>,
}

/// The location of each spot: its names, unless it has none or another spot of the document has the same
/// (then the path).
fn locate(spots: Vec<Spot>) -> Vec<Found> {
    let shared = |n: &str| {
        spots
            .iter()
            .filter(|s| s.named.as_deref() == Some(n))
            .count()
            > 1
    };
    let chosen: Vec<Option<String>> = spots
        .iter()
        .map(|s| s.named.clone().filter(|n| !shared(n)))
        .collect();
    spots
        .into_iter()
        .zip(chosen)
        .map(|(s, named)| match named {
            Some(location) => Found {
                location,
                ..s.found
            },
            None => s.found,
        })
        .collect()
}

/// A named thing on the way to a Wasm filter: a listener, filter chain, virtual host, route, the HTTP filter
/// itself or a per-route config.
struct Name {
    /// The length of the path up to and including the named node.
    end: usize,
    label: String,
    /// For the HTTP filter (or per-route config) holding the Wasm filter: its name.
    filter: Option<String>,
}

/// `Kind name` for a Kubernetes resource (e.g. an Istio EnvoyFilter).
fn k8s_resource(doc: &Yaml) -> Option<String> {
    let kind = str_at(doc, "kind")?;
    let name = doc.get("metadata").and_then(|m| str_at(m, "name"))?;
    str_at(doc, "apiVersion")?;
    Some(format!("{kind} {name}"))
}

fn quote(s: &str) -> String {
    Json::String(s.to_owned()).to_string()
}

/// Lists whose items are named on the way to a filter: (the list's key, what an item is, whether an unnamed
/// item is shown by its index even when it is the list's only one).
const NAMED_LISTS: &[(&str, &str, bool)] = &[
    ("listeners", "listener", true),
    ("filter_chains", "filter chain", false),
    ("virtual_hosts", "virtual host", false),
    ("routes", "route", false),
];

/// The name of `child`, entered from `parent` (which sits under `key`) by `segment` (a map key, or `[i]`).
fn name_of(
    parent: &Yaml,
    key: &str,
    segment: &str,
    child: &Yaml,
) -> Option<(String, Option<String>)> {
    let own = str_at(child, "name").filter(|n| !n.is_empty());
    // An HTTP filter (or ECDS extension config) whose typed_config is the Wasm filter.
    if let (Some(n), Some(tc)) = (own, child.get("typed_config")) {
        if type_is(tc, WASM_TYPE) || is_typed_struct_of_wasm(tc) {
            return Some((format!("filter {}", quote(n)), Some(n.to_owned())));
        }
    }
    if key == "typed_per_filter_config" && parent.is_mapping() {
        return Some((
            format!("per-route config {}", quote(segment)),
            Some(segment.to_owned()),
        ));
    }
    let Yaml::Sequence(items) = parent else {
        return None;
    };
    let listener = type_is(child, "envoy.config.listener.v3.Listener");
    let (what, always) = NAMED_LISTS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, what, always)| (*what, *always))
        .or(listener.then_some(("listener", true)))?;
    match own {
        Some(n) => Some((format!("{what} {}", quote(n)), None)),
        None if always || items.len() > 1 => Some((format!("{key}{segment}"), None)),
        None => None,
    }
}

/// What may lie between a named filter and the Wasm filter in it: its `typed_config` (a TypedStruct's
/// `value`), a per-route FilterConfig's `config`.
const WRAPPERS: &[&str] = &[
    "",
    ".typed_config",
    ".typed_config.value",
    ".config",
    ".config.value",
];

/// Where the Wasm filter at `path` is, by the names on the way: `listener "mcp" > filter "mcp_policy"`, then
/// the rest of the path when it is not right in a named filter, and the Wasm plugin's name when it differs
/// from the filter's.
fn named_location(path: &str, names: &[Name], plugin: Option<&str>) -> Option<String> {
    let last = names.last()?;
    let mut label = names
        .iter()
        .map(|n| n.label.as_str())
        .collect::<Vec<_>>()
        .join(" > ");
    let tail = path.get(last.end..).unwrap_or_default();
    let in_filter = last.filter.is_some() && WRAPPERS.contains(&tail);
    if !in_filter && !tail.is_empty() {
        label.push_str(" > ");
        label.push_str(tail.trim_start_matches('.'));
    }
    if let Some(p) = plugin.filter(|p| !in_filter || last.filter.as_deref() != Some(*p)) {
        label.push_str(&format!(" (Wasm plugin {p})"));
    }
    Some(label)
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

/// Walks `v` (which sits under `key` in its parent, "" for list items and the root) for configurations.
/// `names` are the named things on the way (see [`name_of`]).
fn walk(v: &Yaml, key: &str, path: &mut String, names: &mut Vec<Name>, out: &mut Vec<Spot>) {
    if let Some((kind, config)) = istio_kind(v) {
        out.push(Spot {
            found: from_istio(v, path, kind, config),
            named: None,
        });
        return;
    }
    let wasm = if type_is(v, WASM_TYPE) {
        Some((v, path.clone()))
    } else if is_typed_struct_of_wasm(v) {
        // {"@type": ".../xds.type.v3.TypedStruct", "type_url": ".../...wasm.v3.Wasm", "value": {config: ...}}, as
        // in many Istio EnvoyFilter examples.
        Some((v.get("value").unwrap_or(&Yaml::Null), at(path, "value")))
    } else {
        None
    };
    if let Some((wasm, path)) = wasm {
        let plugin = plugin_name(wasm);
        out.push(Spot {
            named: named_location(&path, names, plugin),
            found: from_wasm_filter(wasm, &path),
        });
        return;
    }
    let (len, depth) = (path.len(), names.len());
    let mut enter =
        |segment: &str, child: &Yaml, k: &str, path: &mut String, names: &mut Vec<Name>| {
            if let Some((label, filter)) = name_of(v, key, segment, child) {
                names.push(Name {
                    end: path.len(),
                    label,
                    filter,
                });
            }
            walk(child, k, path, names, out);
            path.truncate(len);
            names.truncate(depth);
        };
    match v {
        Yaml::Mapping(m) => {
            for (k, child) in m {
                let k = match k {
                    Yaml::String(s) => s.clone(),
                    other => scalar_text(other),
                };
                push_key(path, &k);
                enter(&k, child, &k, path, names);
            }
        }
        Yaml::Sequence(items) => {
            for (i, child) in items.iter().enumerate() {
                let segment = format!("[{i}]");
                path.push_str(&segment);
                enter(&segment, child, "", path, names);
            }
        }
        Yaml::Tagged(t) => walk(&t.value, key, path, names, out),
        _ => {}
    }
}

/// The Wasm plugin's `config.name`, when it has one.
fn plugin_name(wasm: &Yaml) -> Option<&str> {
    wasm.get("config")
        .and_then(|c| str_at(c, "name"))
        .filter(|n| !n.is_empty())
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
    let name = plugin_name(v);
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
        assert_eq!(found[1].0, r#"per-route config "envoy.filters.http.wasm""#);
        assert!(found[1]
            .1
            .as_ref()
            .unwrap_err()
            .contains("no config.configuration"));
    }

    /// A Wasm filter's typed_config, its plugin named `plugin`.
    fn wasm(plugin: &str) -> String {
        format!(
            r#"{{"@type": "type.googleapis.com/{WASM_TYPE}", "config": {{"name": "{plugin}",
                "configuration": {{"@type": "type.googleapis.com/{STRING_VALUE_TYPE}", "value": "{{}}"}}}}}}"#
        )
    }

    /// An HTTP filter named `filter` whose Wasm plugin is named `plugin`.
    fn http_filter(filter: &str, plugin: &str) -> String {
        format!(
            r#"{{"name": "{filter}", "typed_config": {}}}"#,
            wasm(plugin)
        )
    }

    fn locations(name: &str, text: &str) -> Vec<String> {
        policies(name, text).into_iter().map(|(l, _)| l).collect()
    }

    #[test]
    fn wasm_filters_are_located_by_the_names_that_hold_them() {
        let hcm = |filters: &[String]| {
            format!(
                r#"{{"name": "envoy.filters.network.http_connection_manager", "typed_config": {{"http_filters": [{}]}}}}"#,
                filters.join(", ")
            )
        };
        let one = hcm(&[http_filter("envoy.filters.http.wasm", "mcp_policy")]);
        // A bootstrap: the listener, then the HTTP filter, then the plugin when its name is another.
        let text = format!(
            r#"{{"static_resources": {{"listeners": [{{"name": "mcp", "filter_chains": [{{"filters": [{one}]}}]}}]}}}}"#
        );
        assert_eq!(
            locations("envoy.json", &text),
            [r#"listener "mcp" > filter "envoy.filters.http.wasm" (Wasm plugin mcp_policy)"#]
        );
        // Two filters in one chain, named like their plugins; an unnamed listener by its index.
        let two = hcm(&[http_filter("a", "a"), http_filter("b", "b")]);
        let text = format!(
            r#"{{"static_resources": {{"listeners": [{{"filter_chains": [{{"filters": [{two}]}}]}}]}}}}"#
        );
        assert_eq!(
            locations("envoy.json", &text),
            [
                r#"listeners[0] > filter "a""#,
                r#"listeners[0] > filter "b""#
            ]
        );
        // Several filter chains: named, or by index when unnamed.
        let text = format!(
            r#"{{"static_resources": {{"listeners": [{{"name": "l", "filter_chains": [{{"name": "tls", "filters": [{one}]}}, {{"filters": [{one}]}}]}}]}}}}"#
        );
        assert_eq!(
            locations("envoy.json", &text),
            [
                r#"listener "l" > filter chain "tls" > filter "envoy.filters.http.wasm" (Wasm plugin mcp_policy)"#,
                r#"listener "l" > filter_chains[1] > filter "envoy.filters.http.wasm" (Wasm plugin mcp_policy)"#
            ]
        );
        // Names that do not tell them apart: the paths.
        let text = format!(
            r#"{{"static_resources": {{"listeners": [{{"name": "l", "filter_chains": [{{"filters": [{}]}}]}}]}}}}"#,
            hcm(&[http_filter("w", "p"), http_filter("w", "p")])
        );
        let base =
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters";
        assert_eq!(
            locations("envoy.json", &text),
            [
                format!("{base}[0].typed_config (Wasm plugin p)"),
                format!("{base}[1].typed_config (Wasm plugin p)")
            ]
        );
        // LDS and ECDS resources.
        let text = format!(
            r#"{{"resources": [{{"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "mcp", "filter_chains": [{{"filters": [{one}]}}]}}]}}"#
        );
        // (A JSON file named *.json is a policy unless it has a bootstrap's keys: LDS files are YAML here.)
        assert_eq!(
            locations("lds.yaml", &text),
            [r#"listener "mcp" > filter "envoy.filters.http.wasm" (Wasm plugin mcp_policy)"#]
        );
        let text = format!(
            r#"{{"resources": [{{"@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                "name": "mcp-policy", "typed_config": {}}}]}}"#,
            wasm("mcp_policy")
        );
        assert_eq!(
            locations("ecds.yaml", &text),
            [r#"filter "mcp-policy" (Wasm plugin mcp_policy)"#]
        );
        // Per-route configs, in a virtual host; somewhere unnamed in a listener: the rest of the path.
        let per_route = format!(
            r#"{{"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}}}"#,
            wasm("mcp_policy")
        );
        let text = format!(
            r#"{{"static_resources": {{"listeners": [{{"name": "mcp", "filter_chains": [{{"filters": [{{"name": "hcm", "typed_config": {{"route_config": {{"virtual_hosts": [{{"name": "vh", "routes": [{{"typed_per_filter_config": {{"envoy.filters.http.wasm": {per_route}}}}}]}}]}}}}}}]}}], "per_filter": {per_route}}}]}}}}"#
        );
        assert_eq!(
            locations("envoy.json", &text),
            [
                r#"listener "mcp" > virtual host "vh" > per-route config "envoy.filters.http.wasm" (Wasm plugin mcp_policy)"#,
                r#"listener "mcp" > per_filter.config (Wasm plugin mcp_policy)"#
            ]
        );
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
                r#"EnvoyFilter mcp-policy > filter "envoy.filters.http.wasm""#.to_owned(),
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
