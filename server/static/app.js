// citeqa web chat: plain browser JavaScript, no build step, nothing loaded from outside this server.
"use strict";

const I18N = {
  en: {
    tagline: "documents → answers with page citations", kb: "Knowledge base", newKb: "New", apiKey: "API key",
    upload: "Upload documents", dropHint: "Choose or drop PDF, Word, EPUB, HTML, text files",
    uploadBtn: "Upload & ingest", documents: "Documents", ask: "Ask", newChat: "New chat",
    askPlaceholder: "Ask a question… (Enter to send, Shift+Enter for a new line)",
    welcome: "Ask a question about your documents. Answers cite pages: click a [n] to see the page.",
    keyPrompt: "This server needs an API key (Authorization: Bearer). It is kept in this browser only.",
    cancel: "Cancel", save: "Save", newKbPrompt: "Name of the new knowledge base:", noKb: "(none yet)",
    pickFiles: "Choose files first.", page: "p.", pages: "pages", chunks: "chunks", remove: "Remove",
    confirmRemove: "Remove this document?", verified: "verified", thinking: "…",
    stage: { loading: "Loading the model (once)…", rewriting: "Understanding the follow-up…",
      retrieving: "Searching the documents…", translating: "Translating the question…", thinking: "Reading the evidence…" },
    retrieved: "Retrieved — not an answer yet", firstToken: "first token", total: "total",
    job: { queued: "queued", running: "ingesting", succeeded: "done", failed: "failed", cancelled: "cancelled" },
    added: "added", updated: "updated", skipped: "unchanged", failedFiles: "failed", cancelJob: "Cancel",
    embedding: "Embedded {x} of {y} chunks: already searchable by keyword",
    sources: "Sources", refused: "No answer found in the documents.", error: "Error", seconds: "s",
  },
  zh: {
    tagline: "文档问答 · 答案附页码引用", kb: "知识库", newKb: "新建", apiKey: "API 密钥",
    upload: "上传文档", dropHint: "选择或拖入 PDF、Word、EPUB、HTML、文本文件",
    uploadBtn: "上传并入库", documents: "文档", ask: "提问", newChat: "新对话",
    askPlaceholder: "输入问题…（回车发送，Shift+回车换行）",
    welcome: "就你的文档提问。答案会引用页码：点击 [n] 查看原文页面。",
    keyPrompt: "此服务需要 API 密钥（Authorization: Bearer），只保存在本浏览器中。",
    cancel: "取消", save: "保存", newKbPrompt: "新知识库名称：", noKb: "（暂无）",
    pickFiles: "请先选择文件。", page: "第", pages: "页", chunks: "块", remove: "删除",
    confirmRemove: "删除这个文档？", verified: "已核实", thinking: "…",
    stage: { loading: "正在加载模型（仅首次）…", rewriting: "正在理解追问…",
      retrieving: "正在检索文档…", translating: "正在翻译问题…", thinking: "正在阅读证据…" },
    retrieved: "检索到的内容（还不是答案）", firstToken: "首个字", total: "总计",
    job: { queued: "排队中", running: "入库中", succeeded: "完成", failed: "失败", cancelled: "已取消" },
    added: "新增", updated: "更新", skipped: "未变", failedFiles: "失败", cancelJob: "取消",
    embedding: "已向量化 {x} / {y} 块：已可按关键词检索",
    sources: "来源", refused: "文档中没有找到答案。", error: "错误", seconds: "秒",
  },
};

const $ = (sel) => document.querySelector(sel);
const state = {
  lang: localStorage.getItem("citeqa.lang") || ((navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en"),
  key: localStorage.getItem("citeqa.key") || "",
  kb: localStorage.getItem("citeqa.kb") || "",
  history: [],
  busy: false,
  jobs: new Map(), // job id -> {el, job}: re-rendered when the language changes
};

function t(key) {
  const parts = key.split(".");
  let v = I18N[state.lang];
  for (const p of parts) v = v && v[p];
  return v === undefined ? key : v;
}

function applyLang() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
  $("#lang-btn").textContent = state.lang === "zh" ? "English" : "中文";
}

// The "first token · total" line, in the current language (re-rendered when it changes).
function renderTiming(el) {
  const tm = JSON.parse(el.dataset.timings || "{}");
  el.textContent = [
    tm.first_token !== undefined ? `${t("firstToken")} ${tm.first_token.toFixed(2)} ${t("seconds")}` : "",
    tm.total !== undefined ? `${t("total")} ${tm.total.toFixed(2)} ${t("seconds")}` : "",
  ].filter(Boolean).join(" · ");
}

function toast(text) {
  const el = $("#toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 5000);
}

// --- HTTP -----------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, type, message) { super(message); this.status = status; this.type = type; }
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.key) headers.set("Authorization", "Bearer " + state.key);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    askForKey();
  }
  if (!response.ok) {
    let type = "HTTPError", message = response.statusText;
    try {
      const body = await response.json();
      if (body && body.error) { type = body.error.type; message = body.error.message; }
    } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, type, message);
  }
  return response;
}

