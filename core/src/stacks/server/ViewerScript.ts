/**
 * The browser side of the stack viewer, served as /stacks-assets/viewer.js and viewer.css:
 * plain JavaScript (no build step) that shows the frame embedded in the page and switches the
 * attachment shown when a param widget changes. Drawing an attachment is left to the plugin
 * viewer that claims it (`dstackViewer.register`, see core/src/stacks/StackViewer.ts); without
 * one it shows the metadata and a download link.
 */

export const VIEWER_CSS = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1f2328; }
header { display: flex; gap: 1em; align-items: center; padding: 0.8em 1.5em; border-bottom: 1px solid #d0d7de; }
header h1 { font-size: 1.3em; margin: 0; } .owner { color: #57606a; }
.access { font-size: 0.8em; padding: 0.1em 0.6em; border-radius: 1em; border: 1px solid #d0d7de; }
main { display: flex; gap: 2em; padding: 1em 1.5em; } .frame { flex: 1; min-width: 0; } aside { width: 18em; }
.params { display: flex; flex-wrap: wrap; gap: 1em; margin-bottom: 1em; } .params label { display: flex; gap: 0.4em; align-items: center; }
.attachment table { border-collapse: collapse; } .attachment td, .attachment th { border: 1px solid #d0d7de; padding: 0.2em 0.6em; }
#history li.current a { font-weight: bold; } .error { color: #cf222e; } .attachment img { max-width: 100%; }
`

export const VIEWER_JS = String.raw`(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("stack-data").textContent);
  var frame = data.frame;
  var out = document.getElementById("attachment");
  var form = document.getElementById("params");
  var desc = document.getElementById("description");
  var loaded = {};
  var registered = {};
  window.dstackViewer = { register: function (name, render) { registered[name] = render; } };

  function loadScript(url) {
    if (!loaded[url]) {
      loaded[url] = new Promise(function (resolve, reject) {
        var s = document.createElement("script");
        s.src = url;
        s.onload = resolve;
        s.onerror = function () { delete loaded[url]; reject(new Error("cannot load " + url)); };
        document.head.appendChild(s);
      });
    }
    return loaded[url];
  }
  function viewerUrl(name, file) { return "/stacks-assets/viewers/" + encodeURIComponent(name) + "/" + encodeURIComponent(file); }
  function q(index, extra) {
    var p = new URLSearchParams({ stack: data.stack, frame_id: frame.id, index: String(index) });
    for (var k in extra || {}) p.set(k, String(extra[k]));
    return p.toString();
  }
  function download(index) { return "/api/stacks/attachment?" + q(index); }
  function fetchOk(url) {
    return fetch(url, { credentials: "same-origin" }).then(function (r) {
      if (!r.ok) return r.text().then(function (t) { throw new Error("HTTP " + r.status + ": " + t); });
      return r;
    });
  }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function mediaType(ct) { return ct.split(";")[0].trim().toLowerCase(); }

  // ---- params as widgets
  var keys = [];
  var values = {};
  frame.attachments.forEach(function (a) {
    Object.keys(a.params).forEach(function (k) {
      if (keys.indexOf(k) < 0) { keys.push(k); values[k] = []; }
      var j = JSON.stringify(a.params[k]);
      if (values[k].map(JSON.stringify).indexOf(j) < 0) values[k].push(a.params[k]);
    });
  });
  var current = {};
  var first = frame.attachments[0] ? frame.attachments[0].params : {};
  keys.forEach(function (k) {
    var vs = values[k];
    current[k] = k in first ? first[k] : vs[0];
    var label = el("label", {}, k + " ");
    var input;
    if (vs.every(function (v) { return typeof v === "boolean"; })) {
      input = el("input", { type: "checkbox", "data-param": k, name: k });
      input.checked = current[k] === true;
      input.addEventListener("change", function () { current[k] = input.checked; show(); });
    } else if (vs.every(function (v) { return typeof v === "number"; })) {
      vs.sort(function (a, b) { return a - b; });
      input = el("input", { type: "range", "data-param": k, name: k, min: "0", max: String(vs.length - 1), step: "1" });
      input.value = String(vs.indexOf(current[k]));
      var shown = el("output", { "data-param-value": k }, String(current[k]));
      input.addEventListener("input", function () { current[k] = vs[Number(input.value)]; shown.textContent = String(current[k]); show(); });
      label.appendChild(input);
      label.appendChild(shown);
      form.appendChild(label);
      return;
    } else {
      input = el("select", { "data-param": k, name: k });
      vs.forEach(function (v, i) {
        var o = el("option", { value: String(i) }, typeof v === "string" ? v : JSON.stringify(v));
        if (JSON.stringify(v) === JSON.stringify(current[k])) o.selected = true;
        input.appendChild(o);
      });
      input.addEventListener("change", function () { current[k] = vs[Number(input.value)]; show(); });
    }
    label.appendChild(input);
    form.appendChild(label);
  });

  function matches(a) {
    return keys.every(function (k) { return JSON.stringify(a.params[k]) === JSON.stringify(current[k]); });
  }

  // ---- drawing: the plugin viewer that claims the attachment, else its metadata
  function claims(declared, ct) {
    declared = declared.toLowerCase();
    return declared.charAt(declared.length - 1) === "*" ? ct.indexOf(declared.slice(0, -1)) === 0 : ct === declared;
  }
  function viewerFor(a) {
    var ct = mediaType(a.content_type);
    var byType = data.viewers.filter(function (v) { return v.contentTypes.some(function (d) { return claims(d, ct); }); })[0];
    return byType || data.viewers.filter(function (v) { return v.applications.indexOf(a.application) >= 0; })[0];
  }
  function loadViewer(name) {
    return loadScript(viewerUrl(name, "index.js")).then(function () {
      if (!registered[name]) throw new Error("the viewer " + name + " did not call dstackViewer.register(\"" + name + "\", …)");
      return registered[name];
    });
  }
  function context(a, index, name) {
    return {
      attachment: a,
      index: index,
      container: out,
      download: download(index),
      json: function () { return fetchOk(download(index)).then(function (r) { return r.json(); }); },
      fetch: fetchOk,
      asset: function (file) { return viewerUrl(name, file); },
      loadScript: loadScript,
      query: function (extra) { return q(index, extra); },
      el: el
    };
  }
  function renderMetadata(a, index) {
    var dl = el("dl", { class: "metadata" });
    Object.keys(a.metadata).forEach(function (k) {
      dl.appendChild(el("dt", {}, k));
      var v = a.metadata[k];
      dl.appendChild(el("dd", {}, typeof v === "object" ? JSON.stringify(v) : String(v)));
    });
    out.appendChild(el("p", {}, a.application + " · " + a.content_type + (a.size !== null ? " · " + a.size + " bytes" : "")));
    out.appendChild(dl);
    var link = el("a", { href: download(index), download: "" }, "Download");
    out.appendChild(link);
    return Promise.resolve();
  }

  function show() {
    var index = -1;
    for (var i = 0; i < frame.attachments.length; i++) if (matches(frame.attachments[i])) { index = i; break; }
    out.textContent = "";
    out.removeAttribute("data-rendered");
    if (index < 0) {
      out.setAttribute("data-index", "");
      out.appendChild(el("p", { class: "error" }, "No attachment has these params"));
      return;
    }
    var a = frame.attachments[index];
    out.setAttribute("data-index", String(index));
    out.setAttribute("data-application", a.application);
    desc.textContent = a.description || "";
    var viewer = viewerFor(a);
    out.setAttribute("data-viewer", viewer ? viewer.name : "");
    var job = viewer
      ? loadViewer(viewer.name).then(function (render) {
        if (out.getAttribute("data-index") === String(index)) return render(context(a, index, viewer.name));
      })
      : renderMetadata(a, index);
    job.then(function () { if (out.getAttribute("data-index") === String(index)) out.setAttribute("data-rendered", "true"); },
      function (e) { out.appendChild(el("p", { class: "error" }, String(e && e.message || e))); });
  }
  show();
})();
`
