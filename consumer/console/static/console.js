// The web console's small script (no inline script anywhere: the CSP forbids it).
// - <time datetime> in the viewer's own zone, UTC kept in the title
// - [data-copy="#id"] buttons copy a field's value (a key shown once)
// - forms with [data-confirm] ask before submitting; selects with [data-autosubmit] submit
(function () {
  "use strict";
  var fmt;
  try {
    fmt = new Intl.DateTimeFormat(undefined, {
      year: "numeric", month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
    });
  } catch (e) { fmt = null; }

  function localTimes(root) {
    if (!fmt) return;
    var nodes = (root || document).querySelectorAll("time[datetime]");
    for (var i = 0; i < nodes.length; i++) {
      var el = nodes[i];
      if (el.dataset.local === "1") continue;
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d.getTime())) continue;
      el.textContent = fmt.format(d);
      el.dataset.local = "1";
    }
  }

  function onClick(ev) {
    var btn = ev.target.closest ? ev.target.closest("[data-copy]") : null;
    if (!btn) return;
    var field = document.querySelector(btn.getAttribute("data-copy"));
    if (!field) return;
    var text = field.value !== undefined ? field.value : field.textContent;
    var done = function () { btn.textContent = "Copied"; };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(done, function () { field.select(); });
    } else if (field.select) {
      field.select();
      document.execCommand("copy");
      done();
    }
  }

  function onSubmit(ev) {
    var form = ev.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) ev.preventDefault();
  }

  function onChange(ev) {
    var el = ev.target;
    if (el.hasAttribute && el.hasAttribute("data-autosubmit") && el.form) el.form.requestSubmit();
  }

  document.addEventListener("DOMContentLoaded", function () { localTimes(document); });
  document.addEventListener("htmx:afterSettle", function (ev) { localTimes(ev.target); });
  document.addEventListener("click", onClick);
  document.addEventListener("submit", onSubmit, true);
  document.addEventListener("change", onChange);
  window.jsrtConsole = { localTimes: localTimes };
})();