const getJson = async (path, options) => (await api(path, options)).json();

function askForKey() {
  const dialog = $("#key-dialog");
  if (dialog.open) return;
  $("#key-input").value = state.key;
  dialog.showModal();
}

$("#key-dialog").addEventListener("close", () => {
  if ($("#key-dialog").returnValue !== "save") return;
  state.key = $("#key-input").value.trim();
  localStorage.setItem("citeqa.key", state.key);
  refreshAll();
});

// --- knowledge bases and documents --------------------------------------------------------------
async function loadKbs() {
  const data = await getJson("/v1/kbs");
  // A read-only key may search and ask, not change anything: its write controls are not shown.
  state.readOnly = Boolean(data.read_only);
  for (const id of ["upload-form", "new-kb-btn"]) $("#" + id).hidden = state.readOnly;
  const select = $("#kb-select");
  select.innerHTML = "";
  const names = data.kbs.map((k) => k.name);
  if (!names.length) {
    const opt = new Option(t("noKb"), "");
    select.add(opt);
    state.kb = state.kb || data.default;
  } else {
    for (const kb of data.kbs) select.add(new Option(`${kb.name} (${kb.documents})`, kb.name));
    if (!names.includes(state.kb)) state.kb = names.includes(data.default) ? data.default : names[0];
    select.value = state.kb;
  }
  localStorage.setItem("citeqa.kb", state.kb);
}

async function loadDocs() {
  const list = $("#doc-list");
  list.innerHTML = "";
  $("#doc-count").textContent = "";
  if (!state.kb) return;
  let data;
  try {
    data = await getJson(`/v1/kbs/${encodeURIComponent(state.kb)}/documents`);
  } catch (e) {
    if (e.status === 404) return; // not created yet: the first upload creates it
    throw e;
  }
  $("#doc-count").textContent = `(${data.documents.length})`;
  for (const doc of data.documents) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = doc.name;
    name.title = doc.title && doc.title !== doc.name ? `${doc.name}\n${doc.title}` : doc.name;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = `${doc.pages} ${t("pages")} · ${doc.chunks} ${t("chunks")}`;
    const del = document.createElement("button");
    del.type = "button";
    del.textContent = "×";
    del.title = t("remove");
    del.addEventListener("click", async () => {
      if (!confirm(t("confirmRemove") + "\n" + doc.name)) return;
      await guard(api(`/v1/kbs/${encodeURIComponent(state.kb)}/documents/${encodeURIComponent(doc.id)}`, { method: "DELETE" }));
      await refreshAll();
    });
    li.append(name, meta);
    if (!state.readOnly) li.append(del);
    list.append(li);
  }
}

async function refreshAll() {
  await guard((async () => { await loadKbs(); await loadDocs(); })());
}

async function guard(promise) {
  try {
    return await promise;
  } catch (e) {
    toast(`${t("error")}: ${e.message}`);
    return undefined;
  }
}

$("#kb-select").addEventListener("change", (e) => {
  state.kb = e.target.value;
  localStorage.setItem("citeqa.kb", state.kb);
  clearChat();
  guard(loadDocs());
});

$("#new-kb-btn").addEventListener("click", async () => {
  const name = (prompt(t("newKbPrompt")) || "").trim();
  if (!name) return;
  const ok = await guard(api("/v1/kbs", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name }),
  }));
  if (ok) { state.kb = name; await refreshAll(); }
});

// --- uploads and jobs ---------------------------------------------------------------------------
$("#upload-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const files = $("#file-input").files;
  if (!files.length) { toast(t("pickFiles")); return; }
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  form.append("create", "true");
  const kb = state.kb || "default";
  const button = $("#upload-btn");
  button.disabled = true;
  try {
    const data = await guard(getJson(`/v1/kbs/${encodeURIComponent(kb)}/documents`, { method: "POST", body: form }));
    if (data) {
      state.kb = kb;
      $("#file-input").value = "";
      watchJob(data.job);
    }
  } finally {
    button.disabled = false;
  }
});

const drop = $("#drop-zone");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  $("#file-input").files = e.dataTransfer.files;
});

