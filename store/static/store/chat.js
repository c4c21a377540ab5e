// Store chat: post the message, then render the run's answer as it streams
// from the store's own SSE endpoint (session cookie, no API key). The page
// works without this script: the form posts and the page reloads.
(function () {
  "use strict";
  var form = document.getElementById("chat-form");
  var log = document.getElementById("log");
  if (!form || !log || !window.fetch || !window.EventSource) return;
  var input = form.querySelector("textarea");
  var button = form.querySelector("button");

  function escapeHtml(s) {
    return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }
  // Markdown for the text while it streams. The input is escaped first, so
  // nothing the model says can become a tag; links are http(s) only and
  // images are never loaded (the final message comes rendered by the server).
  function inline(s) {
    return s
      .replace(/`([^`]+)`/g, "<code>$1</code>")
      .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
      .replace(/\*([^*]+)\*/g, "<em>$1</em>")
      .replace(/!\[([^\]]*)\]\([^)]*\)/g, "[image: $1]")
      .replace(/\[([^\]]+)\]\((https?:\/\/[^)\s]+)\)/g,
        '<a href="$2" rel="nofollow noopener noreferrer" target="_blank">$1</a>');
  }
  function renderMarkdown(text) {
    var parts = escapeHtml(text).split("```");
    var html = "";
    for (var i = 0; i < parts.length; i++) {
      if (i % 2 === 1) {
        html += "<pre><code>" + parts[i].replace(/^[^\n]*\n/, "") + "</code></pre>";
        continue;
      }
      parts[i].split(/\n{2,}/).forEach(function (block) {
        if (!block.trim()) return;
        var h = block.match(/^(#{1,6}) (.*)$/);
        if (h) { html += "<h" + h[1].length + ">" + inline(h[2]) + "</h" + h[1].length + ">"; return; }
        if (/^\s*([-*]|\d+\.) /.test(block)) {
          html += "<ul>" + block.split("\n").map(function (li) {
            return "<li>" + inline(li.replace(/^\s*([-*]|\d+\.) /, "")) + "</li>";
          }).join("") + "</ul>";
          return;
        }
        html += "<p>" + inline(block).replace(/\n/g, "<br>") + "</p>";
      });
    }
    return html;
  }
  function bubble(role, html) {
    var starters = log.querySelector(".starters");
    if (starters) starters.remove();
    var div = document.createElement("div");
    div.className = "msg " + role;
    div.innerHTML = html;
    log.appendChild(div);
    div.scrollIntoView({ block: "end" });
    return div;
  }
  function stream(eventsUrl) {
    var div = bubble("assistant streaming", "");
    var text = "";
    var source = new EventSource(eventsUrl);
    source.addEventListener("delta", function (e) {
      text += JSON.parse(e.data).text;
      div.innerHTML = renderMarkdown(text);
    });
    source.addEventListener("message", function (e) {
      div.innerHTML = JSON.parse(e.data).html; // rendered and escaped server-side
    });
    source.addEventListener("status", function (e) {
      var s = JSON.parse(e.data);
      if (s.status !== "completed") {
        div.classList.add("error");
        div.appendChild(document.createTextNode(" " + (s.error || "The answer stopped (" + s.status + ").")));
      }
    });
    source.addEventListener("done", function () {
      source.close();
      div.classList.remove("streaming");
      button.disabled = false;
      input.focus();
    });
  }
  function send(text) {
    button.disabled = true;
    bubble("user", escapeHtml(text).replace(/\n/g, "<br>"));
    var body = new FormData(form);
    body.set("text", text);
    fetch(form.action, {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "Accept": "application/json" },
    }).then(function (r) {
      return r.json().then(function (data) { return { ok: r.ok, data: data }; });
    }).then(function (res) {
      if (!res.ok) {
        bubble("assistant error", escapeHtml(res.data.error || "Something went wrong."));
        button.disabled = false;
        return;
      }
      if (form.action.indexOf(res.data.conversation_url) === -1) {
        // The conversation exists now: later messages (and a reload) go there.
        form.action = res.data.conversation_url;
        history.replaceState(null, "", res.data.conversation_url);
      }
      stream(res.data.events_url);
    }).catch(function () {
      bubble("assistant error", "Network error.");
      button.disabled = false;
    });
  }
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text || button.disabled) return;
    input.value = "";
    send(text);
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
  });
  log.addEventListener("click", function (e) {
    var t = e.target.closest("[data-starter]");
    if (t) send(t.getAttribute("data-starter"));
  });
})();
