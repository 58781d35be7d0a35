//! The Envoy outputs of `render`: a bootstrap, an LDS resource (the bootstrap's listener) and a bootstrap that
//! serves such a file. All are envoy/envoy.yaml, built into the binary and patched as a value, so that every
//! setting it has and later gains (held headers, FAIL_CLOSED, stats tags, the overload manager, dropped
//! underscore headers, ...) reaches what is rendered; only what `render` is told to change is changed.

use super::yaml::{at, child, map, n, s, set_after, Comments, Step};
use mcp_policy::policy::Policy;
use serde_yaml_ng::{Mapping, Value as Yaml};
use std::net::{IpAddr, SocketAddr};

/// The documented configuration to copy, as built into this binary.
pub const TEMPLATE: &str = include_str!("../../../../envoy/envoy.yaml");
pub const TEMPLATE_NAME: &str = "envoy/envoy.yaml";

/// The rendered cluster of the MCP server.
pub const MCP_CLUSTER: &str = "mcp_server";
/// Where TLS upstreams' certificates are checked by default (Debian's and Ubuntu's system bundle).
pub const DEFAULT_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Envoy's default `stream_idle_timeout` (5 minutes): a request idle longer (no bytes either way, as while a
/// call waits for approval) is ended with 408.
const ENVOY_STREAM_IDLE_SECONDS: u64 = 300;

/// An upstream: `HOST:PORT`, or `http://` / `https://` `HOST[:PORT][/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// An IP address (without brackets) or a DNS name.
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// The URL's path (the route's prefix for the MCP server); `None` for `HOST:PORT`.
    pub path: Option<String>,
}

impl Endpoint {
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let uri: ureq::http::Uri = text.parse().map_err(|_| "not a valid URL".to_owned())?;
            let tls = uri.scheme_str() == Some("https");
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
            if authority.contains('@') {
                return Err("a URL with a user name or password is not supported here".into());
            }
            if uri.query().is_some() {
                return Err("a URL with a query (?...) is not supported here".into());
            }
            let host = uri.host().unwrap_or_default();
            let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
            let path = uri.path();
            return Ok(Endpoint {
                host: host_of(host)?,
                port: port_of(port)?,
                tls,
                path: Some(if path.is_empty() {
                    "/".into()
                } else {
                    path.into()
                }),
            });
        }
        if text.contains("://") {
            return Err("only http:// and https:// URLs are supported".into());
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(|| {
            "write HOST:PORT (e.g. 127.0.0.1:8001) or a URL (e.g. http://127.0.0.1:8001/mcp)"
                .to_owned()
        })?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{port:?} is not a port number"))?;
        Ok(Endpoint {
            host: host_of(host)?,
            port: port_of(port)?,
            tls: false,
            path: None,
        })
    }

    fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// As a person writes it: `127.0.0.1:8001`, `https://mcp.example.com:443/mcp`.
    pub fn shown(&self) -> String {
        let host = match self.ip() {
            Some(IpAddr::V6(_)) => format!("[{}]", self.host),
            _ => self.host.clone(),
        };
        match &self.path {
            Some(p) => format!(
                "{}://{host}:{}{p}",
                if self.tls { "https" } else { "http" },
                self.port
            ),
            None => format!("{host}:{}", self.port),
        }
    }
}

fn host_of(host: &str) -> Result<String, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.parse::<IpAddr>().is_ok() {
        return Ok(bare.to_owned());
    }
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
    if bare.is_empty() || !bare.chars().all(name_char) || bare.starts_with(['-', '.']) {
        return Err(format!("{host:?} is neither an IP address nor a DNS name"));
    }
    Ok(bare.to_owned())
}

fn port_of(port: u16) -> Result<u16, String> {
    if port == 0 {
        return Err("the port must be 1 to 65535".into());
    }
    Ok(port)
}

/// `--listen` / `--admin`: an IP address and a port Envoy binds (0: the kernel picks one).
pub fn parse_bind(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        "write an IP address and a port, e.g. 127.0.0.1:10000, 0.0.0.0:10000 or [::]:10000"
            .to_owned()
    })
}

