// jpipe demo page: plain JavaScript, no dependencies, talks to the /v1 API of `jpipe serve`.
"use strict";

const LABEL_JA = {
  Gourmet: "グルメ",
  Keitai: "携帯電話",
  Kyoto: "京都観光",
  Sports: "スポーツ",
  negative: "ネガティブ",
  neutral: "ニュートラル",
  positive: "ポジティブ",
};
const TASK_JA = { topic: "トピック", sentiment: "評判 (感情)" };
const ENDED_JA = { eos: "文末 (EOS)", max_tokens: "最大トークン数 (max tokens)" };
const SOURCE_JA = {
  auto: "自動 auto (GiNZA 全語彙 → word2vec)",
  word2vec: "word2vec (コーパス学習)",
  spacy: "spaCy / GiNZA (コーパス語彙)",
  ginza: "GiNZA 全語彙 (48万語)",
  combined: "結合 (GiNZA + word2vec)",
  imported: "インポート",
};
const THEME_OPTIONS = { Gourmet: "グルメ Gourmet", Keitai: "携帯電話 Keitai", Kyoto: "京都観光 Kyoto", Sports: "スポーツ Sports" };

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, String(value));
  }
  for (const child of children) node.append(child);
  return node;
}

function labelText(label) {
  return LABEL_JA[label] ? `${LABEL_JA[label]} ${label}` : label;
}

// ------------------------------------------------------------------ API calls and errors
class ApiError extends Error {
  constructor(code, message, hint) {
    super(message);
    this.code = code;
    this.hint = hint;
  }
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    // not JSON (a proxy page, a crash): fall back to the status line
  }
  const err = body && body.error ? body.error : {};
  return new ApiError(err.code || `HTTP ${response.status}`, err.message || response.statusText || "Request failed", err.hint);
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (exc) {
    throw new ApiError("NETWORK", "サーバーに接続できません (the server did not answer).", String(exc.message || exc));
  }
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

function postJSON(payload, extra = {}) {
  return { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload), ...extra };
}

function showError(box, error) {
  box.replaceChildren();
  if (!error) {
    box.hidden = true;
    return;
  }
  if (error.code) box.append(el("span", { class: "code", text: error.code }));
  box.append(el("span", { class: "message", text: error.message || String(error) }));
  if (error.hint) box.append(el("span", { class: "hint", text: error.hint }));
  box.hidden = false;
}

function setBusy(form, results, busy) {
  for (const button of form.querySelectorAll("button[type=submit]")) button.disabled = busy;
  if (results) results.classList.toggle("busy", busy);
  form.setAttribute("aria-busy", busy ? "true" : "false");
}

// Ctrl+Enter (or Cmd+Enter) submits the form of a textarea; single-line inputs submit on Enter natively.
function submitOnCtrlEnter(textarea) {
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      textarea.form.requestSubmit();
    }
  });
}

function numberValue(input, fallback) {
  const value = Number(input.value);
  return input.value.trim() === "" || Number.isNaN(value) ? fallback : value;
}

// ------------------------------------------------------------------ /v1/models
function namesOf(value) {
  if (!value) return [];
  if (Array.isArray(value)) return value.map((item) => (typeof item === "string" ? item : item.name)).filter(Boolean);
  return Object.keys(value);
}

function fillTasks(tasks) {
  const box = $("classify-tasks");
  box.querySelectorAll("label").forEach((node) => node.remove());
  for (const task of tasks) {
    const input = el("input", { type: "checkbox", name: "task", value: task, id: `task-${task}` });
    input.checked = true;
    box.append(el("label", { for: `task-${task}` }, input, `${TASK_JA[task] || task} `, el("span", { class: "en", text: task })));
  }
}

function fillSelect(select, values, labels, keepFirst) {
  const first = keepFirst ? select.querySelector("option") : null;
  select.replaceChildren(...(first ? [first] : []));
  for (const value of values) select.append(el("option", { value, text: labels[value] || value }));
}

// A panel whose model is not loaded says so, and its controls are disabled.
function enablePanel(id, enabled, message) {
  const panel = $(id);
  for (const control of panel.querySelectorAll("input, select, textarea, button[type=submit]")) control.disabled = !enabled;
  panel.classList.toggle("unavailable", !enabled);
  let note = panel.querySelector(".unavailable-note");
  if (!enabled && !note) {
    note = el("p", { class: "unavailable-note", text: message });
    panel.querySelector("h2").after(note);
  }
  if (enabled && note) note.remove();
}

