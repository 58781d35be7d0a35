use super::*;
use serde_yaml_ng::Value as Yaml;

fn opts(args: &[&str]) -> Result<Options, String> {
    match crate::testing::parse(&[&["render"], args].concat())? {
        crate::Command::Render(o) => Ok(o),
        other => panic!("{other:?}"),
    }
}

fn input(text: &str) -> Input<'static> {
    Input {
        name: "policy.json",
        text: text.to_owned(),
        policy: policy::parse(text.as_bytes()).unwrap(),
        command: "mcp-policy render policy.json".into(),
    }
}

fn rendered(policy: &str, args: &[&str]) -> Rendered {
    let o = opts(&[&["policy.json"], args].concat()).unwrap();
    render(&o, &input(policy)).unwrap()
}

fn only(r: &Rendered) -> &str {
    assert_eq!(r.files.len(), 1);
    &r.files[0].1
}

fn yaml(text: &str) -> Yaml {
    serde_yaml_ng::from_str(text).unwrap()
}

fn plugin_value(doc: &mut Yaml) -> &mut Yaml {
    &mut doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"][0]["typed_config"]["config"]["configuration"]["value"]
}

/// A shipped Envoy file, with the rendered cluster name for the MCP server and another policy.
fn shipped(path: &str, policy: &str) -> Yaml {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let text = text.replace("mlflow_mcp", envoy::MCP_CLUSTER);
    let mut doc = yaml(&text);
    *plugin_value(&mut doc) = Yaml::String(policy.to_owned());
    doc
}

fn embedded_policy(path: &str) -> String {
    let mut doc =
        yaml(&std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap());
    plugin_value(&mut doc).as_str().unwrap().to_owned()
}

const EXAMPLE: &str = include_str!("../../../../envoy/policies/example.json");

#[test]
fn envoy_yaml_is_what_render_writes_by_default() {
    let r = rendered(EXAMPLE, &["--format", "envoy"]);
    // envoy/envoy.yaml, value for value, but for the cluster's name and the policy's text.
    assert_eq!(yaml(only(&r)), shipped("envoy/envoy.yaml", EXAMPLE));
    // Its comments are all there, each before the same line.
    let comments = yaml::Comments::of(envoy::TEMPLATE);
    let unindented: Vec<&str> = only(&r).lines().map(str::trim_start).collect();
    let unindented = unindented.join("\n");
    for (path, lines) in &comments.at {
        let want = format!(
            "{}\n{}",
            lines.join("\n"),
            path.rsplit(['.', ']']).next().unwrap()
        );
        assert!(unindented.contains(&want), "{path}: {want}");
    }
    let mut c = comments.clone();
    c.header.clear();
    let (_, left) = c.apply(&yaml::text(&yaml(envoy::TEMPLATE)).unwrap());
    assert!(
        left.is_empty(),
        "comments of envoy/envoy.yaml without a line: {left:?}"
    );
    // The policy is written as given, as a block.
    assert!(only(&r)
        .contains("value: |\n                    {\n                      \"version\": \"1\",\n"));
    assert!(only(&r).starts_with("# Envoy bootstrap: mcp-policy in front of an MCP server."));
    assert!(only(&r).contains("#   mcp-policy render policy.json\n"));
    assert!(only(&r).contains(
        "#   MCP client ──▶ 127.0.0.1:10000/mcp (this Envoy, mcp-policy) ──▶ 127.0.0.1:8001 (the MCP server, cluster mcp_server)\n#   admin: 127.0.0.1:9901\n"
    ));
}

#[test]
fn the_demo_is_render_with_an_approvals_cluster() {
    let policy = embedded_policy("envoy/demo.yaml");
    let r = rendered(
        &policy,
        &["--format", "envoy", "--cluster", "approvals=127.0.0.1:8002"],
    );
    assert_eq!(yaml(only(&r)), shipped("envoy/demo.yaml", &policy));
    assert!(only(&r).contains("#   approval.cluster ──▶ 127.0.0.1:8002 (cluster approvals)\n"));
    assert!(only(&r).contains(
        "  # The policy's approval.cluster (approvals): the approval service (the approvals console"
    ), "{}", only(&r));
    assert!(
        r.notes.iter().all(|n| !n.contains("placeholder")),
        "{:?}",
        r.notes
    );
}

