//! The Istio outputs of `render`: a WasmPlugin or a TrafficExtension, from envoy/istio/wasmplugin.yaml or
//! trafficextension.yaml (built into the binary and patched as a value), with the policy as `pluginConfig`.
//!
//! The policy is written as JSON in the manifest (YAML reads JSON as it is): every string is double-quoted, so
//! no YAML 1.1 reader (kubectl, Istio) takes a reason "no" for false or a value 12:30 for a number, and it reads
//! as the policy file does. Istio turns `pluginConfig` into a protobuf Struct and hands it to the filter as a
//! JSON string; a Struct holds numbers as doubles, so integers beyond 2^53 are refused rather than rounded.

use super::yaml::{at, child, map, n, quote_for_yaml_1_1, s, set_after, text, Comments, Step};
use serde_yaml_ng::{Mapping, Value as Yaml};

const WASMPLUGIN: &str = include_str!("../../../../envoy/istio/wasmplugin.yaml");
const TRAFFICEXTENSION: &str = include_str!("../../../../envoy/istio/trafficextension.yaml");

/// Which Istio resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    WasmPlugin,
    TrafficExtension,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::WasmPlugin => "WasmPlugin",
            Kind::TrafficExtension => "TrafficExtension",
        }
    }

    pub fn template_name(self) -> &'static str {
        match self {
            Kind::WasmPlugin => "envoy/istio/wasmplugin.yaml",
            Kind::TrafficExtension => "envoy/istio/trafficextension.yaml",
        }
    }

    fn template(self) -> &'static str {
        match self {
            Kind::WasmPlugin => WASMPLUGIN,
            Kind::TrafficExtension => TRAFFICEXTENSION,
        }
    }

    /// The Istio release that reads the manifest (docs/istio.md).
    pub fn istio(self) -> &'static str {
        match self {
            Kind::WasmPlugin => "1.20",
            Kind::TrafficExtension => "1.30",
        }
    }

    /// Where the Wasm settings (url, sha256, pluginConfig) are.
    fn wasm(self) -> &'static [Step<'static>] {
        match self {
            Kind::WasmPlugin => &[Step::Key("spec")],
            Kind::TrafficExtension => &[Step::Key("spec"), Step::Key("wasm")],
        }
    }
}

/// What `render` is told about the workload; `None` or empty: as in the template.
#[derive(Debug, Default)]
pub struct Settings<'a> {
    pub name: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub selector: &'a [(String, String)],
    /// Attach to this Service (its waypoint, in ambient mode) with targetRefs instead of a selector.
    pub service: Option<&'a str>,
    pub port: Option<u16>,
    pub image: Option<&'a str>,
    pub sha256: Option<&'a str>,
}

/// A rendered manifest.
pub struct Manifest {
    pub text: String,
    /// The policy Istio hands the filter (as JSON), for the check of what was written.
    pub policy: serde_json::Value,
    pub notes: Vec<String>,
}

/// The scalar standing for the policy until it is written as JSON text (a plain YAML scalar).
const SLOT: &str = "MCP_POLICY_PLUGIN_CONFIG_SLOT";
/// The largest integer a double holds exactly.
const EXACT: u64 = 1 << 53;

