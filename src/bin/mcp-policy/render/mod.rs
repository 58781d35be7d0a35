//! `mcp-policy render POLICY --format envoy|lds|wasmplugin|trafficextension`: the policy, validated, in a
//! configuration ready to run. Each format is a shipped file patched as a value (envoy/envoy.yaml, built in:
//! `envoy.rs`; envoy/istio/*.yaml: `istio.rs`), with that file's comments carried over (`yaml.rs`), so the
//! rendered configuration and the documented one cannot drift apart. What is written is read back as `check`
//! reads it before it is written: the same policy, able to run there.

mod envoy;
mod istio;
mod yaml;

use crate::check::{held_headers, read, Held};
use crate::extract::{extract, Host};
use crate::who;
use crate::Out;
use envoy::{Endpoint, Settings};
use mcp_policy::policy::{self, Policy};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

const LONG_ABOUT: &str = "\
Writes the policy in POLICY into a configuration ready to run, after validating it as the filter
will (an invalid policy: each error with its field and fix, nothing written):

  envoy             an Envoy bootstrap: envoy/envoy.yaml (held headers, FAIL_CLOSED, buffer limits
                    above max_body_bytes, stats tags, overload manager, ...) with the policy as the
                    plugin's configuration, the MCP server (--upstream) and a cluster for each
                    cluster the policy names (approval.cluster): at --cluster NAME=ADDRESS, or a
                    marked placeholder without an address (calls that need it are refused)
  lds               the same listener as an LDS resource file, which Envoy reloads without a restart
                    whenever render writes it again (a new file renamed over the old one);
                    --bootstrap FILE also writes the bootstrap that serves it
  wasmplugin        an Istio WasmPlugin (Istio 1.20+): envoy/istio/wasmplugin.yaml with the policy
                    as pluginConfig (written as JSON)
  trafficextension  the same as an Istio TrafficExtension (Istio 1.30+)

POLICY is a policy JSON file, or any file `check` reads that holds one policy ('-' reads standard
input). The envoy and lds outputs carry its text unchanged. Under Istio the policy must not hold
headers (a WasmPlugin cannot set allow_on_headers_stop_iteration): render writes
hold_headers: false when the policy does not say, and refuses hold_headers: true.

The configuration goes to FILE (--out: a new file renamed over FILE, so Envoy never reads half of
it) or standard output; notes (placeholders, what the deployment must add) go to standard error.

The edit loop: edit POLICY, `mcp-policy check POLICY`, run the same render again, then restart
Envoy (envoy), let it reload (lds), or kubectl apply (wasmplugin, trafficextension).";

const EXIT_STATUS: &str = "\
exit status: 0 written; 1 an invalid policy, one that cannot run in FORMAT, an unreadable POLICY,
or FILE could not be written; 2 usage error";

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Envoy,
    Lds,
    Wasmplugin,
    Trafficextension,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Envoy => "envoy",
            Format::Lds => "lds",
            Format::Wasmplugin => "wasmplugin",
            Format::Trafficextension => "trafficextension",
        }
    }

    fn istio(self) -> Option<istio::Kind> {
        match self {
            Format::Envoy | Format::Lds => None,
            Format::Wasmplugin => Some(istio::Kind::WasmPlugin),
            Format::Trafficextension => Some(istio::Kind::TrafficExtension),
        }
    }
}

const ENVOY: &str = "Envoy (--format envoy, lds)";
const ISTIO: &str = "Istio (--format wasmplugin, trafficextension)";

/// Write the policy into a ready Envoy bootstrap, LDS file, Istio WasmPlugin or TrafficExtension
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT, after_help = EXIT_STATUS)]
pub struct Options {
    /// Policy JSON, or an Envoy or Istio file holding one policy; '-' reads standard input
    #[arg(value_name = "POLICY")]
    pub file: String,
    /// What to write
    #[arg(long, value_enum)]
    pub format: Format,
    /// Write to FILE (a new file renamed over it) instead of standard output
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<String>,

