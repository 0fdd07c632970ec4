// Live updates of the cfn console (hand-written, no dependencies). Pages are complete
// without it; it opens one EventSource per page (the element with data-live) and
// applies what cfnd sends: timeline entries, a run's new status, or a whole fragment.
(function () {
  "use strict";
  var root = document.querySelector("[data-live]");
  if (!root || !window.EventSource) { return; }
  var source = new EventSource(root.getAttribute("data-live"));

  function parse(e) { try { return JSON.parse(e.data); } catch (_) { return null; } }

  source.addEventListener("entry", function (e) {
    var m = parse(e);
    if (!m) { return; }
    var empty = document.getElementById("timeline-empty");
    if (empty) { empty.remove(); }
    if (document.getElementById("e-" + e.lastEventId)) { return; }
    var group = document.getElementById(m.group);
    if (!group) {
      root.insertAdjacentHTML("beforeend", m.group_html);
      group = document.getElementById(m.group);
    }
    group.querySelector("ol.entries").insertAdjacentHTML("beforeend", m.html);
  });

  source.addEventListener("status", function (e) {
    var m = parse(e);
    if (!m) { return; }
    var badge = document.querySelector("#run-status .badge");
    if (badge) {
      badge.textContent = m.status;
      badge.className = "badge s-" + m.status;
    }
    var actions = document.getElementById("run-actions");
    if (actions) { actions.outerHTML = m.actions_html; }
  });

  // Never replace what someone is typing into (an answer to an escalation, say): keep
  // the newest fragment and apply it once they leave the form untouched or submit.
  var pending = null;
  function editing(el) {
    var fields = el.querySelectorAll("input:not([type=hidden]), textarea");
    for (var i = 0; i < fields.length; i++) {
      if (fields[i] === document.activeElement || fields[i].value !== fields[i].defaultValue) {
        return true;
      }
    }
    return false;
  }
  function apply() {
    var el = pending && document.getElementById(pending.id);
    if (el && !editing(el)) { el.outerHTML = pending.html; pending = null; }
  }
  source.addEventListener("fragment", function (e) {
    pending = parse(e);
    apply();
  });
  document.addEventListener("focusout", function () { setTimeout(apply, 0); });
})();
