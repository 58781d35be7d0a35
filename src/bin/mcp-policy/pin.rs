//! `mcp-policy pin URL POLICY`: refresh the pins of a policy from a live server's tools, showing the reviewer
//! what changed as a diff of the definitions. Also what `scan --pin` writes pins with.
//!
//! A pin is a hash (`mcp_policy::pins`): the policy cannot show what a changed tool used to say. So the
//! definitions that were pinned are kept beside the policy, in a definitions file (`policy.tools.json` for
//! `policy.json`: each tool's canonical definition, one key a line, for people and for `git diff`). `pin`
//! diffs the server's definitions against it; when the file is missing, or its entry is not the one the pin
//! was taken from, it says so and shows the new definition whole.
//!
//! The policy file is edited in place: only the value of `pins` changes (or a `pins` member is added at the
//! end), the rest of the file stays as written. JSON policy files only (not the policy inside an Envoy YAML).

use crate::client::{excerpt, fetch, Endpoint};
use crate::pretty::pretty;
use crate::Out;
use mcp_policy::names;
use mcp_policy::pins::{canonical_tool, short, tool_pin};
use mcp_policy::policy::{self, Unpinned};
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::ExitCode;

const LONG_ABOUT: &str = "\
Lists the tools of a live MCP server (as scan does), computes each tool's pin (SHA-256 of the RFC 8785
canonical form of its definition, without _meta) and writes them into the `pins` of POLICY, a policy JSON
file. Before writing, it prints what changed since the last pins: for each changed tool a diff of its
definition (the description the model reads, the schemas, the annotations), each new tool in full, and
each tool no longer listed. Review that output: it is what you approve.

The definitions that were pinned are kept in a definitions file beside the policy (--definitions; by
default POLICY with .tools.json for .json), which the next run diffs against. Only `pins` changes in
POLICY; the rest of the file stays as written. With --check nothing is written: the exit status says
whether the pins are current (CI can run it against a staging server).";

const EXIT_STATUS: &str = "\
exit status: 0 the pins were written (with --check: they are current); 1 the server could not be listed,
POLICY could not be read or written, or (with --check) a pin is not current; 2 usage error";

/// Refresh the pins of a policy from a live server, showing what changed
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT, after_help = EXIT_STATUS)]
pub struct Options {
    #[command(flatten)]
    pub server: Endpoint,
    /// The policy JSON file whose pins are refreshed
    #[arg(value_name = "POLICY")]
    pub policy: String,
    /// Print what changed and write nothing; exit 1 when a pin is not current
    #[arg(long)]
    pub check: bool,
    /// The definitions file (default: POLICY with .tools.json instead of .json)
    #[arg(long, value_name = "FILE")]
    pub definitions: Option<String>,
}

/// A listed tool and its pin.
#[derive(Debug, Clone)]
pub struct Pinned {
    pub name: String,
    pub pin: String,
    /// The canonical form hashed (the tool without `_meta`).
    pub canonical: String,
}