    /// The MCP server: its MCP endpoint URL (the path becomes the route's prefix) or HOST:PORT
    /// [default: envoy/envoy.yaml's, 127.0.0.1:8001]
    #[arg(long, value_name = "URL|HOST:PORT", value_parser = Endpoint::parse, help_heading = ENVOY)]
    pub upstream: Option<Endpoint>,
    /// Where Envoy takes MCP clients [default: 127.0.0.1:10000]
    #[arg(long, value_name = "IP:PORT", value_parser = envoy::parse_bind, help_heading = ENVOY)]
    pub listen: Option<SocketAddr>,
    /// Envoy's admin interface (stats, /stats/prometheus) [default: 127.0.0.1:9901]
    #[arg(long, value_name = "IP:PORT", value_parser = envoy::parse_bind, help_heading = ENVOY)]
    pub admin: Option<SocketAddr>,
    /// The filter module; a relative path is read from Envoy's working directory
    /// [default: target/wasm32-wasip1/release/mcp_policy.wasm]
    #[arg(long, value_name = "PATH", help_heading = ENVOY)]
    pub wasm: Option<String>,
    /// The address of a cluster the policy names, e.g. approvals=127.0.0.1:8002 (repeatable); a cluster
    /// without one is a placeholder
    #[arg(long = "cluster", value_name = "NAME=URL|HOST:PORT", value_parser = envoy::parse_cluster, help_heading = ENVOY)]
    pub clusters: Vec<(String, Endpoint)>,
    /// CA certificates for https upstreams [default: /etc/ssl/certs/ca-certificates.crt]
    #[arg(long, value_name = "FILE", help_heading = ENVOY)]
    pub ca_file: Option<String>,
    /// With --format lds: also write the bootstrap that serves the LDS file (--out) and reloads it
    #[arg(long, value_name = "FILE", help_heading = ENVOY)]
    pub bootstrap: Option<String>,

    /// The resource's name [default: mcp-policy]
    #[arg(long, value_name = "NAME", value_parser = k8s_name, help_heading = ISTIO)]
    pub name: Option<String>,
    /// The MCP server's namespace [default: mcp]
    #[arg(long, value_name = "NAMESPACE", value_parser = k8s_name, help_heading = ISTIO)]
    pub namespace: Option<String>,
    /// A label of the MCP server's pods (repeatable) [default: app=mlflow-mcp]
    #[arg(long, value_name = "KEY=VALUE", value_parser = label, help_heading = ISTIO, conflicts_with = "service")]
    pub selector: Vec<(String, String)>,
    /// Attach to this Service's waypoint (ambient mode) with targetRefs instead of a selector
    #[arg(long, value_name = "NAME", value_parser = k8s_name, help_heading = ISTIO)]
    pub service: Option<String>,
    /// The MCP server's port [default: 8001]
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..), help_heading = ISTIO)]
    pub port: Option<u16>,
    /// The filter's OCI image (make oci, pushed), e.g. oci://registry.example.com/mcp-policy:0.1.0
    #[arg(long, value_name = "URL", value_parser = image, help_heading = ISTIO)]
    pub image: Option<String>,
    /// Pin the image: the digest of the image Istio resolves (64 hex digits)
    #[arg(long, value_name = "DIGEST", value_parser = digest, help_heading = ISTIO)]
    pub sha256: Option<String>,
}

/// A Kubernetes name (DNS-1123: lower-case letters, digits, '-' and '.').
fn k8s_name(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(v.to_owned())
    } else {
        Err("a Kubernetes name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit".into())
    }
}

fn label(v: &str) -> Result<(String, String), String> {
    match v.split_once('=') {
        Some((k, val)) if !k.is_empty() => Ok((k.to_owned(), val.to_owned())),
        _ => Err("write KEY=VALUE, e.g. app=my-mcp-server".into()),
    }
}

fn image(v: &str) -> Result<String, String> {
    if ["oci://", "https://", "http://", "file://"]
        .iter()
        .any(|p| v.starts_with(p))
    {
        Ok(v.to_owned())
    } else {
        Err("Istio fetches oci://, https://, http:// or file:// URLs, e.g. oci://registry.example.com/mcp-policy:0.1.0".into())
    }
}

fn digest(v: &str) -> Result<String, String> {
    let hex = v.strip_prefix("sha256:").unwrap_or(v);
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err("64 hex digits (optionally after sha256:)".into())
    }
}