/// The manifest for `policy_json` (the policy file's bytes), with `header` (comment lines) on top.
pub fn manifest(
    kind: Kind,
    policy_json: &[u8],
    set: &Settings,
    header: Vec<String>,
) -> Result<Manifest, String> {
    let t = kind.template_name();
    let mut doc: Yaml = serde_yaml_ng::from_str(kind.template())
        .map_err(|e| format!("{t} (built in) is not valid YAML: {e}"))?;
    let mut comments = Comments::of(kind.template());
    comments.header = header;
    let mut notes = Vec::new();

    // The policy, in its own order (serde_json's maps would sort it); hold_headers false, which Istio needs.
    let mut policy: Yaml =
        serde_json::from_slice(policy_json).map_err(|e| format!("the policy is not JSON: {e}"))?;
    exact_numbers(&policy, "")?;
    match policy.get("hold_headers") {
        Some(Yaml::Bool(true)) => {
            return Err(format!(
                "hold_headers: true cannot run in an Istio {}, which cannot set the Envoy Wasm filter's \
                 allow_on_headers_stop_iteration: every request with a body would hang; fix: remove \"hold_headers\" \
                 from the policy (render then writes hold_headers: false for Istio) or set it to false",
                kind.name()
            ))
        }
        Some(_) => {}
        None => {
            set_after(&mut policy, "version", "hold_headers", Yaml::Bool(false));
            notes.push(format!(
                "hold_headers: false added to the policy: an Istio {} cannot set the Envoy flag that held headers \
                 need. The filter still holds each body until it is decided; lost are the x-mcp-* headers it \
                 exports and the exact Content-Length of filtered tools/list answers (docs/istio.md)",
                kind.name()
            ));
        }
    }
    let expected = crate::extract::yaml_to_json(&policy, "pluginConfig")?;

    // metadata
    if let Some(name) = set.name {
        let (v, _) = at(&mut doc, &[Step::Key("metadata"), Step::Key("name")], t)?;
        *v = s(name);
    }
    if let Some(ns) = set.namespace {
        let (v, _) = at(
            &mut doc,
            &[Step::Key("metadata"), Step::Key("namespace")],
            t,
        )?;
        *v = s(ns);
    }

    // What the plugin attaches to.
    let (spec, spec_path) = at(&mut doc, &[Step::Key("spec")], t)?;
    if let Some(service) = set.service {
        let refs = Yaml::Sequence(vec![map([
            ("kind", s("Service")),
            ("group", s("")),
            ("name", s(service)),
        ])]);
        set_after(spec, "selector", "targetRefs", refs);
        if let Yaml::Mapping(m) = spec {
            m.shift_remove("selector");
        }
        let selector = child(&spec_path, "selector");
        comments.drop_at(&selector, |_| true);
        comments.say(
            &child(&spec_path, "targetRefs"),
            &format!(
                "The MCP server's Service: its waypoint runs the filter (ambient mode{}).",
                if kind == Kind::WasmPlugin {
                    "; Istio 1.22 or later"
                } else {
                    ""
                }
            ),
        );
    } else if !set.selector.is_empty() {
        let mut labels = Mapping::new();
        for (k, v) in set.selector {
            labels.insert(s(k), s(v));
        }
        let (m, _) = at(spec, &[Step::Key("selector"), Step::Key("matchLabels")], t)?;
        *m = Yaml::Mapping(labels);
    }
    if let Some(port) = set.port {
        let (p, _) = at(
            spec,
            &[
                Step::Key("match"),
                Step::Item(0),
                Step::Key("ports"),
                Step::Item(0),
                Step::Key("number"),
            ],
            t,
        )?;
        *p = n(port.into());
    }

    // The image and the policy.
    let (wasm, wasm_path) = at(&mut doc, kind.wasm(), t)?;
    if let Some(image) = set.image {
        let (u, _) = at(wasm, &[Step::Key("url")], t)?;
        *u = s(image);
        comments.drop_at(&child(&wasm_path, "url"), |_| true);
    } else {
        let url = wasm.get("url").and_then(Yaml::as_str).unwrap_or_default();
        notes.push(format!(
            "url is {t}'s placeholder ({url}): build and push the image (make oci), then render with --image oci://REGISTRY/mcp-policy:TAG"
        ));
    }
    match set.sha256 {
        Some(hex) => {
            set_after(wasm, "url", "sha256", s(hex));
            comments.drop_at(&child(&wasm_path, "imagePullPolicy"), |l| l.starts_with("# sha256:"));
        }
        None => notes.push(
            "the image is not pinned: render with --sha256 DIGEST (the digest of the image Istio resolves: docs/istio.md, \"The image\"), so that a re-tagged image is never loaded".into(),
        ),
    }
    let (config, config_path) = at(wasm, &[Step::Key("pluginConfig")], t)?;
    *config = s(SLOT);
    let config_path = format!("{wasm_path}.{config_path}");
    comments.drop_at(&config_path, |_| true);
    comments.say(
        &config_path,
        "The policy (POLICY.md), written as JSON, which YAML reads as it is. Istio hands it to the filter as a JSON string.",
    );
    comments.fold_into(&config_path);

    if let Some(a) = expected
        .get("approval")
        .and_then(|a| a.get("cluster"))
        .and_then(|c| c.as_str())
    {
        notes.push(format!(
            "approval.cluster {a:?} must name a cluster the sidecar has: under Istio, a Service's is \
             outbound|PORT||HOST, e.g. outbound|8002||approvals.mcp.svc.cluster.local"
        ));
    }

    let body = quote_for_yaml_1_1(&text(&doc)?);
    let (with_comments, _) = comments.apply(&body);
    let text = splice(&with_comments, &policy)?;
    Ok(Manifest {
        text,
        policy: expected,
        notes,
    })
}