function renderJob(el, job) {
  state.jobs.set(job.id, { el, job });
  el.className = `job ${job.state}`;
  el.dataset.state = job.state;
  el.innerHTML = "";
  const title = document.createElement("div");
  title.textContent = `${job.files.join(", ")} — ${t("job." + job.state)}`;
  const bar = document.createElement("progress");
  bar.max = 1;
  bar.value = job.progress && typeof job.progress.ratio === "number" ? job.progress.ratio : 0;
  el.append(title, bar);
  const p = job.progress || {};
  if (p.phase === "embedding" && (job.state === "running" || job.state === "queued")) {
    // Every file is stored: the documents can be asked about while their vectors follow.
    const line = document.createElement("div");
    line.className = "muted";
    line.textContent = t("embedding").replace("{x}", Number(p.embedded || 0).toLocaleString())
      .replace("{y}", Number(p.chunks_total || 0).toLocaleString());
    el.append(line);
  }
  if (job.summary) {
    const s = job.summary;
    const line = document.createElement("div");
    line.textContent = `${t("added")} ${s.added} · ${t("updated")} ${s.updated} · ${t("skipped")} ${s.skipped}` +
      ` · ${t("failedFiles")} ${(s.failed || []).length} · ${Number(s.seconds || 0).toFixed(1)} ${t("seconds")}`;
    el.append(line);
    for (const f of s.failed || []) {
      const err = document.createElement("div");
      err.className = "failed";
      err.textContent = f.error;
      el.append(err);
    }
  }
  if (job.error) {
    const err = document.createElement("div");
    err.textContent = job.error;
    el.append(err);
  }
  if (job.state === "queued" || job.state === "running") {
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "secondary";
    cancel.textContent = t("cancelJob");
    cancel.addEventListener("click", () => guard(api(`/v1/jobs/${job.id}/cancel`, { method: "POST" })));
    el.append(cancel);
  }
}

async function watchJob(job) {
  const el = document.createElement("div");
  el.id = "job-" + job.id;
  $("#jobs").prepend(el);
  renderJob(el, job);
  await refreshAll();
  while (job.state === "queued" || job.state === "running") {
    await new Promise((r) => setTimeout(r, 700));
    const next = await guard(getJson(`/v1/jobs/${job.id}`));
    if (!next) break;
    const stored = job.progress?.phase !== "embedding" && next.progress?.phase === "embedding";
    job = next;
    renderJob(el, job);
    if (stored) await refreshAll(); // the files are written: list them while embedding goes on
  }
  await refreshAll();
}

// --- chat -------------------------------------------------------------------------------------------
function clearChat() {
  state.history = [];
  const box = $("#messages");
  box.innerHTML = "";
  const p = document.createElement("p");
  p.className = "hint";
  p.dataset.i18n = "welcome";
  p.textContent = t("welcome");
  box.append(p);
}

$("#clear-btn").addEventListener("click", clearChat);

function addMessage(role, text) {
  const box = $("#messages");
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  const body = document.createElement("div");
  body.className = role === "assistant" ? "answer" : "text";
  body.textContent = text;
  div.append(body);
  box.append(div);
  box.scrollTop = box.scrollHeight;
  return div;
}

// Answer text with each [n] turned into a link to its citation's page.
function renderAnswer(container, text, citations) {
  container.innerHTML = "";
  const byN = new Map(citations.map((c) => [c.n, c]));
  const re = /\[(\d+)\]/g;
  let last = 0, m;
  while ((m = re.exec(text)) !== null) {
    container.append(document.createTextNode(text.slice(last, m.index)));
    const c = byN.get(Number(m[1]));
    if (c) {
      const a = document.createElement("a");
      a.className = "cite";
      a.href = "#";
      a.textContent = m[0];
      a.title = `${c.doc} ${t("page")}${c.page}`;
      a.addEventListener("click", (e) => { e.preventDefault(); openPage(c); });
      container.append(a);
    } else {
      container.append(document.createTextNode(m[0]));
    }
    last = re.lastIndex;
  }
  container.append(document.createTextNode(text.slice(last)));
}

function renderCitations(msg, answer) {
  if (!answer.citations.length) return;
  const ul = document.createElement("ul");
  ul.className = "citations";
  for (const c of answer.citations) {
    const li = document.createElement("li");
    li.className = "citation";
    li.dataset.n = c.n;
    const src = document.createElement("span");
    src.className = "src";
    src.textContent = `[${c.n}] ${c.doc} · ${state.lang === "zh" ? `第 ${c.page} 页` : `p. ${c.page}`} `;
    const ok = document.createElement("span");
    ok.className = "ok";
    ok.textContent = c.verified ? `✓ ${t("verified")} ` : "";
    const quote = document.createElement("q");
    quote.textContent = c.quote;
    li.append(src, ok, quote);
    li.addEventListener("click", () => openPage(c));
    ul.append(li);
  }
  msg.append(ul);
}

