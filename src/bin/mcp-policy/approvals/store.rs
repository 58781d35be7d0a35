//! The decision log: one JSON line per outcome (approved, denied, remembered, expired, withdrawn, revoked),
//! appended and synced to disk as it happens, read back at startup (recent decisions, remembered approvals).
//!
//! A JSON-lines file rather than an embedded database: decisions come at human speed, the only queries are
//! "the latest N" and "the approvals still remembered", both one pass at startup; the file is append-only,
//! readable and greppable (`jq`), needs no schema migration, no C library, and a line cut short by a crash is
//! simply skipped.

use super::callout::Caller;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What happened to a call (or to a remembered approval).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A person approved (maybe "for N minutes": `remember_seconds`).
    Approved,
    /// A person denied.
    Denied,
    /// Approved by the console itself, within an earlier "approve for N minutes" (`by` is who gave that).
    Remembered,
    /// Nobody decided before the callout's time ran out.
    Expired,
    /// The filter stopped waiting before its time ran out (its own timeout_ms was shorter, or Envoy ended the
    /// callout).
    Withdrawn,
    /// A remembered approval was revoked (`id` is the call that created it).
    Revoked,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339 UTC, for people.
    pub time: String,
    /// The same instant in milliseconds since the epoch, for the console.
    pub unix_ms: u64,
    pub outcome: Outcome,
    /// The approver (login name); none for expired and withdrawn calls.
    pub by: Option<String>,
    /// The call's id in the console (for `revoked`: the id of the call whose approval was remembered).
    pub id: String,
    pub method: String,
    pub name: String,
    pub identity: String,
    /// The verified caller and its profile (policies with `callers`; absent in lines written before the console
    /// knew callers, which still load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<Caller>,
    /// The rule's reason.
    pub rule_reason: Option<String>,
    /// The approver's reason.
    pub reason: Option<String>,
    /// "Approve for N minutes", in seconds (approved), or what was left of it (remembered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remember_seconds: Option<u64>,
    /// How long the call waited for this outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jsonrpc_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// SHA-256 of the arguments as the agent sent them: the filter's audit line `args_sha256` for the same call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_sha256: Option<String>,
}

/// The log file, opened for appending.
pub struct DecisionLog {
    path: PathBuf,
    file: Mutex<File>,
}

/// What `open` found in an existing log.
pub struct Loaded {
    pub records: Vec<Record>,
    /// Lines that could not be read (e.g. the last one, cut short by a crash), by line number.
    pub skipped: Vec<usize>,
}

impl DecisionLog {
    /// Opens (creating it if needed) the log at `path` and reads every record in it.
    pub fn open(path: &Path) -> Result<(DecisionLog, Loaded), String> {
        let what = |e: std::io::Error| format!("{}: {e}", path.display());
        let mut loaded = Loaded {
            records: Vec::new(),
            skipped: Vec::new(),
        };
        match File::open(path) {
            Ok(f) => {
                for (n, line) in BufReader::new(f).lines().enumerate() {
                    let line = line.map_err(what)?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Record>(&line) {
                        Ok(r) => loaded.records.push(r),
                        Err(_) => loaded.skipped.push(n + 1),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(what(e)),
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(what)?;
        // A line cut short by a crash gets its own line end, so the next record starts on a line of its own.
        if !loaded.skipped.is_empty() {
            file.write_all(b"\n").map_err(what)?;
        }
        Ok((
            DecisionLog {
                path: path.to_owned(),
                file: Mutex::new(file),
            },
            loaded,
        ))
    }

    /// Appends one record and syncs it to disk.
    pub fn append(&self, record: &Record) -> Result<(), String> {
        let mut line = serde_json::to_string(record).map_err(|e| e.to_string())?;
        line.push('\n');
        let mut file = self
            .file
            .lock()
            .map_err(|_| "the decision log's lock is poisoned".to_owned())?;
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn temp_path(name: &str) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mcp-policy-approvals-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    pub fn record(outcome: Outcome, unix_ms: u64) -> Record {
        Record {
            time: mcp_policy::audit::rfc3339_millis(unix_ms * 1_000_000),
            unix_ms,
            outcome,
            by: Some("ana".into()),
            id: "c1".into(),
            method: "tools/call".into(),
            name: "set_run_tag".into(),
            identity: "agent-1".into(),
            caller: None,
            rule_reason: None,
            reason: Some("ok".into()),
            remember_seconds: None,
            waited_ms: Some(1500),
            jsonrpc_id: Some("7".into()),
            request_id: None,
            args_sha256: None,
        }
    }

    #[test]
    fn survives_a_restart() {
        let path = temp_path("decisions.jsonl");
        let (log, loaded) = DecisionLog::open(&path).unwrap();
        assert!(loaded.records.is_empty() && loaded.skipped.is_empty());
        let a = record(Outcome::Approved, 1_700_000_000_000);
        let b = Record {
            remember_seconds: Some(600),
            ..record(Outcome::Denied, 1_700_000_001_000)
        };
        log.append(&a).unwrap();
        log.append(&b).unwrap();
        drop(log);
        let (_log, loaded) = DecisionLog::open(&path).unwrap();
        assert_eq!(loaded.records, vec![a.clone(), b]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(r#"{"time":"2023-11-14T22:13:20.000Z","unix_ms":1700000000000,"outcome":"approved","by":"ana""#),
            "{text}"
        );
    }

    #[test]
    fn a_line_cut_short_is_skipped_and_the_log_goes_on() {
        let path = temp_path("decisions.jsonl");
        let a = record(Outcome::Expired, 1_700_000_000_000);
        std::fs::write(
            &path,
            format!("{}\n{{\"time\":\"2023", serde_json::to_string(&a).unwrap()),
        )
        .unwrap();
        let (log, loaded) = DecisionLog::open(&path).unwrap();
        assert_eq!((loaded.records, loaded.skipped), (vec![a.clone()], vec![2]));
        let b = record(Outcome::Withdrawn, 1_700_000_002_000);
        log.append(&b).unwrap();
        drop(log);
        let (_log, loaded) = DecisionLog::open(&path).unwrap();
        assert_eq!((loaded.records, loaded.skipped), (vec![a, b], vec![2]));
    }

    #[test]
    fn an_unwritable_path_is_an_error() {
        let dir = temp_path("d");
        std::fs::create_dir_all(&dir).unwrap();
        assert!(DecisionLog::open(&dir).is_err());
    }
}
