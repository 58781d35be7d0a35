//! The `mcp-policy` CLI, run as a process: what an operator types, what they read, the exit status.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-policy"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// A file with `text` under a fresh temporary directory, named `name`.
fn file(name: &str, text: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mcp-policy-cli-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const GOOD: &str =
    r#"{"version":"1","default":"deny","tools":{"get_run":{},"delete_*":{"action":"deny"}}}"#;
const BAD: &str = r#"{"version":"1","default":"alow","tools":{"search_runs":{"conditions":[{"path":"args.n","op":"lt3","value":1}]}}}"#;

fn envoy_yaml(policy: &str) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: mcp
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: mcp_policy
                allow_on_headers_stop_iteration: true
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: |
                    {policy}
"#
    )
}

#[test]
fn ok_policy_json() {
    let p = file("policy.json", GOOD);
    let r = run(&["check", s(&p)], None);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stdout, format!("{}: ok (2 rules, default deny)\n", s(&p)));
}

#[test]
fn the_repository_examples_are_valid() {
    let r = run(
        &["check", "envoy/policies/example.json", "envoy/envoy.yaml"],
        None,
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("envoy/policies/example.json: ok (4 rules, default deny)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("envoy/envoy.yaml: static_resources.listeners[0]"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("(Wasm plugin mcp_policy): ok (4 rules, default deny)"),
        "{}",
        r.stdout
    );
}

#[test]
fn bad_policy_prints_every_error_with_path_and_fix() {
    let p = file("bad.json", BAD);
    let r = run(&["check", s(&p)], None);
    assert_eq!(r.code, 1);
    let want = [
        "invalid mcp-policy configuration (2 errors)",
        "  - default: invalid action \"alow\"; fix: did you mean \"allow\"?",
        "  - tools[\"search_runs\"].conditions[0].op: unknown op \"lt3\"; fix: did you mean \"lt\"?",
    ];
    for w in want {
        assert!(r.stdout.contains(w), "missing {w:?} in\n{}", r.stdout);
    }
}

#[test]
fn envoy_yaml_ok_and_bad() {
    let good = file("envoy.yaml", &envoy_yaml(GOOD));
    let r = run(&["check", s(&good)], None);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let loc = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config (Wasm plugin mcp_policy)";
    assert_eq!(
        r.stdout,
        format!("{}: {loc}: ok (2 rules, default deny)\n", s(&good))
    );

    let bad = file("envoy.yaml", &envoy_yaml(BAD));
    let r = run(&["check", s(&bad)], None);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains(&format!(
            "{}: {loc}: invalid mcp-policy configuration (2 errors)",
            s(&bad)
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("  - default: invalid action"),
        "{}",
        r.stdout
    );
}

#[test]
fn envoy_json_bootstrap() {
    let text = format!(
        r#"{{"static_resources": {{"listeners": [{{"per_filter": {{"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
          "config": {{"allow_on_headers_stop_iteration": true, "configuration": {{"@type": "type.googleapis.com/google.protobuf.StringValue", "value": {}}}}}}}}}]}}}}"#,
        serde_json::Value::String(GOOD.into())
    );
    let p = file("envoy.json", &text);
    let r = run(&["check", s(&p)], None);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout
            .contains("static_resources.listeners[0].per_filter: ok (2 rules, default deny)"),
        "{}",
        r.stdout
    );
}