// A test figure of the report: the mean ± std over seeds when the report has several seeds
// ("0.612 ± 0.015 (5 seeds)"), else the single figure; "-" when the report has none.
function seedFigure(metrics, key, digits) {
  const m = metrics || {};
  const seeds = Number(m.seeds || 1);
  const mean = m[`${key}_mean`];
  const std = m[`${key}_std`];
  if (seeds > 1 && typeof mean === "number" && typeof std === "number") {
    return `${mean.toFixed(digits)} ± ${std.toFixed(digits)} (${seeds} seeds)`;
  }
  const value = m[key];
  return typeof value === "number" ? value.toFixed(digits) : "-";
}

// One line per panel on the loaded models: test metrics from /v1/models.
function describeModels(entries) {
  const classifiers = entries.filter((entry) => entry.kind === "classifier");
  const vectors = entries.filter((entry) => entry.kind === "vectors");
  const generator = entries.find((entry) => entry.kind === "generator");
  const notes = {
    "classify-note": classifiers.length
      ? `BiLSTM + attention · テスト macro-F1: ${classifiers.map((c) => `${TASK_JA[c.task] || c.task} ${seedFigure(c.test_metrics, "macro_f1", 3)}`).join(" · ")}`
      : "",
    "similar-note": vectors.map((v) => `${v.source} ${Number(v.vocab_size || 0).toLocaleString("ja-JP")} 語 × ${v.dim} 次元`).join(" · "),
    "generate-note": generator ? `LSTM 言語モデル · テスト perplexity ${seedFigure(generator.test_metrics, "perplexity", 1)}` : "",
  };
  for (const [id, text] of Object.entries(notes)) $(id).textContent = text;
}

const LOAD_RETRIES = 120;

async function loadModels(attempt = 0) {
  const status = $("model-status");
  try {
    const info = await api("/v1/models");
    const entries = Array.isArray(info.models) ? info.models : [];
    const tasks = namesOf(info.tasks);
    const sources = namesOf(info.vector_sources || info.sources);
    const generator = entries.find((entry) => entry.kind === "generator");
    fillTasks(tasks);
    fillSelect($("similar-source"), sources.length ? ["auto", ...sources] : [], SOURCE_JA, false);
    fillSelect($("gen-theme"), generator ? namesOf(generator.themes) : [], THEME_OPTIONS, true);
    enablePanel("panel-classify", tasks.length > 0, "分類モデルがありません (no classifier loaded).");
    enablePanel("panel-similar", sources.length > 0, "単語ベクトルがありません (no word vectors loaded).");
    enablePanel("panel-generate", Boolean(generator), "生成モデルがありません (no generator loaded).");
    describeModels(entries);
    const parts = [`分類: ${tasks.map((t) => TASK_JA[t] || t).join("・") || "なし"}`, `ベクトル: ${sources.join(", ") || "なし"}`];
    parts.push(`生成: ${generator ? "あり" : "なし"}`);
    status.textContent = `読み込み済み · ${parts.join(" / ")}`;
  } catch (error) {
    // E330: the server is still loading its models; ask again every second, for two minutes at most.
    if (error.code === "E330" && attempt < LOAD_RETRIES) {
      status.textContent = `モデルを読み込み中… (loading, ${attempt + 1} s)`;
      setTimeout(() => loadModels(attempt + 1), 1000);
      return;
    }
    fillTasks(["topic", "sentiment"]);
    fillSelect($("similar-source"), ["auto"], SOURCE_JA, false);
    status.textContent = `モデル情報を取得できません: ${error.message}`;
    status.classList.add("bad");
  }
  document.body.dataset.ready = "true";
}

// ------------------------------------------------------------------ (1) classify
function renderBars(probabilities, predicted) {
  const bars = el("dl", { class: "bars" });
  const entries = Object.entries(probabilities).sort((a, b) => b[1] - a[1]);
  for (const [label, p] of entries) {
    const pct = (100 * p).toFixed(1);
    const row = el("div", { class: `bar-row${label === predicted ? " top" : ""}`, "data-label": label, "data-prob": p, style: "display: contents" });
    const fill = el("span", { style: `width: ${Math.max(0, Math.min(100, 100 * p))}%` });
    row.append(
      el("dt", { text: labelText(label) }),
      el("dd", {}, el("div", { class: "bar", role: "img", "aria-label": `${label} ${pct}%` }, fill), el("span", { class: "pct", text: `${pct}%` })),
    );
    bars.append(row);
  }
  return bars;
}

function moveTokenFocus(event) {
  const keys = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 };
  const tokens = [...event.currentTarget.querySelectorAll(".tok")];
  const index = tokens.indexOf(document.activeElement);
  if (index < 0) return;
  let next = null;
  if (event.key in keys) next = Math.max(0, Math.min(tokens.length - 1, index + keys[event.key]));
  else if (event.key === "Home") next = 0;
  else if (event.key === "End") next = tokens.length - 1;
  if (next === null) return;
  event.preventDefault();
  tokens[index].tabIndex = -1;
  tokens[next].tabIndex = 0;
  tokens[next].focus();
}

