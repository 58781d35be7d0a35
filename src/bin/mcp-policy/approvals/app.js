// The approvals console page: plain JavaScript, no framework, no build step.
// State arrives as Server-Sent Events ("state", on every change) from /api/events; if the stream fails the page
// polls /api/state every few seconds. Decisions are POSTed with the session's CSRF token.
// Everything from the agent is put in the page as text (textContent), never as HTML.
"use strict";

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  let csrf = "";
  let skew = 0; // server clock minus this clock, in ms
  let pending = [];
  let remembered = [];
  let maxMinutes = 480;
  const cards = new Map(); // call id -> card element (kept across updates: a half-typed reason survives)

  const now = () => Date.now() + skew;

  function duration(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + " s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + " min " + String(s % 60).padStart(2, "0") + " s";
    return Math.floor(m / 60) + " h " + String(m % 60).padStart(2, "0") + " min";
  }

  function when(ms) {
    const d = new Date(ms);
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString();
  }

  async function post(path, body) {
    const r = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf },
      body: JSON.stringify(body || {}),
    });
    if (r.status === 401) { location.href = "/login"; return null; }
    let data = {};
    try { data = await r.json(); } catch (_) { /* not JSON */ }
    if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
    return data;
  }

  function minuteChoices(select) {
    const choices = [5, 15, 60, 240, 480].filter((m) => m <= maxMinutes);
    if (!choices.length) choices.push(maxMinutes);
    select.replaceChildren(...choices.map((m) => {
      const o = document.createElement("option");
      o.value = String(m);
      o.textContent = String(m);
      return o;
    }));
    select.value = String(choices.includes(15) ? 15 : choices[0]);
  }

  // The caller a policy with `callers` names: its verified subject, else its certificate principal, else none.
  const callerName = (c) => (c && (c.subject || c.principal)) || null;
  const MAX_GROUPS_SHOWN = 12;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // The card's caller. Verified (a policy with `callers`, a token or certificate Envoy checked): its name, how it
  // was verified, its profile, its groups (the first few), its certificate principal next to a subject. Not
  // verified (an anonymous caller, or a policy without `callers`): said so; the identity below is then all the
  // filter knows of who calls, and what "approve for N minutes" is for.
  function fillCaller(card, p) {
    const c = p.caller;
    const dd = $(".caller", card);
    const name = callerName(c);
    const line = el("span", "caller-line");
    if (name) {
      line.append(el("span", "subject", name), el("span", "via", c.subject ? "verified token" : "verified certificate"));
    } else {
      line.append(el("span", "unverified", "No verified caller"));
    }
    if (c && c.profile) {
      const profile = el("span", "profile");
      profile.append(el("span", "label", "profile "), el("span", "value", c.profile));
      line.append(profile);
    }
    dd.append(line);
    if (!name) {
      dd.append(el("span", "note", "Known only by the identity below: its MCP session id, an identity header or " +
        "its address" + (c ? "" : " (the policy verifies no callers)") + "."));
    }
    if (c && c.groups && c.groups.length) {
      const groups = el("span", "groups");
      groups.title = "groups: " + c.groups.join(", ");
      for (const g of c.groups.slice(0, MAX_GROUPS_SHOWN)) groups.append(el("span", "group", g));
      if (c.groups.length > MAX_GROUPS_SHOWN) {
        groups.append(el("span", "more", "+" + (c.groups.length - MAX_GROUPS_SHOWN) + " more"));
      }
      dd.append(groups);
    }
    if (c && c.subject && c.principal) dd.append(el("span", "principal", "certificate " + c.principal));
    if (name) card.classList.add("verified");
    $(".for-whom", card).textContent = p.grantee && p.grantee.caller
      ? "min, for " + (name || p.grantee.caller) + " and this tool (any session)"
      : "min, for this identity and tool only";
  }

  function makeCard(p) {
    const card = $("#card").content.firstElementChild.cloneNode(true);
    card.dataset.id = p.id;
    card.dataset.name = p.name;
    $(".kind", card).textContent = p.kind;
    $(".name", card).textContent = p.name;
    $(".identity", card).textContent = p.identity;
    fillCaller(card, p);
    $(".rule", card).textContent = p.rule_reason || "(the rule gives no reason)";
    $(".ids", card).textContent = "JSON-RPC id " + p.jsonrpc_id + (p.request_id ? " · x-request-id " + p.request_id : "");
    $(".args", card).textContent = p.arguments + (p.arguments_truncated ? "\n… (cut here: too long to show)" : "");
    minuteChoices($(".minutes", card));
    const reason = $(".reason", card);
    const decide = async (body) => {
      const buttons = card.querySelectorAll("button, select, input");
      buttons.forEach((b) => { b.disabled = true; });
      $(".error", card).textContent = "";
      try {
        const text = reason.value.trim();
        if (text) body.reason = text;
        await post("/api/pending/" + encodeURIComponent(p.id), body);
        card.classList.add("done");
      } catch (e) {
        $(".error", card).textContent = e.message;
        buttons.forEach((b) => { b.disabled = false; });
      }
    };
    $(".approve", card).addEventListener("click", () => decide({ approve: true }));
    $(".deny", card).addEventListener("click", () => decide({ approve: false }));
    $(".approve-for", card).addEventListener("click", () =>
      decide({ approve: true, remember_minutes: Number($(".minutes", card).value) }));
    reason.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); decide({ approve: false }); }
    });
    return card;
  }

  function tick() {
    const t = now();
    for (const p of pending) {
      const card = cards.get(p.id);
      if (!card) continue;
      const total = Math.max(1, p.deadline_ms - p.received_ms);
      const left = p.deadline_ms - t;
      $(".waited", card).textContent = duration(t - p.received_ms);
      $(".left", card).textContent = left > 0 ? duration(left) + " left" : "time is up";
      const frac = Math.max(0, Math.min(1, left / total));
      $(".bar span", card).style.width = (frac * 100).toFixed(1) + "%";
      card.classList.toggle("urgent", left < 15000);
    }
    for (const li of document.querySelectorAll("#remembered li")) {
      const left = Number(li.dataset.until) - t;
      $(".until", li).textContent = left > 0 ? duration(left) + " left" : "ended";
    }
  }

  function renderPending() {
    const list = $("#cards");
    const ids = new Set(pending.map((p) => p.id));
    for (const [id, card] of cards) {
      if (!ids.has(id)) { card.remove(); cards.delete(id); }
    }
    pending.forEach((p, i) => {
      let card = cards.get(p.id);
      if (!card) { card = makeCard(p); cards.set(p.id, card); }
      if (list.children[i] !== card) list.insertBefore(card, list.children[i] || null);
    });
    $("#count").textContent = String(pending.length);
    $("#empty").hidden = pending.length > 0;
    document.title = (pending.length ? "(" + pending.length + ") " : "") + "Approvals · mcp-policy";
  }

  function renderRemembered() {
    const ul = $("#remembered");
    const t = now();
    const live = remembered.filter((g) => g.until_ms > t);
    $("#remembered-section").hidden = live.length === 0;
    ul.replaceChildren(...live.map((g) => {
      const li = document.createElement("li");
      li.dataset.id = g.id;
      li.dataset.until = String(g.until_ms);
      const what = document.createElement("span");
      what.className = "what";
      const name = document.createElement("strong");
      name.textContent = g.name;
      // For a verified caller (in any of its sessions), else for one identity.
      const whom = g.grantee && g.grantee.caller
        ? (callerName(g.caller) || g.grantee.caller) + (g.caller && g.caller.profile ? " (" + g.caller.profile + ")" : "") + ", any session"
        : g.identity;
      what.append(name, " for ", whom, " · approved by ", g.by + " · ");
      const until = document.createElement("span");
      until.className = "until";
      what.append(until);
      const revoke = document.createElement("button");
      revoke.type = "button";
      revoke.className = "link revoke";
      revoke.textContent = "Revoke";
      revoke.addEventListener("click", async () => {
        revoke.disabled = true;
        try { await post("/api/remembered/" + encodeURIComponent(g.id) + "/revoke"); }
        catch (e) { revoke.disabled = false; revoke.title = e.message; }
      });
      li.append(what, revoke);
      return li;
    }));
  }

  const OUTCOMES = {
    approved: "approved", denied: "denied", remembered: "approved (remembered)",
    expired: "expired", withdrawn: "withdrawn", revoked: "revoked",
  };

  function renderRecent(recent) {
    const table = $("#recent");
    table.hidden = recent.length === 0;
    $("#no-recent").hidden = recent.length > 0;
    $("tbody", table).replaceChildren(...recent.slice(0, 100).map((r) => {
      const tr = document.createElement("tr");
      tr.className = "o-" + r.outcome;
      let outcome = OUTCOMES[r.outcome] || r.outcome;
      if (r.outcome === "approved" && r.remember_seconds) {
        const s = r.remember_seconds;
        outcome += " for " + (s % 60 === 0 ? s / 60 + " min" : duration(s * 1000));
      }
      // The caller (name and profile) with the identity below it; without callers, the identity alone.
      const caller = document.createElement("span");
      if (r.caller) {
        const name = callerName(r.caller);
        caller.append(name ? el("span", "subject", name) : el("span", "unverified", "not verified"));
        if (r.caller.profile) caller.append(" · " + r.caller.profile);
        caller.append(el("span", "secondary", r.identity));
      } else {
        caller.textContent = r.identity;
      }
      const cells = [
        ["When", when(r.unix_ms)],
        ["Outcome", outcome],
        ["Call", r.name],
        ["Caller", caller],
        ["By", r.by || "—"],
        ["Reason", r.reason || ""],
      ];
      for (const [label, content] of cells) {
        const td = document.createElement("td");
        td.dataset.label = label;
        if (typeof content === "string") td.textContent = content; else td.append(content);
        tr.append(td);
      }
      $("td:nth-child(2)", tr).classList.add("outcome");
      return tr;
    }));
  }

  function render(state) {
    skew = state.now_ms - Date.now();
    pending = state.pending;
    remembered = state.remembered;
    renderPending();
    renderRemembered();
    renderRecent(state.recent);
    tick();
  }

  function setLive(text, ok) {
    const el = $("#live");
    el.textContent = text;
    el.classList.toggle("ok", ok);
  }

  let polling = null;
  async function poll() {
    try {
      const r = await fetch("/api/state", { credentials: "same-origin" });
      if (r.status === 401) { location.href = "/login"; return; }
      if (r.ok) { render(await r.json()); setLive("updating every 3 s", true); }
    } catch (_) {
      setLive("console unreachable", false);
    }
  }

  function listen() {
    const es = new EventSource("/api/events");
    es.addEventListener("state", (e) => {
      render(JSON.parse(e.data));
      setLive("live", true);
      if (polling) { clearInterval(polling); polling = null; }
    });
    es.onerror = () => {
      setLive("reconnecting…", false);
      if (!polling) { polling = setInterval(poll, 3000); poll(); }
      if (es.readyState === EventSource.CLOSED) setTimeout(listen, 5000);
    };
  }

  async function start() {
    const r = await fetch("/api/session", { credentials: "same-origin" });
    if (r.status === 401) { location.href = "/login"; return; }
    const s = await r.json();
    csrf = s.csrf_token || "";
    maxMinutes = s.max_remember_minutes || maxMinutes;
    $("#user").textContent = s.user;
    $("#logout input[name=csrf]").value = csrf;
    listen();
    setInterval(tick, 1000);
  }

  start();
})();