/// `--cluster NAME=ADDRESS`.
pub fn parse_cluster(text: &str) -> Result<(String, Endpoint), String> {
    let (name, address) = text
        .split_once('=')
        .ok_or_else(|| "write NAME=HOST:PORT, e.g. approvals=127.0.0.1:8002".to_owned())?;
    if name.is_empty() {
        return Err("the cluster's name is empty".into());
    }
    Ok((name.to_owned(), Endpoint::parse(address)?))
}

/// What runs behind a cluster the policy names besides the MCP server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// What it is, for comments and notes.
    pub what: &'static str,
    /// Spoken to over gRPC: HTTP/2 to the upstream.
    pub grpc: bool,
    pub connect_timeout: &'static str,
}

pub const APPROVAL_SERVICE: Service = Service {
    what: "the approval service (the approvals console, `mcp-policy approvals`, on 127.0.0.1:8002 by default; or your own)",
    grpc: false,
    connect_timeout: "2s",
};

/// For `rate_limit_service.cluster` (fleet-wide limits).
pub const RATE_LIMIT_SERVICE: Service = Service {
    what: "the rate limit service (envoyproxy/ratelimit or Limitador, over gRPC)",
    grpc: true,
    connect_timeout: "1s",
};

/// Each cluster the policy names, with the field that names it and what runs there. A policy section that names
/// a cluster is one line here.
pub fn named_clusters(p: &Policy) -> Vec<(&'static str, &str, Service)> {
    let mut v = Vec::new();
    if let Some(a) = &p.approval {
        v.push(("approval.cluster", a.cluster.as_str(), APPROVAL_SERVICE));
    }
    if let Some(r) = &p.rate_limit_service {
        v.push((
            "rate_limit_service.cluster",
            r.cluster.as_str(),
            RATE_LIMIT_SERVICE,
        ));
    }
    v
}

/// What `render` is told about the Envoy it writes for; `None`: as in the template.
#[derive(Debug, Default)]
pub struct Settings<'a> {
    pub upstream: Option<&'a Endpoint>,
    pub listen: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub wasm: Option<&'a str>,
    /// `--cluster NAME=ADDRESS`: the clusters the policy names.
    pub clusters: &'a [(String, Endpoint)],
    pub ca_file: Option<&'a str>,
}

/// A rendered bootstrap (with its listener) and what to tell the operator.
pub struct Bootstrap {
    pub doc: Yaml,
    pub comments: Comments,
    /// Lines for the header: where clients connect, where calls go, the side clusters, the admin.
    pub diagram: Vec<String>,
    /// Said on standard error.
    pub notes: Vec<String>,
    /// The wasm path, as written.
    pub wasm: String,
}

/// The paths of what `render` changes in the template.
const LISTENER: &[Step] = &[
    Step::Key("static_resources"),
    Step::Key("listeners"),
    Step::Item(0),
];
const HCM: &[Step] = &[
    Step::Key("static_resources"),
    Step::Key("listeners"),
    Step::Item(0),
    Step::Key("filter_chains"),
    Step::Item(0),
    Step::Key("filters"),
    Step::Named("envoy.filters.network.http_connection_manager"),
    Step::Key("typed_config"),
];
const ROUTE: &[Step] = &[
    Step::Key("route_config"),
    Step::Key("virtual_hosts"),
    Step::Item(0),
    Step::Key("routes"),
    Step::Item(0),
];
const PLUGIN: &[Step] = &[
    Step::Key("http_filters"),
    Step::Named("envoy.filters.http.wasm"),
    Step::Key("typed_config"),
    Step::Key("config"),
];
const CLUSTERS: &[Step] = &[Step::Key("static_resources"), Step::Key("clusters")];

fn socket(addr: &str, port: u16) -> Yaml {
    map([("address", s(addr)), ("port_value", n(port.into()))])
}