impl Options {
    /// Checks across options: each applies to some formats only.
    pub fn validate(&self) -> Result<(), String> {
        let envoy_only = [
            ("--upstream", self.upstream.is_some()),
            ("--listen", self.listen.is_some()),
            ("--admin", self.admin.is_some()),
            ("--wasm", self.wasm.is_some()),
            ("--cluster", !self.clusters.is_empty()),
            ("--ca-file", self.ca_file.is_some()),
        ];
        let istio_only = [
            ("--name", self.name.is_some()),
            ("--namespace", self.namespace.is_some()),
            ("--selector", !self.selector.is_empty()),
            ("--service", self.service.is_some()),
            ("--port", self.port.is_some()),
            ("--image", self.image.is_some()),
            ("--sha256", self.sha256.is_some()),
        ];
        let (wrong, applies) = match self.format.istio() {
            None => (&istio_only[..], "--format wasmplugin and trafficextension"),
            Some(_) => (&envoy_only[..], "--format envoy and lds"),
        };
        if let Some((flag, _)) = wrong.iter().find(|(_, given)| *given) {
            return Err(format!(
                "{flag} applies to {applies}, not to --format {}",
                self.format.name()
            ));
        }
        if let Some(boot) = &self.bootstrap {
            if self.format != Format::Lds {
                return Err("--bootstrap applies to --format lds".into());
            }
            match &self.out {
                None => {
                    return Err(
                        "--bootstrap needs --out: the bootstrap names the LDS file by its path"
                            .into(),
                    )
                }
                Some(out) if same_file(out, boot) => {
                    return Err("--bootstrap and --out must be two files".into())
                }
                Some(_) => {}
            }
        }
        for (i, (name, _)) in self.clusters.iter().enumerate() {
            if self.clusters.iter().skip(i + 1).any(|(n, _)| n == name) {
                return Err(format!("--cluster {name} is given twice"));
            }
        }
        Ok(())
    }
}

fn same_file(a: &str, b: &str) -> bool {
    let abs = |p: &str| std::path::absolute(p).ok();
    a == b || (abs(a).is_some() && abs(a) == abs(b))
}

/// The command line as a shell takes it (for the header, which says how to render again).
fn command_line() -> String {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| shell_word(&a.to_string_lossy()))
        .collect();
    format!("mcp-policy {}", args.join(" "))
}

pub fn shell_word(w: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !w.is_empty() && w.chars().all(plain) {
        w.to_owned()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// What is rendered: files (`None`: standard output) with their text, and what the operator is told.
struct Rendered {
    files: Vec<(Option<String>, String)>,
    notes: Vec<String>,
}

/// The input: the policy's text, as found, and its validated form.
struct Input<'a> {
    /// The file name as shown (`(stdin)` for '-').
    name: &'a str,
    text: String,
    policy: Policy,
    command: String,
}

pub fn run(o: &Options, out: &mut Out) -> ExitCode {
    let name = if o.file == "-" {
        "(stdin)"
    } else {
        o.file.as_str()
    };
    let input = match load(o, name) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    for r in who::remarks(&input.policy) {
        match r {
            who::Remark::Warning(w) => eprintln!("render: warning: {w}"),
            who::Remark::Note(n) => eprintln!("render: note: {n}"),
        }
    }
    let rendered = match render(o, &input) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("render: {name}: {e}");
            return ExitCode::from(1);
        }
    };
    for n in &rendered.notes {
        eprintln!("render: note: {n}");
    }
    for (file, text) in &rendered.files {
        match file {
            None => out.line(format_args!("{}", text.trim_end())),
            Some(path) => {
                if std::fs::read_to_string(path).is_ok_and(|old| old == *text) {
                    eprintln!("render: {path} unchanged");
                    continue;
                }
                if let Err(e) = write_atomic(path, text) {
                    eprintln!("render: {e}");
                    return ExitCode::from(1);
                }
                eprintln!("render: wrote {path}");
            }
        }
    }
    ExitCode::SUCCESS
}

