// The script editor: CodeMirror 5 over the form's textarea (the form works without it),
// completion of the script API, live validation through POST /console/scripts/validate
// (the same checks as `jsrt scripts create`), the parse error's line and column marked.
(function () {
  "use strict";

  var API = [
    "ctx", "ctx.tenantId", "ctx.scriptId", "ctx.executionId", "ctx.userId", "ctx.organizationId",
    "ctx.trigger", "ctx.trigger.type", "ctx.trigger.event_id", "ctx.trigger.event_type",
    "ctx.trigger.published_at", "ctx.trigger.attempt", "ctx.trigger.depth",
    "ctx.trigger.scheduled_for", "ctx.trigger.missed_ticks", "ctx.input", "ctx.auth",
    "ctx.events.publish(type, payload)", "ctx.http.fetch(url, { method, headers, body, timeoutMs })",
    "ctx.db.query(sql, params)", "ctx.db.queryOne(sql, params)", "ctx.db.execute(sql, params)",
    "ctx.db.transaction(async (tx) => {})", "ctx.cache.get(key)",
    "ctx.cache.set(key, value, ttlSeconds)", "ctx.cache.delete(key)", "ctx.cache.exists(key)",
    "ctx.cache.increment(key, delta)", "ctx.secrets.get(NAME)",
    "ctx.crypto.hmacSha256(key, message)",
    "context", "context.tenantId", "context.scriptId", "context.executionId", "context.input",
    "context.trigger", "context.userId", "context.organizationId",
    "sdk.http.get(url, opts)", "sdk.http.post(url, body, opts)", "sdk.http.put(url, body, opts)",
    "sdk.http.patch(url, body, opts)", "sdk.http.delete(url, opts)",
    "sdk.db.query(sql, params)", "sdk.db.queryOne(sql, params)", "sdk.db.execute(sql, params)",
    "sdk.db.transaction(async (tx) => {})", "sdk.cache.get(key)", "sdk.cache.set(key, value, ttlSeconds)",
    "sdk.cache.delete(key)", "sdk.cache.exists(key)", "sdk.cache.increment(key, delta)",
    "sdk.log.debug(message, metadata)", "sdk.log.info(message, metadata)",
    "sdk.log.warn(message, metadata)", "sdk.log.error(message, metadata)",
    "events.publish(type, payload)",
    "console.log()", "console.info()", "console.warn()", "console.error()", "console.debug()",
    "setTimeout(fn, ms)", "clearTimeout(id)", "structuredClone(value)", "atob(text)", "btoa(text)",
    "new TextEncoder()", "new TextDecoder()", "new URL(url, base)", "new URLSearchParams(query)",
    "crypto.randomUUID()", "crypto.getRandomValues(array)", "crypto.subtle.digest('SHA-256', data)",
    "crypto.subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify'])",
    "crypto.subtle.sign('HMAC', key, data)", "crypto.subtle.verify('HMAC', key, signature, data)",
    "export default async function handler(input, ctx) {\n}",
    "async function handler(input, ctx) {\n}"
  ];

  function hint(cm) {
    var cur = cm.getCursor();
    var line = cm.getLine(cur.line).slice(0, cur.ch);
    var m = /[A-Za-z_$][\w$.]*$/.exec(line);
    var word = m ? m[0] : "";
    var list = API.filter(function (w) { return word && w.indexOf(word) === 0 && w !== word; });
    return { list: list, from: CodeMirror.Pos(cur.line, cur.ch - word.length), to: cur };
  }

  var marked = null;

  function mark(cm, errors) {
    if (marked !== null) { cm.removeLineClass(marked, "background", "cm-error-line"); marked = null; }
    for (var i = 0; i < errors.length; i++) {
      if (errors[i].line) {
        marked = cm.addLineClass(errors[i].line - 1, "background", "cm-error-line");
        break;
      }
    }
  }

  function annotations(cm, errors) {
    var out = [];
    errors.forEach(function (e) {
      if (!e.line) return;
      var line = Math.min(e.line - 1, cm.lineCount() - 1);
      var col = e.column ? e.column - 1 : 0;
      var end = e.column ? e.column : cm.getLine(line).length;
      out.push({ from: CodeMirror.Pos(line, col), to: CodeMirror.Pos(line, Math.max(end, col + 1)),
                 message: e.message, severity: "error" });
    });
    return out;
  }

  function showProblems(errors) {
    var box = document.getElementById("problems");
    var state = document.getElementById("check-state");
    if (!box) return;
    box.textContent = "";
    if (state) state.textContent = errors.length ? "" : "No problems found.";
    if (!errors.length) return;
    var div = document.createElement("div");
    div.className = "error";
    div.setAttribute("role", "alert");
    var ul = document.createElement("ul");
    ul.className = "problems";
    errors.forEach(function (e) {
      var li = document.createElement("li");
      li.textContent = (e.line ? "line " + e.line + (e.column ? ", column " + e.column : "") + ": " : "") + e.message;
      ul.appendChild(li);
    });
    div.appendChild(ul);
    box.appendChild(div);
  }

  function check(form, done) {
    var data = new URLSearchParams(new FormData(form));
    var token = data.get("csrf") || "";
    fetch(form.getAttribute("data-validate-url"), {
      method: "POST", body: data, credentials: "same-origin",
      headers: { "X-CSRF-Token": token, "Accept": "application/json" }
    }).then(function (r) { return r.ok ? r.json() : null; }).then(function (body) {
      if (body) done(body.errors || []);
    }).catch(function () { /* offline: the server checks again on save */ });
  }

  function showTrigger(form) {
    var type = form.querySelector("#type");
    if (!type) return;
    var sets = form.querySelectorAll("fieldset.trigger");
    for (var i = 0; i < sets.length; i++) {
      sets[i].classList.toggle("hidden", sets[i].getAttribute("data-for") !== type.value);
    }
  }

  function init() {
    var form = document.getElementById("script-form");
    var area = document.getElementById("source");
    if (!form || !area) return;
    showTrigger(form);
    form.addEventListener("change", function (ev) { if (ev.target.id === "type") showTrigger(form); });
    if (typeof CodeMirror === "undefined") return;  // the textarea stays: the form still works
    var readOnly = area.hasAttribute("readonly");
    var cm = CodeMirror.fromTextArea(area, {
      mode: "javascript", lineNumbers: true, matchBrackets: true, autoCloseBrackets: true,
      styleActiveLine: true, indentUnit: 2, tabSize: 2, readOnly: readOnly,
      screenReaderLabel: "Source",
      gutters: ["CodeMirror-lint-markers"],
      extraKeys: { "Ctrl-Space": "autocomplete", "Tab": false, "Shift-Tab": false },
      hintOptions: { hint: hint, completeSingle: false },
      lint: readOnly ? false : {
        async: true, delay: 700,
        getAnnotations: function (text, update, options, editor) {
          area.value = text;  // the form is what is checked (editor.save is not there yet at start)
          check(form, function (errors) { mark(editor, errors); showProblems(errors); update(editor, annotations(editor, errors)); });
        }
      }
    });
    cm.on("inputRead", function (editor, change) {
      if (change.text.length === 1 && /[\w.]/.test(change.text[0])) editor.showHint({ hint: hint, completeSingle: false });
    });
    var line = parseInt(area.getAttribute("data-error-line") || "", 10);
    if (line > 0) {
      var col = parseInt(area.getAttribute("data-error-column") || "", 10);
      var err = [{ line: line, column: col > 0 ? col : null, message: area.getAttribute("data-error-message") || "" }];
      mark(cm, err);
      cm.setCursor(CodeMirror.Pos(line - 1, col > 0 ? col - 1 : 0));
    }
    var button = document.getElementById("check-now");
    if (button) {
      button.classList.remove("hidden");
      button.addEventListener("click", function () { cm.performLint(); });
    }
    document.addEventListener("click", function (ev) {
      var a = ev.target.closest ? ev.target.closest("[data-goto-line]") : null;
      if (!a) return;
      ev.preventDefault();
      cm.focus();
      cm.setCursor(CodeMirror.Pos(parseInt(a.getAttribute("data-goto-line"), 10) - 1, 0));
    });
    window.jsrtEditor = cm;  // for the browser tests and the curious
  }

  document.addEventListener("DOMContentLoaded", init);
})();