// What retrieval found, shown before the model has written anything; replaced by the answer.
function renderEvidence(msg, items) {
  if (!items || !items.length) return null;
  const box = document.createElement("div");
  box.className = "evidence";
  const head = document.createElement("div");
  head.className = "evidence-head";
  head.textContent = t("retrieved");
  box.append(head);
  const ul = document.createElement("ul");
  for (const e of items) {
    const li = document.createElement("li");
    const src = document.createElement("span");
    src.className = "src";
    src.textContent = `${e.doc} · ${state.lang === "zh" ? `第 ${e.page} 页` : `p. ${e.page}`} `;
    const quote = document.createElement("q");
    quote.textContent = e.text;
    li.append(src, quote);
    li.addEventListener("click", () => openPage({ doc: e.doc, doc_id: e.doc_id, page: e.page, quote: e.text }));
    ul.append(li);
  }
  box.append(ul);
  msg.append(box);
  return box;
}

function parseSse(buffer, onEvent) {
  let idx;
  while ((idx = buffer.indexOf("\n\n")) >= 0) {
    const raw = buffer.slice(0, idx);
    buffer = buffer.slice(idx + 2);
    let event = "message", data = "";
    for (const line of raw.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data += line.slice(5).trim();
    }
    if (data) onEvent(event, JSON.parse(data));
  }
  return buffer;
}

async function ask(question) {
  state.busy = true;
  $("#ask-btn").disabled = true;
  addMessage("user", question);
  const msg = addMessage("assistant", t("stage").retrieving);
  const body = msg.querySelector(".answer");
  body.classList.add("status");
  let text = "", final = null, evidence = null;
  try {
    const response = await api("/v1/ask", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify({ question, kb: state.kb || undefined, history: state.history, stream: true }),
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = parseSse(buffer + decoder.decode(value, { stream: true }), (event, data) => {
        if (event === "status") {
          if (!text && t("stage")[data.stage]) body.textContent = t("stage")[data.stage];
        } else if (event === "evidence") {
          evidence = renderEvidence(msg, data.evidence);
        } else if (event === "token") {
          if (!text) body.classList.remove("status");
          text += data.text;
          body.textContent = text;
        } else if (event === "citations") {
          final = data;
        } else if (event === "error") {
          throw new ApiError(data.error.status || 500, data.error.type, data.error.message);
        }
      });
      $("#messages").scrollTop = $("#messages").scrollHeight;
    }
    if (final) {
      if (evidence) evidence.remove();  // the checked answer and its citations take its place
      body.classList.remove("status");
      // one numbering: [n] in the text is the n of a citation, or of a passage shown with a refusal
      renderAnswer(body, final.answer, final.citations.concat(final.evidence || []));
      if (final.refused) msg.classList.add("refused");
      renderCitations(msg, final);
      const timing = document.createElement("div");
      timing.className = "timing";
      timing.dataset.timings = JSON.stringify(final.timings || {});
      renderTiming(timing);
      msg.append(timing);
      msg.dataset.done = "true";
      state.history.push({ role: "user", content: question }, { role: "assistant", content: final.answer });
      state.history = state.history.slice(-8);
    }
  } catch (e) {
    msg.className = "msg error";
    body.textContent = `${t("error")}: ${e.message}`;
    msg.dataset.done = "true";
  } finally {
    state.busy = false;
    $("#ask-btn").disabled = false;
  }
}

$("#ask-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = $("#question").value.trim();
  if (!q || state.busy) return;
  $("#question").value = "";
  ask(q);
});

$("#question").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $("#ask-form").requestSubmit();
  }
});

// --- page viewer ----------------------------------------------------------------------------------
async function openPage(c) {
  const viewer = $("#viewer");
  viewer.hidden = false;
  $("#viewer-title").textContent = `${c.doc} · ${state.lang === "zh" ? `第 ${c.page} 页` : `p. ${c.page}`}`;
  $("#viewer-quote").textContent = c.quote;
  const img = $("#page-image");
  img.removeAttribute("data-loaded");
  const params = new URLSearchParams({ kb: state.kb, highlight: c.quote || "" });
  try {
    // fetched (not <img src>) so the Authorization header goes with it
    const response = await api(`/v1/documents/${encodeURIComponent(c.doc_id)}/pages/${c.page}.png?${params}`);
    const blob = await response.blob();
    if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
    img.dataset.matches = response.headers.get("X-Highlight-Matches") || "0";
    img.onload = () => { img.dataset.loaded = "true"; };
    img.src = URL.createObjectURL(blob);
  } catch (e) {
    toast(`${t("error")}: ${e.message}`);
  }
}

$("#viewer-close").addEventListener("click", () => { $("#viewer").hidden = true; });

$("#lang-btn").addEventListener("click", () => {
  state.lang = state.lang === "zh" ? "en" : "zh";
  localStorage.setItem("citeqa.lang", state.lang);
  applyLang();
  for (const { el, job } of state.jobs.values()) renderJob(el, job);
  document.querySelectorAll(".timing").forEach(renderTiming);
  guard(loadDocs());
});

$("#key-btn").addEventListener("click", askForKey);

applyLang();
refreshAll();