/// Reads POLICY: exactly one policy, valid, as UTF-8 text.
fn load<'a>(o: &Options, name: &'a str) -> Result<Input<'a>, String> {
    let found = read(&o.file)
        .and_then(|bytes| extract(name, &bytes))
        .map_err(|e| format!("{name}: {e}"))?;
    let f = match found.as_slice() {
        [f] => f,
        [] => return Err(format!("{name}: no mcp-policy configuration found (no policy JSON, Envoy HTTP Wasm filter, Istio WasmPlugin or TrafficExtension)")),
        many => return Err(format!("{name}: {} policies found; render takes one (write it to a file of its own)", many.len())),
    };
    let label = if f.location.is_empty() {
        name.to_owned()
    } else {
        format!("{name}: {}", f.location)
    };
    let bytes = f.policy.as_ref().map_err(|e| format!("{label}: {e}"))?;
    let policy = policy::parse(bytes).map_err(|errs| format!("{label}: {errs}"))?;
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| format!("{label}: the policy is not UTF-8 text"))?;
    Ok(Input {
        name,
        text,
        policy,
        command: command_line(),
    })
}

fn render(o: &Options, input: &Input) -> Result<Rendered, String> {
    match o.format.istio() {
        Some(kind) => render_istio(o, input, kind),
        None => render_envoy(o, input),
    }
}

fn render_envoy(o: &Options, input: &Input) -> Result<Rendered, String> {
    let set = Settings {
        upstream: o.upstream.as_ref(),
        listen: o.listen,
        admin: o.admin,
        wasm: o.wasm.as_deref(),
        clusters: &o.clusters,
        ca_file: o.ca_file.as_deref(),
    };
    let b = envoy::bootstrap(&input.text, &input.policy, &set)?;
    let mut notes = b.notes.clone();
    notes.extend(envoy_notes(&input.policy, &b.wasm));
    let here = o.out.as_deref().unwrap_or("FILE");
    let mut files = Vec::new();
    match o.format {
        Format::Lds => {
            let (doc, mut comments) = envoy::lds(&b)?;
            comments.header = header_lds(input, &b, here);
            let text = finish(&doc, &comments)?;
            verify(&text, Some(input.text.as_bytes()), None)?;
            if let (Some(boot), Some(lds_path)) = (&o.bootstrap, &o.out) {
                let abs = std::path::absolute(lds_path).map_err(|e| format!("{lds_path}: {e}"))?;
                let dir = abs.parent().unwrap_or(Path::new("/"));
                let (doc, mut comments) =
                    envoy::lds_bootstrap(&b, &abs.to_string_lossy(), &dir.to_string_lossy())?;
                comments.header = header_lds_bootstrap(input, &b, boot, lds_path);
                let boot_text = finish(&doc, &comments)?;
                if std::fs::read_to_string(boot).is_ok_and(|old| old != boot_text) {
                    notes.push(format!(
                        "{boot} changes: Envoy reads its bootstrap only when it starts, so restart it for the change \
                         (a new cluster, the admin address, ...) to take effect; the listener in {lds_path} is reloaded on its own"
                    ));
                }
                // The bootstrap first: when Envoy sees the listener's rename, what it refers to is in place.
                files.push((Some(boot.clone()), boot_text));
            } else {
                notes.push(
                    "serve this file with a bootstrap whose dynamic_resources.lds_config reads it and watches its folder \
                     (render --bootstrap FILE writes one; envoy/examples/live-reload/envoy.yaml is an example)"
                        .into(),
                );
            }
            files.push((o.out.clone(), text));
        }
        _ => {
            let mut comments = b.comments.clone();
            comments.header = header_envoy(input, &b, here);
            let text = finish(&b.doc, &comments)?;
            verify(&text, Some(input.text.as_bytes()), None)?;
            files.push((o.out.clone(), text));
        }
    }
    Ok(Rendered { files, notes })
}

fn render_istio(o: &Options, input: &Input, kind: istio::Kind) -> Result<Rendered, String> {
    let set = istio::Settings {
        name: o.name.as_deref(),
        namespace: o.namespace.as_deref(),
        selector: &o.selector,
        service: o.service.as_deref(),
        port: o.port,
        image: o.image.as_deref(),
        sha256: o.sha256.as_deref(),
    };
    let here = o.out.as_deref().unwrap_or("FILE");
    let m = istio::manifest(
        kind,
        input.text.as_bytes(),
        &set,
        header_istio(input, kind, here),
    )?;
    verify(&m.text, None, Some(&m.policy))?;
    Ok(Rendered {
        files: vec![(o.out.clone(), m.text)],
        notes: m.notes,
    })
}