fn socket_text(v: &Yaml) -> String {
    let addr = v.get("address").and_then(Yaml::as_str).unwrap_or("?");
    let port = v.get("port_value").and_then(Yaml::as_u64).unwrap_or(0);
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// envoy/envoy.yaml with the policy (its exact text) and the settings.
pub fn bootstrap(policy_text: &str, policy: &Policy, set: &Settings) -> Result<Bootstrap, String> {
    let mut doc: Yaml = serde_yaml_ng::from_str(TEMPLATE)
        .map_err(|e| format!("{TEMPLATE_NAME} (built in) is not valid YAML: {e}"))?;
    let mut comments = Comments::of(TEMPLATE);
    comments.header.clear();
    let mut notes = Vec::new();
    let t = TEMPLATE_NAME;

    // The admin interface.
    let (admin, _) = at(
        &mut doc,
        &[
            Step::Key("admin"),
            Step::Key("address"),
            Step::Key("socket_address"),
        ],
        t,
    )?;
    if let Some(a) = set.admin {
        *admin = socket(&a.ip().to_string(), a.port());
    }
    let admin_text = socket_text(admin);

    // The listener: its address, and a buffer limit above max_body_bytes.
    let (listener, _) = at(&mut doc, LISTENER, t)?;
    let (sa, _) = at(
        listener,
        &[Step::Key("address"), Step::Key("socket_address")],
        t,
    )?;
    if let Some(a) = set.listen {
        *sa = socket(&a.ip().to_string(), a.port());
    }
    let listen_text = socket_text(sa);
    let limit = buffer_limit(listener, policy.max_body_bytes);
    set_after(
        listener,
        "address",
        "per_connection_buffer_limit_bytes",
        n(limit),
    );

    // The route to the MCP server.
    let (hcm, hcm_path) = at(&mut doc, HCM, t)?;
    let idle = approval_idle_seconds(policy);
    if let Some(secs) = idle {
        set_after(
            hcm,
            "codec_type",
            "stream_idle_timeout",
            s(&format!("{secs}s")),
        );
        comments.say(
            &child(&hcm_path, "stream_idle_timeout"),
            &format!(
                "A request may be idle (no bytes either way) this long: here, while its call waits up to \
                 approval.timeout_ms for a person. Above it (Envoy's default is {} minutes).",
                ENVOY_STREAM_IDLE_SECONDS / 60
            ),
        );
        notes.push(format!(
            "approval.timeout_ms lets a call wait longer than Envoy's default stream_idle_timeout ({ENVOY_STREAM_IDLE_SECONDS} s): \
             the connection manager's stream_idle_timeout and the route's idle_timeout are set to {secs}s"
        ));
    }
    let (route, route_path) = at(hcm, ROUTE, t)?;
    let route_path = format!("{hcm_path}.{}", route_path);
    let (r, _) = at(route, &[Step::Key("route")], t)?;
    set_after(r, "", "cluster", s(MCP_CLUSTER));
    let named_host = set.upstream.is_some_and(|u| u.ip().is_none());
    if named_host {
        set_after(r, "timeout", "auto_host_rewrite", Yaml::Bool(true));
        comments.say(
            &format!("{route_path}.route.auto_host_rewrite"),
            "The MCP server is reached by name: send it its own name as Host (servers that guard against DNS \
             rebinding refuse other names).",
        );
    }
    if let Some(secs) = idle {
        set_after(r, "timeout", "idle_timeout", s(&format!("{secs}s")));
        comments.say(
            &format!("{route_path}.route.idle_timeout"),
            "The route's own idle limit (it overrides stream_idle_timeout for this route): above approval.timeout_ms.",
        );
    }
    if let Some(path) = set.upstream.and_then(|u| u.path.as_deref()) {
        let (m, _) = at(route, &[Step::Key("match")], t)?;
        *m = map([("prefix", s(path))]);
    }
    let prefix = at(route, &[Step::Key("match"), Step::Key("prefix")], t)
        .ok()
        .and_then(|(p, _)| p.as_str())
        .unwrap_or("/")
        .to_owned();

    // The plugin: the module and the policy.
    let (plugin, _) = at(hcm, PLUGIN, t)?;
    let (f, _) = at(
        plugin,
        &[
            Step::Key("vm_config"),
            Step::Key("code"),
            Step::Key("local"),
            Step::Key("filename"),
        ],
        t,
    )?;
    if let Some(w) = set.wasm {
        *f = s(w);
    }
    let wasm = f.as_str().unwrap_or_default().to_owned();
    let (value, _) = at(plugin, &[Step::Key("configuration"), Step::Key("value")], t)?;
    *value = s(policy_text);

    // The clusters: the MCP server's, then those the policy names.
    let (clusters, clusters_path) = at(&mut doc, CLUSTERS, t)?;
    let (mcp, mcp_path) = at(clusters, &[Step::Item(0)], t)?;
    let mcp_path = format!("{clusters_path}{mcp_path}");
    let upstream_text = match set.upstream {
        Some(u) => {
            point(mcp, MCP_CLUSTER, Some(u), set.ca_file, false);
            set_after(mcp, "", "per_connection_buffer_limit_bytes", n(limit));
            comments.say(
                &mcp_path,
                &describe_upstream("The MCP server (render --upstream)", u, set.ca_file),
            );
            u.shown()
        }
        None => {
            rename(mcp, MCP_CLUSTER);
            set_after(mcp, "", "per_connection_buffer_limit_bytes", n(limit));
            let (sa, _) = at(
                mcp,
                &[
                    Step::Key("load_assignment"),
                    Step::Key("endpoints"),
                    Step::Item(0),
                    Step::Key("lb_endpoints"),
                    Step::Item(0),
                    Step::Key("endpoint"),
                    Step::Key("address"),
                    Step::Key("socket_address"),
                ],
                t,
            )?;
            socket_text(sa)
        }
    };
    let mut diagram = vec![format!(
        "MCP client ──▶ {listen_text}{prefix} (this Envoy, mcp-policy) ──▶ {upstream_text} (the MCP server, cluster {MCP_CLUSTER})"
    )];
    let Yaml::Sequence(list) = clusters else {
        return Err(format!("{t}: static_resources.clusters is not a list"));
    };
    for given in set.clusters {
        if !named_clusters(policy)
            .iter()
            .any(|(_, name, _)| *name == given.0)
        {
            let names: Vec<String> = named_clusters(policy)
                .iter()
                .map(|(field, name, _)| format!("{name:?} ({field})"))
                .collect();
            return Err(format!(
                "--cluster {}: the policy names no cluster {:?}{}",
                given.0,
                given.0,
                if names.is_empty() {
                    " (it names none)".to_owned()
                } else {
                    format!(" (it names {})", names.join(", "))
                }
            ));
        }
    }
    let mut seen: Vec<(&str, Service)> = Vec::new();
    for (field, name, service) in named_clusters(policy) {
        if name == MCP_CLUSTER {
            return Err(format!(
                "{field} names {name:?}, the rendered MCP server's cluster; fix: name the cluster of {} otherwise",
                service.what
            ));
        }
        if let Some((_, other)) = seen.iter().find(|(n, _)| *n == name) {
            if other.grpc != service.grpc {
                return Err(format!(
                    "{field} names {name:?}, which another field names for a service spoken to over {}; fix: use two clusters",
                    if other.grpc { "gRPC" } else { "HTTP/1.1" }
                ));
            }
            continue;
        }
        seen.push((name, service));
        let address = set.clusters.iter().find(|(n, _)| n == name).map(|(_, e)| e);
        let mut c = map([
            ("name", s(name)),
            ("type", s("STATIC")),
            ("connect_timeout", s(service.connect_timeout)),
            (
                "load_assignment",
                map([
                    ("cluster_name", s(name)),
                    ("endpoints", Yaml::Sequence(Vec::new())),
                ]),
            ),
        ]);
        point(&mut c, name, address, set.ca_file, service.grpc);
        let path = format!("{clusters_path}[{}]", list.len());
        match address {
            Some(e) => {
                let what = format!("The policy's {field} ({name}): {}", service.what);
                comments.say(&path, &describe_upstream(&what, e, set.ca_file));
                diagram.push(format!("{field} ──▶ {} (cluster {name})", e.shown()));
            }
            None => {
                comments.say(
                    &path,
                    &format!(
                        "PLACEHOLDER: the policy's {field} names this cluster, for {}, but render was given no \
                         address for it. With no endpoint, every call that needs it is refused (the filter fails \
                         closed). Add the address under endpoints, or render again with --cluster {name}=HOST:PORT.",
                        service.what
                    ),
                );
                diagram.push(format!(
                    "{field} ──▶ (PLACEHOLDER: no address; cluster {name} below)"
                ));
                notes.push(format!(
                    "{field} names the cluster {name:?} ({}): it is a placeholder without an address, so every call that \
                     needs it is refused; render again with --cluster {name}=HOST:PORT",
                    service.what
                ));
            }
        }
        list.push(c);
    }
    diagram.push(format!("admin: {admin_text}"));
    Ok(Bootstrap {
        doc,
        comments,
        diagram,
        notes,
        wasm,
    })
}

/// The template's per-connection buffer limit, or twice `max_body_bytes` when that is more: an oversized body
/// must reach the filter (which answers 413 with a JSON-RPC error), not Envoy's own plain-text 413.
fn buffer_limit(listener: &Yaml, max_body_bytes: usize) -> u64 {
    let template = listener
        .get("per_connection_buffer_limit_bytes")
        .and_then(Yaml::as_u64)
        .unwrap_or(0);
    template.max(2 * max_body_bytes as u64)
}

/// The idle timeouts a call waiting for approval needs (its `timeout_ms` plus a minute), when Envoy's default
/// would end it first.
fn approval_idle_seconds(policy: &Policy) -> Option<u64> {
    let a = policy.approval.as_ref()?;
    let secs = a.timeout_ms.div_ceil(1000) + 60;
    (secs > ENVOY_STREAM_IDLE_SECONDS).then_some(secs)
}

/// Renames a cluster (and its load assignment).
fn rename(cluster: &mut Yaml, name: &str) {
    set_after(cluster, "", "name", s(name));
    if let Some(la) = cluster.get_mut("load_assignment") {
        set_after(la, "", "cluster_name", s(name));
    }
}

/// Points a cluster at `address` (none: no endpoint): DNS for a name, TLS for https, HTTP/2 for gRPC.
fn point(
    cluster: &mut Yaml,
    name: &str,
    address: Option<&Endpoint>,
    ca_file: Option<&str>,
    grpc: bool,
) {
    rename(cluster, name);
    let endpoints = match address {
        Some(e) => vec![map([(
            "lb_endpoints",
            Yaml::Sequence(vec![map([(
                "endpoint",
                map([(
                    "address",
                    map([("socket_address", socket(&e.host, e.port))]),
                )]),
            )])]),
        )])],
        None => Vec::new(),
    };
    if let Some(la) = cluster.get_mut("load_assignment") {
        set_after(la, "cluster_name", "endpoints", Yaml::Sequence(endpoints));
    }
    let by_name = address.is_some_and(|e| e.ip().is_none());
    set_after(
        cluster,
        "name",
        "type",
        s(if by_name { "STRICT_DNS" } else { "STATIC" }),
    );
    if by_name {
        set_after(cluster, "type", "dns_lookup_family", s("V4_PREFERRED"));
    }
    if grpc {
        set_after(
            cluster,
            "",
            "typed_extension_protocol_options",
            map([(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                map([
                    ("@type", s("type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions")),
                    ("explicit_http_config", map([("http2_protocol_options", Yaml::Mapping(Mapping::new()))])),
                ]),
            )]),
        );
    }
    if let Some(e) = address.filter(|e| e.tls) {
        set_after(cluster, "", "transport_socket", tls(e, ca_file, grpc));
    }
}

/// TLS to `e`: its certificate checked against the CA file and its name (or IP address).
fn tls(e: &Endpoint, ca_file: Option<&str>, grpc: bool) -> Yaml {
    let san = if e.ip().is_some() {
        "IP_ADDRESS"
    } else {
        "DNS"
    };
    let mut common = Mapping::new();
    if grpc {
        common.insert(s("alpn_protocols"), Yaml::Sequence(vec![s("h2")]));
    }
    common.insert(
        s("validation_context"),
        map([
            (
                "trusted_ca",
                map([("filename", s(ca_file.unwrap_or(DEFAULT_CA_FILE)))]),
            ),
            (
                "match_typed_subject_alt_names",
                Yaml::Sequence(vec![map([
                    ("san_type", s(san)),
                    ("matcher", map([("exact", s(&e.host))])),
                ])]),
            ),
        ]),
    );
    let mut ctx = Mapping::new();
    ctx.insert(
        s("@type"),
        s("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"),
    );
    if e.ip().is_none() {
        ctx.insert(s("sni"), s(&e.host));
    }
    ctx.insert(s("common_tls_context"), Yaml::Mapping(common));
    map([
        ("name", s("envoy.transport_sockets.tls")),
        ("typed_config", Yaml::Mapping(ctx)),
    ])
}

/// The comment above a cluster: what it is and how it is reached.
fn describe_upstream(what: &str, e: &Endpoint, ca_file: Option<&str>) -> String {
    let mut text = format!("{what}, at {}.", e.shown());
    if e.ip().is_none() {
        text.push_str(" Found by DNS (STRICT_DNS, IPv4 first).");
    }
    if e.tls {
        text.push_str(&format!(
            " TLS, the server's certificate checked against {} and its {}.",
            ca_file.unwrap_or(DEFAULT_CA_FILE),
            if e.ip().is_some() {
                "IP address"
            } else {
                "name"
            }
        ));
    }
    text
}

/// The LDS resource file: the bootstrap's listener, as Envoy's file-based dynamic resources read it.
/// `version_info` is the listener's SHA-256 (its first 12 hex digits), which Envoy shows as
/// `listener_manager.lds.version_text`.
pub fn lds(b: &Bootstrap) -> Result<(Yaml, Comments), String> {
    let mut doc = b.doc.clone();
    let (listener, path) = at(&mut doc, LISTENER, TEMPLATE_NAME)?;
    let Yaml::Mapping(fields) = listener.clone() else {
        return Err(format!("{TEMPLATE_NAME}: {path} is not a mapping"));
    };
    let mut resource = Mapping::new();
    resource.insert(
        s("@type"),
        s("type.googleapis.com/envoy.config.listener.v3.Listener"),
    );
    resource.extend(fields);
    let resource = Yaml::Mapping(resource);
    let version = mcp_policy::sha256::hex_digest(super::yaml::text(&resource)?.as_bytes());
    let version = version.get(..12).unwrap_or(&version).to_owned();
    let out = map([
        ("version_info", s(&version)),
        ("resources", Yaml::Sequence(vec![resource])),
    ]);
    let mut comments = b.comments.moved(&path, "resources[0]");
    comments.say(
        "version_info",
        "The listener's SHA-256 (first 12 hex digits): Envoy shows the version it serves as \
         listener_manager.lds.version_text (admin /stats).",
    );
    Ok((out, comments))
}

/// The bootstrap that serves the LDS file at `lds_path` (absolute) and re-reads it whenever a file is renamed
/// into its folder: envoy/envoy.yaml without its listener, with a node and dynamic resources.
pub fn lds_bootstrap(
    b: &Bootstrap,
    lds_path: &str,
    lds_dir: &str,
) -> Result<(Yaml, Comments), String> {
    let Yaml::Mapping(top) = &b.doc else {
        return Err(format!("{TEMPLATE_NAME} is not a mapping"));
    };
    let mut out = Mapping::new();
    out.insert(
        s("node"),
        map([("id", s("mcp-policy")), ("cluster", s("mcp-policy"))]),
    );
    for (k, v) in top {
        if k.as_str() == Some("static_resources") {
            out.insert(
                s("dynamic_resources"),
                map([(
                    "lds_config",
                    map([
                        ("resource_api_version", s("V3")),
                        (
                            "path_config_source",
                            map([
                                ("path", s(lds_path)),
                                ("watched_directory", map([("path", s(lds_dir))])),
                            ]),
                        ),
                    ]),
                )]),
            );
            let mut sr = v.clone();
            if let Yaml::Mapping(m) = &mut sr {
                m.shift_remove("listeners");
            }
            out.insert(k.clone(), sr);
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    let mut comments = b.comments.clone();
    comments.say(
        "node",
        "Dynamic resources need a node identity (any names).",
    );
    comments.say(
        "dynamic_resources",
        &format!(
            "The listener, with the filter and its policy, comes from {lds_path}. Envoy re-reads it whenever a file \
             is renamed into {lds_dir} (which is how render writes it, and how a Kubernetes ConfigMap mount \
             updates): new connections get the new policy; an invalid one is refused and the old one keeps serving."
        ),
    );
    Ok((Yaml::Mapping(out), comments))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("127.0.0.1:8001").unwrap();
        assert_eq!(
            e,
            Endpoint {
                host: "127.0.0.1".into(),
                port: 8001,
                tls: false,
                path: None
            }
        );
        assert_eq!(e.shown(), "127.0.0.1:8001");
        let e = Endpoint::parse("https://mcp.example.com/v1/mcp").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.tls),
            ("mcp.example.com", 443, true)
        );
        assert_eq!(e.path.as_deref(), Some("/v1/mcp"));
        assert_eq!(e.shown(), "https://mcp.example.com:443/v1/mcp");
        let e = Endpoint::parse("http://[::1]:8001").unwrap();
        assert_eq!((e.host.as_str(), e.path.as_deref()), ("::1", Some("/")));
        assert_eq!(e.shown(), "http://[::1]:8001/");
        assert_eq!(Endpoint::parse("[::1]:80").unwrap().host, "::1");
        assert_eq!(
            Endpoint::parse("approvals.mcp.svc:8002").unwrap().host,
            "approvals.mcp.svc"
        );
        for (bad, says) in [
            ("127.0.0.1", "HOST:PORT"),
            ("127.0.0.1:0", "1 to 65535"),
            ("127.0.0.1:x", "not a port"),
            ("a b:80", "neither an IP"),
            ("ftp://x/", "only http"),
            ("http://u:p@x/", "user name"),
            ("http://x/mcp?a=1", "query"),
        ] {
            let e = Endpoint::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(parse_cluster("approvals")
            .unwrap_err()
            .contains("NAME=HOST:PORT"));
        assert_eq!(parse_cluster("a=1.2.3.4:5").unwrap().0, "a");
        assert!(parse_bind("[::]:0").is_ok());
        assert!(parse_bind("localhost:1").is_err());
    }

    #[test]
    fn approval_waits_longer_than_envoy_idles_get_longer_timeouts() {
        let p = |ms: u64| {
            mcp_policy::policy::parse(
                format!(r#"{{"version":"1","approval":{{"cluster":"a","timeout_ms":{ms}}},"tools":{{"t":{{"action":"require_approval"}}}}}}"#)
                    .as_bytes(),
            )
            .unwrap()
        };
        assert_eq!(approval_idle_seconds(&p(120_000)), None);
        assert_eq!(approval_idle_seconds(&p(240_000)), None);
        assert_eq!(approval_idle_seconds(&p(240_001)), Some(301));
        assert_eq!(approval_idle_seconds(&p(300_000)), Some(360));
    }

    #[test]
    fn a_grpc_cluster_speaks_http2_and_tls_with_alpn() {
        let mut c = map([
            ("name", s("x")),
            ("load_assignment", map([("cluster_name", s("x"))])),
        ]);
        let e = Endpoint::parse("https://ratelimit.example.com:8081").unwrap();
        point(&mut c, "ratelimit", Some(&e), None, RATE_LIMIT_SERVICE.grpc);
        let text = super::super::yaml::text(&c).unwrap();
        for want in [
            "name: ratelimit\ntype: STRICT_DNS\ndns_lookup_family: V4_PREFERRED\n",
            "cluster_name: ratelimit\n  endpoints:\n",
            "http2_protocol_options: {}",
            "sni: ratelimit.example.com",
            "alpn_protocols:\n      - h2",
            "filename: /etc/ssl/certs/ca-certificates.crt",
            "san_type: DNS",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
    }
}