/// The pins of a server's tools (each entry as the server wrote it), by name; and why some have none.
pub fn pin_tools(tools: &[Box<RawValue>]) -> (Vec<Pinned>, Vec<String>) {
    #[derive(serde::Deserialize)]
    struct Named {
        name: Option<Value>,
    }
    let mut pinned: BTreeMap<String, Pinned> = BTreeMap::new();
    let mut skipped = Vec::new();
    for raw in tools {
        let name = serde_json::from_str::<Named>(raw.get())
            .ok()
            .and_then(|n| n.name)
            .and_then(|n| n.as_str().map(str::to_owned));
        let Some(name) = name else {
            skipped.push(format!(
                "a tools/list entry without a string name: {}",
                excerpt(raw.get())
            ));
            continue;
        };
        let shown = Value::String(name.clone());
        let why = if name.is_empty() {
            Some("its name is empty".to_owned())
        } else if let Some(m) = names::malformed(&name) {
            Some(format!(
                "its name {m} (mcp-policy refuses every call with such a name)"
            ))
        } else if policy::is_glob(&name) {
            Some("its name has '*' or '?', which policy keys read as a glob".to_owned())
        } else if pinned.contains_key(&name) {
            Some("listed twice by the server; the first entry is pinned".to_owned())
        } else {
            None
        };
        if let Some(why) = why {
            skipped.push(format!("{shown}: {why}"));
            continue;
        }
        let canonical = canonical_tool(raw.get());
        match (tool_pin(raw.get()), canonical) {
            (Ok(pin), Ok(canonical)) => {
                pinned.insert(
                    name.clone(),
                    Pinned {
                        name,
                        pin,
                        canonical,
                    },
                );
            }
            (Err(e), _) | (_, Err(e)) => {
                skipped.push(format!("{shown}: its definition cannot be pinned ({e})"))
            }
        }
    }
    (pinned.into_values().collect(), skipped)
}

/// The value of `pins` for `pinned`, laid out for a policy file whose `pins` key is indented by `indent`.
pub fn pins_value(pinned: &[Pinned], unpinned: Unpinned, indent: &str) -> String {
    let word = match unpinned {
        Unpinned::Allow => "allow",
        Unpinned::Hide => "hide",
    };
    let mut text = format!("{{\n{indent}  \"unpinned\": \"{word}\",\n{indent}  \"tools\": {{");
    for (i, p) in pinned.iter().enumerate() {
        text.push_str(if i == 0 { "\n" } else { ",\n" });
        text.push_str(&format!(
            "{indent}    {}: \"{}\"",
            Value::String(p.name.clone()),
            p.pin
        ));
    }
    if pinned.is_empty() {
        text.push_str("}\n");
    } else {
        text.push_str(&format!("\n{indent}  }}\n"));
    }
    text.push_str(&format!("{indent}}}"));
    text
}

/// The definitions file for `pinned`: an object tool name → canonical definition, laid out for people.
pub fn definitions_text(pinned: &[Pinned]) -> String {
    let members: Vec<String> = pinned
        .iter()
        .map(|p| format!("{}:{}", Value::String(p.name.clone()), p.canonical))
        .collect();
    let mut text = pretty(&format!("{{{}}}", members.join(",")));
    text.push('\n');
    text
}

/// `n tools`, or `1 tool`.
pub fn tools(n: usize) -> String {
    format!("{n} tool{}", if n == 1 { "" } else { "s" })
}

/// Where the definitions of `policy` are kept by default: `policy.json` → `policy.tools.json`.
pub fn definitions_path(policy: &str) -> String {
    match policy.strip_suffix(".json") {
        Some(stem) => format!("{stem}.tools.json"),
        None => format!("{policy}.tools.json"),
    }
}

/// `text` (a policy JSON file) with `pins` set to `value`: the value replaced where there is one, else a
/// member added after the last one. `Err` when `text` is not a JSON object.
pub fn with_pins(text: &str, value: &str) -> Result<String, String> {
    let members: BTreeMap<String, &RawValue> =
        serde_json::from_str(text).map_err(|e| format!("not a JSON object ({e})"))?;
    if let Some(old) = members.get("pins") {
        // The value is a slice of `text`: where it starts is how far its pointer is from the text's.
        let start = old.get().as_ptr() as usize - text.as_ptr() as usize;
        let end = start + old.get().len();
        let line = text
            .get(..start)
            .and_then(|t| t.rfind('\n'))
            .map_or(0, |i| i + 1);
        let indent: String = text
            .get(line..start)
            .unwrap_or("")
            .chars()
            .take_while(|c| *c == ' ' || *c == '\t')
            .collect();
        let value = reindent(value, &indent);
        return Ok(format!(
            "{}{value}{}",
            text.get(..start).unwrap_or(""),
            text.get(end..).unwrap_or("")
        ));
    }
    let close = text.rfind('}').ok_or("not a JSON object")?;
    let last = text
        .get(..close)
        .map(|t| t.trim_end().len())
        .ok_or("not a JSON object")?;
    let comma = if members.is_empty() { "" } else { "," };
    Ok(format!(
        "{}{comma}\n  \"pins\": {}\n{}",
        text.get(..last).unwrap_or(""),
        reindent(value, "  "),
        text.get(close..).unwrap_or("")
    ))
}