#[test]
fn a_cluster_without_an_address_is_a_marked_placeholder() {
    let policy = r#"{"version":"1","approval":{"cluster":"approvals"},"tools":{"t":{"action":"require_approval"}}}"#;
    let r = rendered(policy, &["--format", "envoy"]);
    let doc = yaml(only(&r));
    let c = &doc["static_resources"]["clusters"][1];
    assert_eq!(c["name"], "approvals");
    assert_eq!(c["load_assignment"]["endpoints"], Yaml::Sequence(vec![]));
    assert!(only(&r).contains("  # PLACEHOLDER: the policy's approval.cluster names this cluster"));
    assert!(only(&r).contains("--cluster approvals=HOST:PORT"));
    assert!(only(&r)
        .contains("#   approval.cluster ──▶ (PLACEHOLDER: no address; cluster approvals below)"));
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("placeholder without an address")),
        "{:?}",
        r.notes
    );
    // A cluster the policy does not name is a mistake.
    let o = opts(&[
        "p.json",
        "--format",
        "envoy",
        "--cluster",
        "aproval=127.0.0.1:1",
    ])
    .unwrap();
    let e = render(&o, &input(policy)).err().unwrap();
    assert_eq!(
        e,
        r#"--cluster aproval: the policy names no cluster "aproval" (it names "approvals" (approval.cluster))"#
    );
    // Nor may it take the MCP server's.
    let e = render(
        &opts(&["p.json", "--format", "envoy"]).unwrap(),
        &input(&policy.replace("\"approvals\"", "\"mcp_server\"")),
    )
    .err()
    .unwrap();
    assert!(
        e.starts_with("approval.cluster names \"mcp_server\", the rendered MCP server's cluster"),
        "{e}"
    );
}

#[test]
fn settings_reach_their_places() {
    let policy = r#"{"version":"1","max_body_bytes":4194304,"approval":{"cluster":"approvals","timeout_ms":300000},
        "tools":{"t":{"action":"require_approval"}}}"#;
    let r = rendered(
        policy,
        &[
            "--format",
            "envoy",
            "--upstream",
            "https://mcp.example.com/v1/mcp",
            "--listen",
            "0.0.0.0:8080",
            "--admin",
            "127.0.0.1:0",
            "--wasm",
            "/opt/mcp_policy.wasm",
            "--cluster",
            "approvals=10.0.0.5:8002",
            "--ca-file",
            "/etc/ca.pem",
        ],
    );
    let doc = yaml(only(&r));
    assert_eq!(doc["admin"]["address"]["socket_address"]["port_value"], 0);
    let l = &doc["static_resources"]["listeners"][0];
    assert_eq!(l["address"]["socket_address"]["address"], "0.0.0.0");
    assert_eq!(l["per_connection_buffer_limit_bytes"], 8388608);
    let hcm = &l["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(hcm["stream_idle_timeout"], "360s");
    let route = &hcm["route_config"]["virtual_hosts"][0]["routes"][0];
    assert_eq!(route["match"]["prefix"], "/v1/mcp");
    assert_eq!(route["route"]["cluster"], "mcp_server");
    assert_eq!(route["route"]["auto_host_rewrite"], true);
    assert_eq!(route["route"]["idle_timeout"], "360s");
    let plugin = &hcm["http_filters"][0]["typed_config"]["config"];
    assert_eq!(
        plugin["vm_config"]["code"]["local"]["filename"],
        "/opt/mcp_policy.wasm"
    );
    assert_eq!(plugin["configuration"]["value"], policy);
    let mcp = &doc["static_resources"]["clusters"][0];
    assert_eq!(mcp["type"], "STRICT_DNS");
    assert_eq!(mcp["per_connection_buffer_limit_bytes"], 8388608);
    assert_eq!(
        mcp["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"]["port_value"],
        443
    );
    let tls = &mcp["transport_socket"]["typed_config"];
    assert_eq!(tls["sni"], "mcp.example.com");
    assert_eq!(
        tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"],
        "/etc/ca.pem"
    );
    let approvals = &doc["static_resources"]["clusters"][1];
    assert_eq!(approvals["type"], "STATIC");
    assert!(approvals.get("transport_socket").is_none());
    assert!(only(&r).contains("# (the module: /opt/mcp_policy.wasm)"));
    assert!(r
        .notes
        .iter()
        .any(|n| n.contains("stream_idle_timeout and the route's idle_timeout are set to 360s")));
    assert!(r
        .notes
        .iter()
        .any(|n| n.starts_with("the module /opt/mcp_policy.wasm is not there")));
}