function renderHeatmap(tokens, weights) {
  const max = Math.max(...weights, 1e-9);
  const map = el("div", { class: "heatmap", role: "list", "aria-label": "注意の重み (attention); 矢印キーでトークンを移動" });
  tokens.forEach((token, i) => {
    const weight = weights[i];
    const ratio = weight / max;
    const tip = `重み weight ${weight >= 0.001 ? weight.toFixed(4) : weight.toExponential(1)}`;
    const span = el("span", {
      class: `tok${ratio > 0.6 ? " hot" : ""}`,
      role: "listitem",
      tabindex: i === 0 ? 0 : -1,
      "data-weight": weight,
      "data-tip": tip,
      "aria-label": `${token}: ${tip}`,
      style: `--w: ${(0.04 + 0.86 * ratio).toFixed(3)}`,
      text: token,
    });
    map.append(span);
  });
  map.addEventListener("keydown", moveTokenFocus);
  const legend = el("div", { class: "legend", "aria-hidden": "true" }, "低", el("span", { class: "ramp" }), "高 (マウスを重ねる・フォーカスで重みを表示)");
  return [el("p", { class: "heat-title", text: "注意ヒートマップ Attention" }), map, legend];
}

// A text that is not Japanese keeps its label, with the server's warning beside it.
function languageNote(warning) {
  return el("span", { class: "lang-warning", role: "note", title: "日本語ではないため、この予測は信頼できません", text: `⚠ ${warning}` });
}

function renderTask(task, result, warning) {
  const card = el("article", { class: "task-card", "data-task": task, "data-label": result.label });
  const heading = el("h3", {}, el("span", { text: `${TASK_JA[task] || task}` }), el("span", { class: "pred", text: `→ ${labelText(result.label)}` }));
  if (warning) heading.append(languageNote(warning));
  card.append(heading, renderBars(result.probabilities, result.label));
  if (Array.isArray(result.tokens) && Array.isArray(result.weights) && result.tokens.length) {
    card.append(...renderHeatmap(result.tokens, result.weights));
  }
  return card;
}

async function onClassify(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const results = $("classify-results");
  const text = $("classify-text").value;
  const tasks = [...form.querySelectorAll("input[name=task]:checked")].map((input) => input.value);
  showError($("classify-error"), null);
  setBusy(form, results, true);
  try {
    const data = await api("/v1/classify", postJSON({ texts: [text], tasks, explain: true }));
    const row = data.results[0];
    if (row.error) throw new ApiError(row.error.code, row.error.message, row.error.hint);
    results.replaceChildren(...Object.entries(row.tasks).map(([task, result]) => renderTask(task, result, row.warning)));
    results.dataset.text = text;
  } catch (error) {
    results.replaceChildren();
    showError($("classify-error"), error);
  } finally {
    setBusy(form, results, false);
  }
}

// ------------------------------------------------------------------ (2) similarity
function renderNeighbours(data) {
  const list = el("ol", { class: "neighbours", "aria-label": `「${data.word}」の類似語` });
  data.neighbours.forEach((neighbour, i) => {
    const word = el("button", { type: "button", class: "word", title: "この語で検索 (search this word)", text: neighbour.word });
    word.addEventListener("click", () => {
      $("similar-word").value = neighbour.word;
      $("similar-form").requestSubmit();
    });
    const fill = el("span", { style: `width: ${Math.max(0, Math.min(100, 100 * neighbour.score))}%` });
    list.append(
      el(
        "li",
        { "data-word": neighbour.word, "data-score": neighbour.score },
        el("span", { class: "rank", text: i + 1 }),
        word,
        el("div", { class: "bar", "aria-hidden": "true" }, fill),
        el("span", { class: "pct", text: neighbour.score.toFixed(3) }),
      ),
    );
  });
  const composed = data.composed ? "（複数語の平均 averaged）" : "";
  return [el("p", { class: "sim-head", text: `「${data.word}」に近い語 · ${SOURCE_JA[data.source] || data.source}${composed}` }), list];
}

async function onSimilar(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const results = $("similar-results");
  const params = new URLSearchParams({ word: $("similar-word").value, topn: String(numberValue($("similar-topn"), 10)), source: $("similar-source").value });
  showError($("similar-error"), null);
  setBusy(form, results, true);
  try {
    const data = await api(`/v1/similar?${params}`);
    results.replaceChildren(...renderNeighbours(data));
  } catch (error) {
    results.replaceChildren();
    showError($("similar-error"), error);
  } finally {
    setBusy(form, results, false);
  }
}