/// `value` (laid out for the indentation `""`) laid out for `indent`.
fn reindent(value: &str, indent: &str) -> String {
    value.replace('\n', &format!("\n{indent}"))
}

/// What changed between the pins of a policy and a server's tools.
#[derive(Debug, Default)]
pub struct Changes {
    pub unchanged: Vec<String>,
    /// (name, pin before, pin now)
    pub changed: Vec<(String, String, String)>,
    pub added: Vec<String>,
    pub gone: Vec<String>,
}

impl Changes {
    pub fn any(&self) -> bool {
        !(self.changed.is_empty() && self.added.is_empty() && self.gone.is_empty())
    }
}

/// Compares the pins of a policy (`before`: name, pin) with the pins of the listed tools.
pub fn compare<'a>(before: impl Iterator<Item = (&'a str, &'a str)>, now: &[Pinned]) -> Changes {
    let before: BTreeMap<&str, &str> = before.collect();
    let mut c = Changes::default();
    for p in now {
        match before.get(p.name.as_str()) {
            Some(old) if *old == p.pin => c.unchanged.push(p.name.clone()),
            Some(old) => c
                .changed
                .push((p.name.clone(), (*old).to_owned(), p.pin.clone())),
            None => c.added.push(p.name.clone()),
        }
    }
    c.gone = before
        .keys()
        .filter(|n| !now.iter().any(|p| p.name == **n))
        .map(|n| (*n).to_owned())
        .collect();
    c
}

/// The definitions a definitions file holds (tool name → its text as written), when it can be read.
fn read_definitions(path: &str) -> Result<BTreeMap<String, Box<RawValue>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("not a JSON object of definitions ({e})"))
}

/// The report of `changes` for people: one line per tool that changed, appeared or went, and the definitions.
fn report(
    changes: &Changes,
    now: &[Pinned],
    before: Option<&BTreeMap<String, Box<RawValue>>>,
    defs_path: &str,
    out: &mut Out,
) {
    let def_now = |name: &str| {
        now.iter()
            .find(|p| p.name == name)
            .map(|p| pretty(&p.canonical))
            .unwrap_or_default()
    };
    for (name, old, new) in &changes.changed {
        out.line(format_args!(
            "changed: {name}  {} -> {}",
            short(old),
            short(new)
        ));
        // The definition pinned before, if the definitions file has the one the old pin was taken from.
        let pinned_before = before
            .and_then(|b| b.get(name))
            .filter(|raw| tool_pin(raw.get()).as_deref() == Ok(old.as_str()))
            .and_then(|raw| canonical_tool(raw.get()).ok());
        match pinned_before {
            Some(canonical) => {
                let (a, b) = (pretty(&canonical) + "\n", def_now(name) + "\n");
                let diff = similar::TextDiff::from_lines(&a, &b);
                let text = diff
                    .unified_diff()
                    .context_radius(3)
                    .header(&format!("{name} (pinned)"), &format!("{name} (now)"))
                    .to_string();
                out.line(format_args!("{}", text.trim_end()));
            }
            None => {
                out.line(format_args!(
                    "  (the definition pinned before is not in {defs_path}; the definition now, whole:)"
                ));
                out.line(format_args!("{}", def_now(name)));
            }
        }
    }
    for name in &changes.added {
        let pin = now.iter().find(|p| &p.name == name).map(|p| p.pin.as_str());
        out.line(format_args!("new: {name}  {}", short(pin.unwrap_or(""))));
        out.line(format_args!("{}", def_now(name)));
    }
    for name in &changes.gone {
        out.line(format_args!(
            "gone: {name} (no longer listed; its pin is removed)"
        ));
    }
}

