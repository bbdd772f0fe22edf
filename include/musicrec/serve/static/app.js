// musicrec page: plain JavaScript, nothing fetched from outside this server.
// The key is kept in sessionStorage (this tab only, gone when it closes) and sent as a Bearer header.
"use strict";
const $ = (id) => document.getElementById(id);
const KEY = "musicrec.key";
let currentUser = "";

function key() { return sessionStorage.getItem(KEY) || ""; }
function showKeyState() { $("key-state").textContent = key() ? "key set for this tab" : "no key"; }

async function api(path) {
  $("error").textContent = "";
  const resp = await fetch(path, { headers: { Authorization: "Bearer " + key() } });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const e = body.error || {};
    throw new Error(`${resp.status} ${e.code || ""}: ${e.message || resp.statusText}`);
  }
  return body;
}

function table(target, answer, onClick) {
  const box = $(target);
  box.textContent = "";
  const meta = document.createElement("p");
  meta.className = "muted";
  meta.textContent = `model ${answer.model_version ?? "none"}`;
  if (answer.fallback) {
    const tag = document.createElement("span");
    tag.className = "fallback";
    tag.textContent = ` fallback: ${answer.fallback}`;
    meta.appendChild(tag);
  }
  box.appendChild(meta);
  const tbl = document.createElement("table");
  tbl.innerHTML = "<thead><tr><th>#</th><th>title</th><th>artist</th><th>score</th></tr></thead>";
  const body = document.createElement("tbody");
  answer.items.forEach((it, i) => {
    const tr = document.createElement("tr");
    tr.className = "song";
    tr.dataset.trackId = it.track_id;
    for (const v of [i + 1, it.title ?? it.track_id, it.artist ?? "", it.score.toFixed(4)]) {
      const td = document.createElement("td");
      td.textContent = v;  // textContent: titles are data, never markup
      tr.appendChild(td);
    }
    tr.lastChild.className = "score";
    if (onClick) tr.addEventListener("click", () => onClick(it));
    body.appendChild(tr);
  });
  tbl.appendChild(body);
  box.appendChild(tbl);
}

function fail(err) { $("error").textContent = String(err.message || err); }

async function loadUsers() {
  if (!key()) return;
  try {
    const ans = await api("/v1/users?limit=200");
    const list = $("users");
    list.textContent = "";
    for (const u of ans.items) {
      const opt = document.createElement("option");
      opt.value = u.user_id;
      opt.label = u.in_model ? "in model" : "cold";
      list.appendChild(opt);
    }
  } catch (err) { fail(err); }
}

async function showNext(item) {
  if (!currentUser) { fail(new Error("pick a user first")); return; }
  $("next-title").textContent = `after “${item.title ?? item.track_id}” for ${currentUser}`;
  try {
    table("next", await api(`/v1/users/${encodeURIComponent(currentUser)}/next?track_id=${encodeURIComponent(item.track_id)}&k=10`), showNext);
  } catch (err) { fail(err); }
}

$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const v = $("key").value.trim();
  if (v) sessionStorage.setItem(KEY, v);
  $("key").value = "";
  showKeyState();
  loadUsers();
});
$("forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); showKeyState(); });
$("user-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  currentUser = $("user").value.trim();
  if (!currentUser) return;
  try { table("home", await api(`/v1/users/${encodeURIComponent(currentUser)}/recommendations?k=10`), showNext); }
  catch (err) { fail(err); }
});
$("search-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = $("q").value.trim();
  if (!q) return;
  try { table("search", await api(`/v1/search?q=${encodeURIComponent(q)}&k=10&mode=${$("mode").value}`), showNext); }
  catch (err) { fail(err); }
});
showKeyState();
loadUsers();