async function onPair(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const out = $("pair-result");
  const pair = [$("pair-a").value, $("pair-b").value];
  showError($("pair-error"), null);
  setBusy(form, out, true);
  try {
    const data = await api("/v1/similarity", postJSON({ pairs: [pair], source: $("similar-source").value }));
    const error = data.errors && data.errors[0];
    if (error) throw new ApiError(error.code, error.message, error.hint);
    const score = data.scores[0];
    out.dataset.score = score;
    out.replaceChildren(`「${pair[0]}」と「${pair[1]}」のコサイン類似度`, el("span", { class: "score", text: score.toFixed(4) }));
  } catch (error) {
    out.replaceChildren();
    delete out.dataset.score;
    showError($("pair-error"), error);
  } finally {
    setBusy(form, out, false);
  }
}

// ------------------------------------------------------------------ (3) generate, streamed by SSE over fetch
let generation = null; // the AbortController of the running generation

function generatePayload() {
  return {
    prompt: $("gen-prompt").value,
    theme: $("gen-theme").value || null,
    temperature: numberValue($("gen-temperature"), 1.0),
    top_k: numberValue($("gen-top-k"), 0),
    top_p: numberValue($("gen-top-p"), 1.0),
    max_tokens: numberValue($("gen-max-tokens"), 40),
    seed: numberValue($("gen-seed"), 0),
    num: 1,
    stream: true,
  };
}

// Reads `data: {...}` events from a streamed response body and calls onEvent for each parsed one.
async function readEvents(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder("utf-8");
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    const blocks = buffer.split(/\r?\n\r?\n/);
    buffer = done ? "" : blocks.pop();
    for (const block of blocks) {
      const data = block
        .split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data) onEvent(JSON.parse(data));
    }
    if (done) return;
  }
}

function renderOutput(out, prompt, text) {
  out.replaceChildren();
  if (prompt && text.startsWith(prompt)) {
    out.append(el("span", { class: "prompt", text: prompt }), text.slice(prompt.length));
  } else {
    out.append(text);
  }
}

async function onGenerate(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const out = $("gen-output");
  const payload = generatePayload();
  showError($("gen-error"), null);
  $("gen-meta").textContent = "";
  generation = new AbortController();
  setBusy(form, null, true);
  $("gen-stop").disabled = false;
  let streamed = "";
  let count = 0;
  let first = "";
  out.dataset.state = "streaming";
  out.dataset.tokens = "0";
  renderOutput(out, payload.prompt, payload.prompt);  // until the first piece arrives
  try {
    const response = await fetch("/v1/generate", postJSON(payload, { signal: generation.signal }));
    if (!response.ok) throw await errorFrom(response);
    await readEvents(response.body, (message) => {
      if (message.error) throw new ApiError(message.error.code, message.error.message, message.error.hint);
      if (typeof message.token === "string") {
        if (count === 0) first = message.token;
        streamed += message.token;
        count += 1;
        out.dataset.tokens = String(count);
        renderOutput(out, payload.prompt, streamed);
      }
      if (message.done) {
        renderOutput(out, payload.prompt, message.text ?? streamed);
        out.dataset.state = "done";
        const seed = message.seed ?? payload.seed;
        const ended = ENDED_JA[message.ended] || message.ended;
        // The server sends the prompt back as the first piece: what the model wrote is the rest.
        const written = count - (payload.prompt.trim() && first.trim() === payload.prompt.trim() ? 1 : 0);
        $("gen-meta").textContent = `${written} トークン生成 · seed ${seed}${ended ? ` · 終了: ${ended}` : ""}`;
      }
    });
    if (out.dataset.state !== "done") out.dataset.state = "done";
  } catch (error) {
    const stopped = error.name === "AbortError";
    out.dataset.state = stopped ? "stopped" : "error";
    if (stopped) $("gen-meta").textContent = "停止しました (stopped).";
    else showError($("gen-error"), error.code ? error : new ApiError("STREAM", error.message || String(error)));
  } finally {
    generation = null;
    $("gen-stop").disabled = true;
    setBusy(form, null, false);
  }
}

// ------------------------------------------------------------------ start
document.addEventListener("DOMContentLoaded", () => {
  submitOnCtrlEnter($("classify-text"));
  $("classify-form").addEventListener("submit", onClassify);
  $("similar-form").addEventListener("submit", onSimilar);
  $("pair-form").addEventListener("submit", onPair);
  $("generate-form").addEventListener("submit", onGenerate);
  $("gen-stop").addEventListener("click", () => generation && generation.abort());
  loadModels();
});