pub fn run(o: &Options, out: &mut Out) -> ExitCode {
    let fail = |m: String| {
        eprintln!("pin: {m}");
        ExitCode::from(1)
    };
    let text = match std::fs::read_to_string(&o.policy) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot read {}: {e}", o.policy)),
    };
    let current = match policy::parse(text.as_bytes()) {
        Ok(p) => p,
        Err(e) => {
            return fail(format!(
                "{} is not a valid policy JSON file (pin edits policy JSON files only): {e}",
                o.policy
            ))
        }
    };
    let server = match fetch(&o.server, "pin") {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let (now, skipped) = pin_tools(&server.tools);
    let defs_path = o
        .definitions
        .clone()
        .unwrap_or_else(|| definitions_path(&o.policy));
    let before = read_definitions(&defs_path);
    let old_pins = current.pins.as_ref();
    let changes = compare(old_pins.into_iter().flat_map(|p| p.iter()), &now);
    eprintln!(
        "pin: {}: {} (protocol {}), {}",
        o.server.url,
        server.name,
        server.protocol,
        tools(server.tools.len())
    );
    for s in &skipped {
        eprintln!("pin: not pinned: {s}");
    }
    if let (Err(e), true) = (&before, changes.any()) {
        eprintln!("pin: no earlier definitions to compare with ({defs_path}: {e})");
    }
    report(&changes, &now, before.as_ref().ok(), &defs_path, out);
    out.line(format_args!(
        "{} unchanged, {} changed, {} new, {} gone",
        changes.unchanged.len(),
        changes.changed.len(),
        changes.added.len(),
        changes.gone.len()
    ));
    // The definitions file is rewritten when it is missing or stale even if no pin changed.
    let defs = definitions_text(&now);
    let defs_current = std::fs::read_to_string(&defs_path).is_ok_and(|d| d == defs);
    if o.check {
        return if changes.any() {
            eprintln!("pin: the pins of {} are not current", o.policy);
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        };
    }
    let unpinned = old_pins.map_or(Unpinned::Hide, |p| p.unpinned);
    if changes.any() || old_pins.is_none() {
        let new_text = match with_pins(&text, &pins_value(&now, unpinned, "")) {
            Ok(t) => t,
            Err(e) => return fail(format!("{}: {e}", o.policy)),
        };
        if let Err(e) = policy::parse(new_text.as_bytes()) {
            return fail(format!(
                "the policy with new pins does not validate (a bug in pin): {e}"
            ));
        }
        if let Err(e) = std::fs::write(&o.policy, new_text) {
            return fail(format!("cannot write {}: {e}", o.policy));
        }
        eprintln!(
            "pin: wrote the pins of {} to {}",
            tools(now.len()),
            o.policy
        );
        if old_pins.is_none() {
            eprintln!(
                "pin: tools without a pin are unlisted and refused (\"unpinned\": \"hide\"); set it to \"allow\" to let new tools follow the rules"
            );
        }
    }
    if !defs_current {
        if let Err(e) = std::fs::write(&defs_path, defs) {
            return fail(format!("cannot write {defs_path}: {e}"));
        }
        eprintln!("pin: wrote the pinned definitions to {defs_path}");
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn pins_of_listed_tools() {
        let tools = [
            raw(r#"{"name":"b","description":"B","_meta":{"x":1}}"#),
            raw(r#"{"name":"a","inputSchema":{"type":"object"}}"#),
            raw(r#"{"name":"a","description":"again"}"#),
            raw(r#"{"name":"get_*"}"#),
            raw(r#"{"name":"x\u200by"}"#),
            raw(r#"{"title":"no name"}"#),
            raw(r#"{"name":"n","v":1e400}"#),
        ];
        let (pinned, skipped) = pin_tools(&tools);
        let names: Vec<&str> = pinned.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(pinned[1].canonical, r#"{"description":"B","name":"b"}"#);
        assert_eq!(pinned[1].pin, tool_pin(tools[0].get()).unwrap());
        assert_eq!(skipped.len(), 5, "{skipped:?}");
        assert!(skipped[0].contains("listed twice"));
        assert!(skipped[1].contains("glob"));
        assert!(skipped[2].contains("invisible character (U+200B)"));
        assert!(skipped[3].starts_with("a tools/list entry without a string name"));
        assert!(skipped[4].contains("cannot be pinned"));
    }

    #[test]
    fn pins_go_into_the_policy_text() {
        let p = |name: &str, c: char| Pinned {
            name: name.into(),
            pin: format!("sha256:{}", c.to_string().repeat(64)),
            canonical: "{}".into(),
        };
        let pinned = [p("a", '1'), p("b", '2')];
        let value = pins_value(&pinned, Unpinned::Hide, "");
        let a = "1".repeat(64);
        let b = "2".repeat(64);
        assert_eq!(
            value,
            format!("{{\n  \"unpinned\": \"hide\",\n  \"tools\": {{\n    \"a\": \"sha256:{a}\",\n    \"b\": \"sha256:{b}\"\n  }}\n}}")
        );
        // Added after the last member; the rest as written.
        let doc = "{\n  \"version\": \"1\",\n  \"tools\": {\"x\": {}}   \n}\n";
        let got = with_pins(doc, &value).unwrap();
        assert_eq!(
            got,
            format!("{{\n  \"version\": \"1\",\n  \"tools\": {{\"x\": {{}}}},\n  \"pins\": {{\n    \"unpinned\": \"hide\",\n    \"tools\": {{\n      \"a\": \"sha256:{a}\",\n      \"b\": \"sha256:{b}\"\n    }}\n  }}\n}}\n")
        );
        let parsed = policy::parse(got.as_bytes()).unwrap();
        assert_eq!(
            parsed.pins.unwrap().get("b"),
            Some(format!("sha256:{b}").as_str())
        );
        // Replaced where it is, at its indentation; the members after it kept.
        let doc = "{\"version\":\"1\",\n    \"pins\": {\"tools\": {}},\n  \"default\": \"allow\"}";
        let got = with_pins(doc, &pins_value(&pinned[..1], Unpinned::Allow, "")).unwrap();
        assert_eq!(
            got,
            format!("{{\"version\":\"1\",\n    \"pins\": {{\n      \"unpinned\": \"allow\",\n      \"tools\": {{\n        \"a\": \"sha256:{a}\"\n      }}\n    }},\n  \"default\": \"allow\"}}")
        );
        policy::parse(got.as_bytes()).unwrap();
        assert_eq!(
            pins_value(&[], Unpinned::Allow, ""),
            "{\n  \"unpinned\": \"allow\",\n  \"tools\": {}\n}"
        );
        assert!(with_pins("[]", &value).is_err());
        assert_eq!(definitions_path("p/policy.json"), "p/policy.tools.json");
        assert_eq!(definitions_path("policy"), "policy.tools.json");
    }

    #[test]
    fn changes() {
        let p = |name: &str, pin: &str| Pinned {
            name: name.into(),
            pin: pin.into(),
            canonical: "{}".into(),
        };
        let now = [p("a", "1"), p("b", "2"), p("c", "3")];
        let c = compare([("a", "1"), ("b", "9"), ("d", "4")].into_iter(), &now);
        assert_eq!(c.unchanged, ["a"]);
        assert_eq!(c.changed, [("b".into(), "9".into(), "2".into())]);
        assert_eq!(c.added, ["c"]);
        assert_eq!(c.gone, ["d"]);
        assert!(c.any());
        assert!(!compare([("a", "1")].into_iter(), &now[..1]).any());
    }
}