/// The YAML text of `doc` with the comments.
fn finish(doc: &serde_yaml_ng::Value, comments: &yaml::Comments) -> Result<String, String> {
    Ok(comments.apply(&yaml::text(doc)?).0)
}

/// Reads the rendered text back as `check` does: exactly one policy, the given one (byte for byte, or as JSON),
/// able to run where it is.
fn verify(
    text: &str,
    bytes: Option<&[u8]>,
    json: Option<&serde_json::Value>,
) -> Result<(), String> {
    let bug = |why: String| {
        format!("the rendered configuration does not pass its own check ({why}): a bug in render, please report it")
    };
    let found = extract("rendered.yaml", text.as_bytes()).map_err(bug)?;
    let [f] = found.as_slice() else {
        return Err(bug(format!("{} policies found in it", found.len())));
    };
    let got = f.policy.as_ref().map_err(|e| bug(e.clone()))?;
    if bytes.is_some_and(|b| b != got.as_slice()) {
        return Err(bug("the policy's text changed".into()));
    }
    if json.is_some_and(|j| {
        serde_json::from_slice::<serde_json::Value>(got)
            .ok()
            .as_ref()
            != Some(j)
    }) {
        return Err(bug("the policy changed".into()));
    }
    let p = policy::parse(got).map_err(|e| bug(e.to_string()))?;
    match held_headers(p.hold_headers, &f.host) {
        Held::Hangs(e) => Err(bug(e)),
        Held::Fine | Held::Note(_) => Ok(()),
    }
}

/// What the operator must know about a policy rendered for Envoy: the module's path, held headers, callers.
fn envoy_notes(p: &Policy, wasm: &str) -> Vec<String> {
    let mut notes = Vec::new();
    if !Path::new(wasm).exists() {
        notes.push(format!(
            "the module {wasm} is not there (from here): Envoy reads it from its working directory{}; build it (make build), \
             or render with --wasm PATH",
            if Path::new(wasm).is_relative() { " (the repository root for the default path)" } else { "" }
        ));
    }
    let host = Host::EnvoyWasm {
        stop_iteration: Some(true),
        field: "the rendered filter's allow_on_headers_stop_iteration".into(),
    };
    if let Held::Note(n) | Held::Hangs(n) = held_headers(p.hold_headers, &host) {
        notes.push(n);
    }
    if let Some(c) = &p.callers {
        let then = if c.required {
            "until then every request is refused (HTTP 401, callers.required)"
        } else {
            "until then every caller is anonymous"
        };
        if let Some(j) = &c.jwt {
            notes.push(format!(
                "callers.jwt reads the JWT payload that envoy.filters.http.jwt_authn verified (payload_in_metadata {:?}), \
                 and the rendered bootstrap has no jwt_authn filter: add one before mcp-policy (envoy/examples/callers-jwt.yaml); {then}",
                j.metadata
            ));
        }
        if c.peer_certificate {
            notes.push(format!(
                "callers.peer_certificate reads the client certificate the listener verified, and the rendered listener has no \
                 TLS: add a transport_socket requiring client certificates (envoy/examples/callers-mtls.yaml); {then}"
            ));
        }
    }
    notes
}

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// A header: two lines saying what the file is, the render command, the diagram, then `tail`.
fn framed<const N: usize>(
    intro: [String; 2],
    i: &Input,
    diagram: &[String],
    tail: [String; N],
) -> Vec<String> {
    let mut h = Vec::from(intro);
    h.push(format!("#   {}", i.command));
    h.push("#".into());
    h.extend(diagram.iter().map(|l| format!("#   {l}")));
    h.push("#".into());
    h.extend(tail);
    h
}

fn module_line(wasm: &str) -> String {
    if Path::new(wasm).is_relative() {
        format!("# (the module, {wasm}, is read from Envoy's working directory: the repository root after `make build`)")
    } else {
        format!("# (the module: {wasm})")
    }
}