#[test]
fn lds_is_the_listener_and_its_bootstrap_serves_it() {
    let dir = std::env::temp_dir().join(format!("mcp-policy-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lds_path = dir.join("lds.yaml");
    let boot_path = dir.join("envoy.yaml");
    let (lds_s, boot_s) = (lds_path.to_str().unwrap(), boot_path.to_str().unwrap());
    let r = rendered(
        EXAMPLE,
        &["--format", "lds", "--out", lds_s, "--bootstrap", boot_s],
    );
    assert_eq!(r.files.len(), 2);
    let (boot, lds) = (&r.files[0], &r.files[1]);
    assert_eq!(
        (boot.0.as_deref(), lds.0.as_deref()),
        (Some(boot_s), Some(lds_s))
    );
    let template = shipped("envoy/envoy.yaml", EXAMPLE);
    let doc = yaml(&lds.1);
    let mut listener = template["static_resources"]["listeners"][0].clone();
    let serde_yaml_ng::Value::Mapping(m) = &mut listener else {
        panic!()
    };
    m.insert(
        yaml::s("@type"),
        yaml::s("type.googleapis.com/envoy.config.listener.v3.Listener"),
    );
    assert_eq!(doc["resources"][0], listener);
    assert_eq!(doc["version_info"].as_str().unwrap().len(), 12);
    // Each listener comment of envoy/envoy.yaml, moved with it.
    assert!(lds.1.contains("  # Above the policy's max_body_bytes (default 1 MiB), so an oversized body reaches the filter,\n  # which answers 413"));
    assert!(lds
        .1
        .contains("\n  per_connection_buffer_limit_bytes: 4194304\n"));
    let b = yaml(&boot.1);
    assert!(b["static_resources"].get("listeners").is_none());
    assert_eq!(
        b["static_resources"]["clusters"],
        template["static_resources"]["clusters"]
    );
    assert_eq!(b["stats_config"], template["stats_config"]);
    assert_eq!(b["overload_manager"], template["overload_manager"]);
    let source = &b["dynamic_resources"]["lds_config"]["path_config_source"];
    assert_eq!(source["path"], lds_s);
    assert_eq!(source["watched_directory"]["path"], dir.to_str().unwrap());
    assert!(boot.1.contains("# Dynamic resources need a node identity"));
    // Without --bootstrap: the LDS file alone, and a word on what serves it.
    let r = rendered(EXAMPLE, &["--format", "lds"]);
    assert_eq!(r.files.len(), 1);
    assert!(r
        .notes
        .iter()
        .any(|n| n.contains("render --bootstrap FILE writes one")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn istio_manifests_are_the_shipped_ones_with_the_policy() {
    for (format, file) in [
        ("wasmplugin", "envoy/istio/wasmplugin.yaml"),
        ("trafficextension", "envoy/istio/trafficextension.yaml"),
    ] {
        let template = yaml(
            &std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap(),
        );
        let config = if format == "wasmplugin" {
            &template["spec"]["pluginConfig"]
        } else {
            &template["spec"]["wasm"]["pluginConfig"]
        };
        let policy =
            serde_json::to_string(&crate::extract::yaml_to_json(config, "").unwrap()).unwrap();
        let r = rendered(&policy, &["--format", format]);
        assert_eq!(yaml(only(&r)), template, "{format}");
        assert!(only(&r).contains("REQUIRED under Istio") || format == "trafficextension");
        assert!(only(&r).contains("pluginConfig: {\n"), "{}", only(&r));
        assert!(
            r.notes.iter().any(|n| n.contains("placeholder")),
            "{:?}",
            r.notes
        );
        assert!(
            r.notes.iter().any(|n| n.contains("not pinned")),
            "{:?}",
            r.notes
        );
    }
}

#[test]
fn istio_settings_reach_their_places() {
    let digest = "AB".repeat(32);
    let r = rendered(
        r#"{"version":"1","default":"deny","tools":{"get_run":{"reason":"no"}}}"#,
        &[
            "--format",
            "wasmplugin",
            "--name",
            "guard",
            "--namespace",
            "on",
            "--service",
            "my-mcp",
            "--port",
            "9000",
            "--image",
            "oci://r.example/mcp-policy:1",
            "--sha256",
            &format!("sha256:{digest}"),
        ],
    );
    let text = only(&r);
    let doc = yaml(text);
    assert_eq!(doc["metadata"]["name"], "guard");
    // Quoted, or a YAML 1.1 reader (kubectl) would take it for true.
    assert!(text.contains("  namespace: \"on\"\n"), "{text}");
    assert!(doc["spec"].get("selector").is_none());
    assert_eq!(doc["spec"]["targetRefs"][0]["name"], "my-mcp");
    assert_eq!(doc["spec"]["match"][0]["ports"][0]["number"], 9000);
    assert_eq!(doc["spec"]["url"], "oci://r.example/mcp-policy:1");
    assert_eq!(doc["spec"]["sha256"], digest.to_ascii_lowercase());
    assert!(
        !text.contains("# sha256:") && !text.contains("Placeholder registry"),
        "{text}"
    );
    assert_eq!(doc["spec"]["pluginConfig"]["hold_headers"], false);
    assert_eq!(
        doc["spec"]["pluginConfig"]["tools"]["get_run"]["reason"],
        "no"
    );
    assert!(
        r.notes
            .iter()
            .all(|n| !n.contains("placeholder") && !n.contains("pinned")),
        "{:?}",
        r.notes
    );
    let r = rendered(
        r#"{"version":"1","tools":{}}"#,
        &[
            "--format",
            "trafficextension",
            "--selector",
            "app=a",
            "--selector",
            "tier=mcp",
        ],
    );
    let doc = yaml(only(&r));
    assert_eq!(
        doc["spec"]["selector"]["matchLabels"],
        yaml("{app: a, tier: mcp}")
    );
}

#[test]
fn options_that_do_not_fit_the_format_are_usage_errors() {
    let err = |args: &[&str]| opts(args).err().unwrap();
    assert!(err(&["p.json"]).contains("--format <FORMAT>"));
    assert!(err(&["p.json", "--format", "nginx"])
        .contains("[possible values: envoy, lds, wasmplugin, trafficextension]"));
    assert!(
        err(&["p.json", "--format", "envoy", "--image", "oci://x/y"]).contains(
            "--image applies to --format wasmplugin and trafficextension, not to --format envoy"
        )
    );
    assert!(err(&[
        "p.json",
        "--format",
        "wasmplugin",
        "--upstream",
        "1.2.3.4:5"
    ])
    .contains("--upstream applies to --format envoy and lds, not to --format wasmplugin"));
    assert!(
        err(&["p.json", "--format", "envoy", "--bootstrap", "b.yaml"])
            .contains("--bootstrap applies to --format lds")
    );
    assert!(err(&["p.json", "--format", "lds", "--bootstrap", "b.yaml"])
        .contains("--bootstrap needs --out"));
    assert!(err(&[
        "p.json",
        "--format",
        "lds",
        "--bootstrap",
        "b.yaml",
        "--out",
        "./b.yaml"
    ])
    .contains("two files"));
    assert!(err(&[
        "p.json",
        "--format",
        "envoy",
        "--cluster",
        "a=1.1.1.1:1",
        "--cluster",
        "a=1.1.1.1:2"
    ])
    .contains("--cluster a is given twice"));
    assert!(err(&[
        "p.json",
        "--format",
        "wasmplugin",
        "--selector",
        "a=b",
        "--service",
        "s"
    ])
    .contains("cannot be used with"));
    assert!(
        err(&["p.json", "--format", "wasmplugin", "--namespace", "Prod"])
            .contains("a Kubernetes name")
    );
    assert!(
        err(&["p.json", "--format", "wasmplugin", "--sha256", "abc"]).contains("64 hex digits")
    );
    assert!(err(&[
        "p.json",
        "--format",
        "wasmplugin",
        "--image",
        "registry/x:1"
    ])
    .contains("oci://"));
    assert!(err(&["p.json", "--format", "wasmplugin", "--port", "0"]).contains("--port"));
    assert!(
        err(&["p.json", "--format", "envoy", "--listen", "localhost:80"])
            .contains("IP address and a port")
    );
    assert!(err(&["p.json", "--format", "envoy", "--upstream", "x"]).contains("HOST:PORT"));
    let o = opts(&[
        "-",
        "--format",
        "lds",
        "-o",
        "l.yaml",
        "--bootstrap",
        "b.yaml",
    ])
    .unwrap();
    assert_eq!(
        (o.file.as_str(), o.format, o.out.as_deref()),
        ("-", Format::Lds, Some("l.yaml"))
    );
}

#[test]
fn notes_for_what_the_deployment_must_add() {
    let notes = envoy_notes(
        &policy::parse(br#"{"version":"1","hold_headers":false,"callers":{"jwt":{"metadata":"idp"},"required":true},"tools":{}}"#).unwrap(),
        "/nonexistent/mcp_policy.wasm",
    );
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(
        notes[1].starts_with("hold_headers is false although"),
        "{notes:?}"
    );
    assert!(
        notes[2].contains("no jwt_authn filter") && notes[2].contains("HTTP 401"),
        "{notes:?}"
    );
}

#[test]
fn shell_words() {
    assert_eq!(shell_word("policy.json"), "policy.json");
    assert_eq!(
        shell_word("approvals=127.0.0.1:8002"),
        "approvals=127.0.0.1:8002"
    );
    assert_eq!(shell_word("a b"), "'a b'");
    assert_eq!(shell_word("it's"), "'it'\\''s'");
    assert_eq!(shell_word(""), "''");
}

#[test]
fn writing_replaces_the_file_whole() {
    let dir = std::env::temp_dir().join(format!("mcp-policy-render-w-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("out.yaml");
    write_atomic(p.to_str().unwrap(), "one\n").unwrap();
    write_atomic(p.to_str().unwrap(), "two\n").unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\n");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "no temporary file left"
    );
    let e = write_atomic(dir.join("no/such/dir/x").to_str().unwrap(), "x").unwrap_err();
    assert!(e.starts_with("cannot write"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// rate_limit_service.cluster is a named cluster like approval.cluster, spoken to over gRPC (HTTP/2); one cluster
/// cannot serve both.
#[test]
fn the_rate_limit_service_cluster_speaks_grpc() {
    let policy = r#"{"version":"1","rate_limit_service":{"cluster":"ratelimit","domain":"mcp-policy"},
        "tools":{"t":{"rate_limit":"10/minute"}}}"#;
    let r = rendered(
        policy,
        &["--format", "envoy", "--cluster", "ratelimit=127.0.0.1:8081"],
    );
    let doc = yaml(only(&r));
    let c = &doc["static_resources"]["clusters"][1];
    assert_eq!(c["name"], "ratelimit");
    let http2 = &c["typed_extension_protocol_options"]
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"]
        ["http2_protocol_options"];
    assert!(http2.is_mapping(), "{c:?}");
    assert!(
        only(&r).contains("#   rate_limit_service.cluster ──▶ 127.0.0.1:8081 (cluster ratelimit)")
    );
    let both = r#"{"version":"1","rate_limit_service":{"cluster":"svc","domain":"d"},"approval":{"cluster":"svc"},
        "tools":{"t":{"action":"require_approval"}}}"#;
    let e = render(
        &opts(&["p.json", "--format", "envoy"]).unwrap(),
        &input(both),
    )
    .err()
    .unwrap();
    assert!(
        e.starts_with(
            r#"rate_limit_service.cluster names "svc", which another field names for a service spoken to over HTTP/1.1"#
        ),
        "{e}"
    );
}