/// Replaces the slot's line (`  pluginConfig: SLOT`) with the policy as JSON text, indented under it.
fn splice(text: &str, policy: &Yaml) -> Result<String, String> {
    let mut out = String::with_capacity(text.len() + 1024);
    let mut done = false;
    for line in text.lines() {
        match line.strip_suffix(&format!(": {SLOT}")) {
            Some(key) if !done => {
                let indent = key.len() - key.trim_start_matches(' ').len();
                out.push_str(key);
                out.push_str(": ");
                flow(policy, 0, &" ".repeat(indent + 2), &mut out)?;
                out.push('\n');
                done = true;
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if !done {
        return Err(
            "the policy's place in the manifest was not found (a bug in render: please report it)"
                .into(),
        );
    }
    Ok(out)
}

/// The policy as JSON text: the top level and its sections one entry a line, deeper values on one line each.
fn flow(v: &Yaml, depth: usize, pad: &str, out: &mut String) -> Result<(), String> {
    let inner = format!("{pad}  ");
    match v {
        Yaml::Mapping(m) if depth < 2 && !m.is_empty() => {
            out.push_str("{\n");
            for (i, (k, x)) in m.iter().enumerate() {
                out.push_str(&inner);
                compact(k, out)?;
                out.push_str(": ");
                flow(x, depth + 1, &inner, out)?;
                out.push_str(if i + 1 < m.len() { ",\n" } else { "\n" });
            }
            out.push_str(pad);
            out.push('}');
        }
        Yaml::Sequence(items) if depth < 2 && !items.is_empty() => {
            out.push_str("[\n");
            for (i, x) in items.iter().enumerate() {
                out.push_str(&inner);
                flow(x, depth + 1, &inner, out)?;
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(pad);
            out.push(']');
        }
        other => compact(other, out)?,
    }
    Ok(())
}

/// One JSON value on one line, `{"a": 1, "b": [2, 3]}`.
fn compact(v: &Yaml, out: &mut String) -> Result<(), String> {
    let json = |e: serde_json::Error| format!("cannot write the policy as JSON: {e}");
    match v {
        Yaml::Null => out.push_str("null"),
        Yaml::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Yaml::Number(x) => {
            let num = if let Some(u) = x.as_u64() {
                serde_json::Number::from(u)
            } else if let Some(i) = x.as_i64() {
                serde_json::Number::from(i)
            } else {
                x.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .ok_or_else(|| format!("{x} has no JSON equivalent"))?
            };
            out.push_str(&num.to_string());
        }
        Yaml::String(t) => out.push_str(&serde_json::to_string(t).map_err(json)?),
        Yaml::Sequence(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                compact(x, out)?;
            }
            out.push(']');
        }
        Yaml::Mapping(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                compact(k, out)?;
                out.push_str(": ");
                compact(x, out)?;
            }
            out.push('}');
        }
        Yaml::Tagged(_) => return Err("a YAML tag in the policy".into()),
    }
    Ok(())
}

/// Refuses integers a double cannot hold exactly (Istio's Struct would change them), naming where.
fn exact_numbers(v: &Yaml, path: &str) -> Result<(), String> {
    match v {
        Yaml::Number(x) => {
            let big = x.as_u64().is_some_and(|u| u > EXACT)
                || x.as_i64().is_some_and(|i| i < -(EXACT as i64));
            if big {
                let at = if path.is_empty() { "the policy" } else { path };
                return Err(format!(
                    "{at}: {x} cannot pass through Istio's pluginConfig unchanged (a protobuf Struct holds numbers as \
                     doubles, exact up to 2^53); fix: use a number of at most 9007199254740992, or render --format envoy"
                ));
            }
        }
        Yaml::Sequence(items) => {
            for (i, x) in items.iter().enumerate() {
                exact_numbers(x, &format!("{path}[{i}]"))?;
            }
        }
        Yaml::Mapping(m) => {
            for (k, x) in m {
                let key = k.as_str().unwrap_or_default();
                let p = if path.is_empty() {
                    key.to_owned()
                } else {
                    format!("{path}[{}]", serde_json::Value::String(key.to_owned()))
                };
                exact_numbers(x, &p)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Yaml {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn the_policy_is_json_text_in_its_own_order() {
        let p = policy(
            r#"{"version":"1","default":"deny","tools":{"zeta":{},"alpha":{"action":"deny","reason":"no"},
                "c":{"conditions":[{"path":"args.n","op":"lte","value":1.5}]}},"hide":["x"],"approval":{}}"#,
        );
        let mut out = String::new();
        flow(&p, 0, "  ", &mut out).unwrap();
        assert_eq!(
            out,
            r#"{
    "version": "1",
    "default": "deny",
    "tools": {
      "zeta": {},
      "alpha": {"action": "deny", "reason": "no"},
      "c": {"conditions": [{"path": "args.n", "op": "lte", "value": 1.5}]}
    },
    "hide": [
      "x"
    ],
    "approval": {}
  }"#
        );
        // YAML reads it back as the same policy.
        let back: Yaml = serde_yaml_ng::from_str(&format!("p: {out}\n")).unwrap();
        assert_eq!(back["p"], p);
    }

    #[test]
    fn integers_a_double_cannot_hold_are_refused() {
        let ok = policy(r#"{"max_body_bytes": 9007199254740992, "x": [-9007199254740992]}"#);
        assert!(exact_numbers(&ok, "").is_ok());
        let e = exact_numbers(
            &policy(r#"{"tools": {"t": {"conditions": [{"value": 9007199254740993}]}}}"#),
            "",
        )
        .unwrap_err();
        assert!(
            e.starts_with(r#"tools["t"]["conditions"][0]["value"]: 9007199254740993 cannot pass"#),
            "{e}"
        );
    }

    #[test]
    fn hold_headers_true_is_refused_and_absent_is_set() {
        let set = Settings::default();
        let e = manifest(
            Kind::WasmPlugin,
            br#"{"version":"1","hold_headers":true}"#,
            &set,
            vec![],
        )
        .err()
        .unwrap();
        assert!(
            e.starts_with("hold_headers: true cannot run in an Istio WasmPlugin"),
            "{e}"
        );
        let m = manifest(
            Kind::TrafficExtension,
            br#"{"version":"1","default":"deny"}"#,
            &set,
            vec![],
        )
        .unwrap();
        assert_eq!(m.policy["hold_headers"], false);
        assert!(
            m.notes[0].starts_with("hold_headers: false added"),
            "{:?}",
            m.notes
        );
        assert!(
            m.text.contains(
                "pluginConfig: {\n        \"version\": \"1\",\n        \"hold_headers\": false,\n"
            ),
            "{}",
            m.text
        );
    }
}