fn header_envoy(i: &Input, b: &envoy::Bootstrap, file: &str) -> Vec<String> {
    framed(
        [
        format!("# Envoy bootstrap: mcp-policy in front of an MCP server. Written by `mcp-policy render` (mcp-policy {})", version()),
        format!("# from {} (its comments below explain each setting) and the policy in {}:", envoy::TEMPLATE_NAME, i.name),
        ],
        i,
        &b.diagram,
        [
        format!("# Run:  envoy -c {file}"),
        module_line(&b.wasm),
        format!("# To change the policy: edit {}, check it (mcp-policy check {}), run the render command above again", i.name, i.name),
        "# (it refuses an invalid policy, with each error's field and fix) and restart Envoy.".into(),
        ],
    )
}

fn header_lds(i: &Input, b: &envoy::Bootstrap, file: &str) -> Vec<String> {
    framed(
        [
        format!("# Envoy LDS resource: the listener with mcp-policy and its policy. Written by `mcp-policy render` (mcp-policy {})", version()),
        format!("# from {}'s listener (its comments below explain each setting) and the policy in {}:", envoy::TEMPLATE_NAME, i.name),
        ],
        i,
        &b.diagram,
        [
        format!("# Served by a bootstrap whose dynamic_resources read {file} and watch its folder (render --bootstrap writes one)."),
        format!("# To change the policy without restarting Envoy: edit {}, then run the render command above again. It refuses", i.name),
        "# an invalid policy (each error's field and fix); a valid one is written beside this file and renamed over it,".into(),
        "# and Envoy applies the new listener to new connections (README, \"Live policy reload\").".into(),
        ],
    )
}

fn header_lds_bootstrap(i: &Input, b: &envoy::Bootstrap, file: &str, lds: &str) -> Vec<String> {
    framed(
        [
        format!("# Envoy bootstrap for mcp-policy whose listener, with the policy, is in {lds} and reloaded whenever it changes."),
        format!("# Written by `mcp-policy render` (mcp-policy {}) from {} (its comments below explain each setting):", version(), envoy::TEMPLATE_NAME),
        ],
        i,
        &b.diagram,
        [
        format!("# Run:  envoy -c {file}"),
        module_line(&b.wasm),
        format!("# To change the policy: edit {}, then run the render command above again: {lds} is replaced and reloaded.", i.name),
        "# Envoy reads this file only when it starts: restart it when this file changes (render says so).".into(),
        ],
    )
}

fn header_istio(i: &Input, kind: istio::Kind, file: &str) -> Vec<String> {
    vec![
        format!("# mcp-policy under Istio {} or later: a {}, written by `mcp-policy render` (mcp-policy {})", kind.istio(), kind.name(), version()),
        format!("# from {} (docs/istio.md explains each field) and the policy in {}:", kind.template_name(), i.name),
        format!("#   {}", i.command),
        "#".into(),
        format!("#   kubectl apply -f {file}"),
        "#".into(),
        "# Before applying: push the filter's OCI image (make oci) and render with --image oci://REGISTRY/mcp-policy:TAG and".into(),
        "# --sha256 DIGEST (the digest of the image Istio resolves); set the namespace (--namespace), the MCP server's pod".into(),
        "# labels (--selector KEY=VALUE) or Service (--service, for an ambient waypoint) and its port (--port). An image Istio".into(),
        "# cannot fetch makes every request fail with 403 \"RBAC: access denied\" (docs/istio.md, \"When something fails\").".into(),
        format!("# To change the policy: edit {}, check it (mcp-policy check {}), run the render command above again, then", i.name, i.name),
        "# kubectl apply.".into(),
    ]
}

/// Writes `text` to a new file beside `path` and renames it over `path`: whoever reads `path` (an Envoy
/// watching its folder) sees the old file or the new one, never half of one.
fn write_atomic(path: &str, text: &str) -> Result<(), String> {
    use std::io::Write;
    let p = Path::new(path);
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file = p
        .file_name()
        .ok_or_else(|| format!("cannot write {path}: not a file name"))?;
    let tmp = dir.join(format!(
        ".{}.render-{}",
        file.to_string_lossy(),
        std::process::id()
    ));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, p)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(|e| format!("cannot write {path}: {e}"))
}

#[cfg(test)]
mod tests;