#[test]
fn per_route_config_is_checked_too() {
    let text = format!(
        r#"{}
          route_config:
            virtual_hosts:
            - name: mcp
              routes:
              - match: {{prefix: /mcp}}
                typed_per_filter_config:
                  envoy.filters.http.wasm:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                    config:
                      configuration:
                        "@type": type.googleapis.com/google.protobuf.StringValue
                        value: '{{"version":"1","tools":{{"x":{{"action":"nope"}}}}}}'
"#,
        envoy_yaml(GOOD).trim_end()
    );
    let p = file("routes.yaml", &text);
    let r = run(&["check", s(&p)], None);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains("ok (2 rules, default deny)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("routes[0].typed_per_filter_config[\"envoy.filters.http.wasm\"]: invalid mcp-policy configuration (1 error)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("  - tools[\"x\"].action: invalid action \"nope\""),
        "{}",
        r.stdout
    );
}

#[test]
fn istio_wasmplugin_multi_document() {
    let text = r#"apiVersion: v1
kind: ServiceAccount
metadata: {name: agent}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: mcp-policy
  namespace: mlflow
spec:
  selector: {matchLabels: {app: mlflow-mcp}}
  url: oci://registry.example/mcp-policy:0.1.0
  phase: AUTHZ
  failStrategy: FAIL_CLOSE
  pluginConfig:
    version: "1"
    default: deny
    hold_headers: false
    tools:
      get_run: {}
      "get_*": {action: allow}
      "delete_*": {action: deny, reason: Deleting MLflow data is not allowed for agents}
      search_runs:
        reason: Fetch at most 100 runs at once
        conditions:
        - {path: args.max_results, op: lte, value: 100}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: typo}
spec:
  pluginConfig:
    version: 1
    tools: {get_run: {acton: allow}}
"#;
    let p = file("wasmplugin.yaml", text);
    let r = run(&["check", s(&p)], None);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let f = s(&p);
    assert!(
        r.stdout.contains(&format!(
            "{f}: document 2: WasmPlugin mcp-policy: spec.pluginConfig: ok (4 rules, default deny)"
        )),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(&format!("{f}: document 3: WasmPlugin typo: spec.pluginConfig: invalid mcp-policy configuration (2 errors)")), "{}", r.stdout);
    // YAML's unquoted 1 is a number: the policy wants the string "1", and the fix says so.
    assert!(
        r.stdout
            .contains("  - version: unsupported version 1; fix: set \"version\": \"1\" (a string)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("  - tools[\"get_run\"].acton: unknown field `acton`"),
        "{}",
        r.stdout
    );
}

#[test]
fn yaml_without_a_policy_fails_unless_skipped() {
    let p = file(
        "plain.yaml",
        "apiVersion: v1\nkind: ConfigMap\ndata: {a: b}\n",
    );
    let r = run(&["check", s(&p)], None);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stdout,
        format!("{}: no mcp-policy configuration found (no Envoy HTTP Wasm filter, no Istio WasmPlugin or TrafficExtension)\n", s(&p))
    );

    let good = file("p.json", GOOD);
    let r = run(&["check", "--skip-missing", s(&p), s(&good)], None);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!(
            "{}: skipped: no mcp-policy configuration found",
            s(&p)
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("check: 1 policy checked, 0 problems"),
        "{}",
        r.stdout
    );

    // Skipping everything is still a failure: nothing was checked.
    let r = run(&["check", "--skip-missing", s(&p)], None);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .contains("no mcp-policy configuration found in any file"),
        "{}",
        r.stdout
    );
}

#[test]
fn unreadable_and_malformed_files() {
    let r = run(&["check", "/nonexistent/policy.json"], None);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .starts_with("/nonexistent/policy.json: cannot read:"),
        "{}",
        r.stdout
    );

    let p = file("broken.yaml", "static_resources: [\n");
    let r = run(&["check", s(&p)], None);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("not valid YAML"), "{}", r.stdout);

    let p = file(
        "dup.json",
        r#"{"version":"1","tools":{"get_run":{},"GET_RUN":{"action":"deny"}}}"#,
    );
    let r = run(&["check", s(&p)], None);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("repeats a key"), "{}", r.stdout);
}

#[test]
fn stdin() {
    let r = run(&["check", "-"], Some(GOOD));
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "(stdin): ok (2 rules, default deny)\n")
    );
    let r = run(&["check", "-"], Some(&envoy_yaml(GOOD)));
    assert_eq!(r.code, 0, "{}", r.stdout);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["check"],
        &["check", "--nope", "x"],
        &["frobnicate"],
        &["help", "frobnicate"],
    ] {
        let r = run(args, None);
        assert_eq!(r.code, 2, "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("usage: mcp-policy"),
            "{args:?}: {}",
            r.stderr
        );
        assert!(r.stdout.is_empty());
    }
    let r = run(&["--help"], None);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("check FILE..."));
    let r = run(&["check", "--help"], None);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("--skip-missing"));
}

#[test]
fn held_headers_must_match_the_wasm_filter() {
    let loc = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config (Wasm plugin mcp_policy)";
    let field = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.config.allow_on_headers_stop_iteration";
    // The flag absent, the policy holding headers (the default): every request would hang.
    let absent = envoy_yaml(GOOD).replace("                allow_on_headers_stop_iteration: true\n", "");
    let p = file("absent.yaml", &absent);
    let r = run(&["check", s(&p)], None);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(
        r.stdout.lines().next().unwrap(),
        format!(
            "{}: {loc}: the policy is valid (2 rules, default deny) but cannot run here (1 error)",
            s(&p)
        )
    );
    let want = format!("  - hold_headers: the policy holds request headers until the body is decided (hold_headers: true, the default), but {field} is absent (false): Envoy would never deliver the body to the filter and every request with a body would hang; fix: set `allow_on_headers_stop_iteration: true` in the filter's config, or, where it cannot be set, \"hold_headers\": false in the policy");
    assert_eq!(r.stdout.lines().nth(1).unwrap(), want);

    // Explicitly false: same error, said so.
    let off = envoy_yaml(GOOD).replace(
        "allow_on_headers_stop_iteration: true",
        "allow_on_headers_stop_iteration: false",
    );
    let r = run(&["check", s(&file("off.yaml", &off))], None);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("{field} is false: Envoy would never")),
        "{}",
        r.stdout
    );

    // hold_headers false without the flag: what Istio needs, fine anywhere.
    let unheld = r#"{"version":"1","hold_headers":false,"tools":{"get_run":{}}}"#;
    let r = run(
        &[
            "check",
            s(&file(
                "unheld.yaml",
                &envoy_yaml(unheld).replace("                allow_on_headers_stop_iteration: true\n", ""),
            )),
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(!r.stdout.contains("note"), "{}", r.stdout);

    // hold_headers false with the flag: works, but loses the exported headers: a note, not an error.
    let r = run(&["check", s(&file("note.yaml", &envoy_yaml(unheld)))], None);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.contains(": ok (1 rule, default deny)\n  note: hold_headers is false although "), "{}", r.stdout);
    assert!(r.stdout.contains("sets no x-mcp-* headers"), "{}", r.stdout);

    // A JSON policy file has no filter to compare with.
    let r = run(&["check", "-"], Some(unheld));
    assert_eq!((r.code, r.stdout.as_str()), (0, "(stdin): ok (1 rule, default deny)\n"));
}

