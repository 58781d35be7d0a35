//! A request waiting for approval: what is kept of its body so that the answers can be applied without
//! reading the body again.

use super::{check_body, events, Env, Event, Head, Next, Outcome};
use crate::approval::Answer;
use crate::engine::Decision;
use crate::limits::Store;
use crate::mcp::Kind;
use crate::policy::Policy;
use crate::record::{Granted, Record, Target};
use crate::reply::{self, Reply};
use serde_json::value::RawValue;

/// What is kept of a body while its approval callouts are out: each message's envelope and call, and the
/// rule that allowed it or asked for approval. Enough to answer, audit and count every message once the
/// answers are in, without reading the body again (Envoy still holds the body itself, to forward it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Awaiting {
    batch: bool,
    messages: Vec<Kept>,
}

/// One message of an [`Awaiting`] body.
#[derive(Debug, Clone)]
struct Kept {
    method: Option<String>,
    id: Option<Box<RawValue>>,
    target: Option<(Kind, String, Option<Box<RawValue>>)>,
    rule: Option<String>,
    /// The call waits for approval; otherwise it is allowed (or not a governed call).
    asked: bool,
    /// See [`Record::note`].
    note: Option<String>,
}

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        let raw = |r: &Option<Box<RawValue>>| r.as_ref().map(|v| v.get().to_owned());
        let target = |k: &Kept| {
            k.target
                .as_ref()
                .map(|(kind, name, args)| (*kind, name.clone(), raw(args)))
        };
        self.method == other.method
            && raw(&self.id) == raw(&other.id)
            && target(self) == target(other)
            && self.rule == other.rule
            && self.asked == other.asked
            && self.note == other.note
    }
}

impl Eq for Kept {}

impl Awaiting {
    /// Keeps `records` (none refused: a refused body is answered, never held for approval).
    pub(super) fn keep(batch: bool, records: &[Record<'_>]) -> Self {
        let messages = records
            .iter()
            .map(|r| Kept {
                method: r.method.map(str::to_owned),
                id: r.id.map(RawValue::to_owned),
                target: r.target.map(|t| {
                    (
                        t.kind,
                        t.name.to_owned(),
                        t.arguments.map(RawValue::to_owned),
                    )
                }),
                rule: r.rule().map(str::to_owned),
                asked: matches!(r.decision, Some(Decision::NeedsApproval { .. })),
                note: r.note.clone(),
            })
            .collect();
        Awaiting { batch, messages }
    }

    /// Whether the body is a batch.
    pub(super) fn batch(&self) -> bool {
        self.batch
    }

    /// Sets the note of the message at `index` (see [`Record::note`]).
    pub(super) fn note(&mut self, index: usize, note: String) {
        if let Some(k) = self.messages.get_mut(index) {
            k.note = Some(note);
        }
    }

    /// The calls asked about, one per ask, in the order of [`Outcome::Approve`]'s asks: each one's method and
    /// tool or prompt name (or resource URI), what a remembered approval is for (with the caller). Always
    /// `Some` (an ask is a call), but never skipped, so that the n-th item is the n-th ask's.
    pub fn asked(&self) -> impl Iterator<Item = Option<(&str, &str)>> {
        self.messages.iter().filter(|k| k.asked).map(|k| {
            let (_, name, _) = k.target.as_ref()?;
            Some((k.method.as_deref()?, name.as_str()))
        })
    }

    /// The records again, as they were when the asks went out.
    pub(super) fn records(&self) -> Vec<Record<'_>> {
        self.messages
            .iter()
            .map(|k| {
                let rule = k.rule.as_deref();
                let target = k.target.as_ref().map(|(kind, name, args)| Target {
                    kind: *kind,
                    name,
                    arguments: args.as_deref(),
                });
                Record {
                    method: k.method.as_deref(),
                    id: k.id.as_deref(),
                    decision: target.map(|_| {
                        if k.asked {
                            Decision::NeedsApproval { rule, reason: None }
                        } else {
                            Decision::Allow { rule }
                        }
                    }),
                    target,
                    charges: Vec::new(),
                    granted: None,
                    note: k.note.clone(),
                }
            })
            .collect()
    }

    /// Applies the approval answers (in the order of [`Outcome::Approve`]'s asks): `Ok` forwards the request;
    /// `Err` is the reply (and the caller gives the rate-limit units back). The events report every message.
    pub fn conclude<S: Store>(
        &self,
        head: &Head,
        answers: &[Answer],
        env: &Env<'_, S>,
    ) -> (Result<(), Reply>, Vec<Event>) {
        let mut records = self.records();
        let mut answers = answers.iter();
        for r in &mut records {
            let Some(Decision::NeedsApproval { rule, .. }) = r.decision else {
                continue;
            };
            let (reason, unavailable) = match answers.next() {
                Some(Answer::Granted { .. }) => {
                    r.granted = Some(Granted::Asked);
                    r.decision = Some(Decision::Allow { rule });
                    continue;
                }
                Some(Answer::Remembered) => {
                    r.granted = Some(Granted::Remembered);
                    r.decision = Some(Decision::Allow { rule });
                    continue;
                }
                Some(Answer::Denied(reason)) => (reason.clone(), false),
                Some(Answer::Unavailable(reason)) => (reason.clone(), true),
                None => ("no answer was recorded".to_owned(), true),
            };
            r.decision = Some(Decision::NotApproved {
                rule,
                reason,
                unavailable,
            });
        }
        let result = match reply::refused(self.batch, &records) {
            Some(r) => Err(r),
            None => Ok(()),
        };
        let events = events(env, head, &records, result.is_err(), false);
        (result, events)
    }
}

/// [`check_body`], then [`Awaiting::conclude`] with `answers` if the body asks for approval: the whole life
/// of a request body for the native CLI (`explain`), which has nothing but the body. It takes rate-limit
/// units in `env.store` as [`check_body`] does. The rate limit service, which the CLI cannot ask, is taken to
/// answer that every fleet-counted limit has room. The filter keeps the [`Awaiting`] instead and never reads a
/// body twice.
pub fn conclude<S: Store>(
    policy: &Policy,
    head: &Head,
    bytes: &[u8],
    answers: &[Answer],
    env: &Env<'_, S>,
) -> (Result<(), Reply>, Vec<Event>) {
    let checked = check_body(policy, head, bytes, env);
    match checked.outcome {
        Outcome::Approve { awaiting, .. } => awaiting.conclude(head, answers, env),
        Outcome::Forward(_) => (Ok(()), checked.events),
        Outcome::Reply(r) => (Err(r), checked.events),
        Outcome::Count { counting, .. } => {
            // `RateLimitResponse { overall_code: OK }`, as Limitador answers when every limit has room.
            let room = vec![Ok(vec![0x08, 0x01]); counting.messages().count()];
            let counted = counting.conclude(policy, head, &room, env);
            match counted.next {
                Next::Forward => (Ok(()), counted.events),
                Next::Reply(r) => (Err(r), counted.events),
                Next::Approve { awaiting, .. } => awaiting.conclude(head, answers, env),
            }
        }
    }
}