const ISTIO_POLICY: &str = r#"    version: "1"
    default: deny
    tools:
      get_run: {}
"#;

fn wasmplugin(policy: &str) -> String {
    format!(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: mcp-policy}}\nspec:\n  url: oci://r/m:1\n  pluginConfig:\n{policy}"
    )
}

fn trafficextension(policy: &str) -> String {
    let indented: String = policy.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: TrafficExtension\nmetadata: {{name: mcp-te}}\nspec:\n  phase: AUTHZ\n  wasm:\n    url: oci://r/m:1\n    pluginConfig:\n{indented}"
    )
}

#[test]
fn istio_needs_hold_headers_false() {
    let held = wasmplugin(ISTIO_POLICY);
    let p = file("wp.yaml", &held);
    let r = run(&["check", s(&p)], None);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(
        r.stdout,
        format!(
            "{}: WasmPlugin mcp-policy: spec.pluginConfig: the policy is valid (1 rule, default deny) but cannot run here (1 error)\n  - hold_headers: must be false in an Istio WasmPlugin, which cannot set the Envoy Wasm filter's allow_on_headers_stop_iteration: a filter holding headers would never get the body and every request with a body would hang (hold_headers is true by default); fix: add `hold_headers: false` under spec.pluginConfig\n",
            s(&p)
        )
    );
    let fixed = wasmplugin(&format!("    hold_headers: false\n{ISTIO_POLICY}"));
    let r = run(&["check", s(&file("wp.yaml", &fixed))], None);
    assert_eq!(r.code, 0, "{}", r.stdout);
}

#[test]
fn traffic_extension_is_read() {
    let good = trafficextension(&format!("    hold_headers: false\n{ISTIO_POLICY}"));
    let p = file("te.yaml", &good);
    let r = run(&["check", s(&p)], None);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(
        r.stdout,
        format!(
            "{}: TrafficExtension mcp-te: spec.wasm.pluginConfig: ok (1 rule, default deny)\n",
            s(&p)
        )
    );
    // Held headers: the same error as for a WasmPlugin, naming this kind and path.
    let r = run(&["check", s(&file("te.yaml", &trafficextension(ISTIO_POLICY)))], None);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("must be false in an Istio TrafficExtension"), "{}", r.stdout);
    assert!(r.stdout.contains("fix: add `hold_headers: false` under spec.wasm.pluginConfig"), "{}", r.stdout);
    // Its policy errors are reported with their paths, like any other.
    let typo = trafficextension("    version: \"1\"\n    hold_headers: false\n    tols: {}\n");
    let r = run(&["check", s(&file("te.yaml", &typo))], None);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("TrafficExtension mcp-te: spec.wasm.pluginConfig: invalid mcp-policy configuration (1 error)"), "{}", r.stdout);
    assert!(r.stdout.contains("  - tols: unknown field `tols`; fix: did you mean `tools`?"), "{}", r.stdout);
    // No pluginConfig at all.
    let r = run(&["check", s(&file("te.yaml", "apiVersion: extensions.istio.io/v1alpha1\nkind: TrafficExtension\nmetadata: {name: x}\nspec: {wasm: {url: oci://r/m:1}}\n"))], None);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("no spec.wasm.pluginConfig; fix: put the policy under spec.wasm.pluginConfig"), "{}", r.stdout);
    // The repository's manifests.
    let r = run(&["check", "envoy/istio/trafficextension.yaml", "envoy/istio/wasmplugin.yaml"], None);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.contains("envoy/istio/trafficextension.yaml: TrafficExtension mcp-policy: spec.wasm.pluginConfig: ok (4 rules, default deny)"), "{}", r.stdout);
}
