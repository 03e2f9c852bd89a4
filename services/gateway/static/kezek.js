/* Kezek web pages: the device fingerprint, sign-in, and the signed-in pages over the JSON API.
 * No build step, no library. Data is put into the page with textContent only (never innerHTML).
 * The bearer token stays in localStorage and goes out only in the Authorization header, so no
 * cookie can make the browser act for the user. */
(function () {
  "use strict";

  var body = document.body;
  var LANG = body.dataset.lang === "ru" ? "ru" : "kk";
  var LABELS = {};
  try { LABELS = JSON.parse(document.getElementById("labels").textContent || "{}"); } catch (e) {}
  function t(key) { return Object.prototype.hasOwnProperty.call(LABELS, key) ? LABELS[key] : key; }
  function en(prefix, value) {
    if (value === null || value === undefined || value === "") return "";
    var key = prefix + "." + value;
    return Object.prototype.hasOwnProperty.call(LABELS, key) ? LABELS[key] : String(value);
  }

  // -- SHA-256 (SubtleCrypto where the page is a secure context; this fallback elsewhere) ------
  function sha256Fallback(text) {
    var bytes = new TextEncoder().encode(text);
    var K = [], H = [], primes = 0, n = 2;
    function frac(x) { return ((x - Math.floor(x)) * 4294967296) | 0; }
    while (primes < 64) {
      var prime = true;
      for (var d = 2; d * d <= n; d++) { if (n % d === 0) { prime = false; break; } }
      if (prime) {
        if (primes < 8) H[primes] = frac(Math.pow(n, 1 / 2));
        K[primes] = frac(Math.pow(n, 1 / 3));
        primes++;
      }
      n++;
    }
    var length = ((bytes.length + 9 + 63) >> 6) << 6;
    var padded = new Uint8Array(length);
    padded.set(bytes);
    padded[bytes.length] = 0x80;
    var view = new DataView(padded.buffer);
    var bits = bytes.length * 8;
    view.setUint32(length - 8, Math.floor(bits / 4294967296));
    view.setUint32(length - 4, bits >>> 0);
    function ror(x, r) { return (x >>> r) | (x << (32 - r)); }
    var w = new Int32Array(64);
    for (var off = 0; off < length; off += 64) {
      for (var i = 0; i < 16; i++) w[i] = view.getUint32(off + i * 4);
      for (i = 16; i < 64; i++) {
        var s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >>> 3);
        var s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >>> 10);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
      }
      var a = H[0], b = H[1], c = H[2], dd = H[3], e = H[4], f = H[5], g = H[6], h = H[7];
      for (i = 0; i < 64; i++) {
        var t1 = (h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) | 0;
        var t2 = ((ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
        h = g; g = f; f = e; e = (dd + t1) | 0; dd = c; c = b; b = a; a = (t1 + t2) | 0;
      }
      H = [H[0] + a | 0, H[1] + b | 0, H[2] + c | 0, H[3] + dd | 0,
           H[4] + e | 0, H[5] + f | 0, H[6] + g | 0, H[7] + h | 0];
    }
    return H.map(function (x) { return ("0000000" + (x >>> 0).toString(16)).slice(-8); }).join("");
  }

  function sha256(text) {
    if (window.crypto && window.crypto.subtle) {
      return window.crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)).then(function (buf) {
        return Array.prototype.map.call(new Uint8Array(buf), function (x) {
          return ("0" + x.toString(16)).slice(-2);
        }).join("");
      });
    }
    return Promise.resolve(sha256Fallback(text));
  }

  // -- the device fingerprint -------------------------------------------------------------------
  var FP_KEY = "kezek_fp";
  function fingerprintSource() {
    var zone = "";
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) {}
    return JSON.stringify([
      navigator.userAgent, navigator.language, (navigator.languages || []).join(","),
      screen.width + "x" + screen.height + "x" + screen.colorDepth, zone,
      navigator.platform || "", navigator.hardwareConcurrency || 0
    ]);
  }
  function storedFingerprint() {
    try {
      var value = localStorage.getItem(FP_KEY);
      return value && /^[0-9a-f]{64}$/.test(value) ? value : null;
    } catch (e) { return null; }
  }
  var fingerprint = (function () {
    var known = storedFingerprint();
    var made = known ? Promise.resolve(known) : sha256(fingerprintSource());
    return made.then(function (fp) {
      try { localStorage.setItem(FP_KEY, fp); } catch (e) {}
      // page requests carry it in a cookie (a plain link or form cannot send a header)
      document.cookie = "kezek_fp=" + fp + "; path=/; max-age=31536000; SameSite=Lax" +
        (location.protocol === "https:" ? "; Secure" : "");
      return fp;
    });
  })();

  // -- the session ------------------------------------------------------------------------------
  var TOKEN_KEY = "kezek_token";
  function claimsOf(token) {
    try {
      var part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      while (part.length % 4) part += "=";
      var raw = atob(part);
      var bytes = new Uint8Array(raw.length);
      for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch (e) { return null; }
  }
  function session() {
    var stored;
    try { stored = JSON.parse(localStorage.getItem(TOKEN_KEY) || "null"); } catch (e) { stored = null; }
    if (!stored || !stored.token) return null;
    var claims = claimsOf(stored.token);
    if (!claims || !claims.exp || claims.exp * 1000 <= Date.now()) {
      localStorage.removeItem(TOKEN_KEY);
      return null;
    }
    return { token: stored.token, role: claims.role, org: claims.org, phone: claims.phone, sub: claims.sub };
  }
  function signOut() {
    localStorage.removeItem(TOKEN_KEY);
    location.href = "/";
  }

  // -- the JSON API -----------------------------------------------------------------------------
  function ApiError(status, code, message, field) {
    this.status = status; this.code = code; this.message = message; this.field = field;
  }
  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var a = new Uint8Array(16);
    crypto.getRandomValues(a);
    return Array.prototype.map.call(a, function (x) { return ("0" + x.toString(16)).slice(-2); }).join("");
  }
  function api(method, path, data, options) {
    options = options || {};
    return fingerprint.then(function (fp) {
      var headers = { "Accept": options.accept || "application/json", "X-Device-Fingerprint": fp };
      var s = session();
      if (s) headers["Authorization"] = "Bearer " + s.token;
      if (data !== undefined) headers["Content-Type"] = "application/json";
      if (method !== "GET") headers["Idempotency-Key"] = options.key || newKey();
      return fetch(path, {
        method: method, headers: headers, credentials: "same-origin",
        body: data === undefined ? undefined : JSON.stringify(data)
      }).catch(function () {
        throw new ApiError(0, "NETWORK", t("e.NETWORK"), null);
      });
    }).then(function (r) {
      var type = r.headers.get("Content-Type") || "";
      var read = type.indexOf("json") >= 0 ? r.json() : r.text();
      return read.then(function (payload) {
        if (r.ok) return payload;
        var err = (payload && payload.error) || {};
        if (r.status === 401 && session()) localStorage.removeItem(TOKEN_KEY);
        throw new ApiError(r.status, err.code || "HTTP_" + r.status, err.message || String(r.status),
                           err.field || null);
      });
    });
  }
  function errorText(err) {
    if (!(err instanceof ApiError)) return String(err && err.message || err);
    var key = "e." + err.code;
    var text = Object.prototype.hasOwnProperty.call(LABELS, key) ? LABELS[key] : err.message;
    return text + (err.field ? " (" + err.field + ")" : "") + " [" + err.code + "]";
  }

  // -- DOM helpers ------------------------------------------------------------------------------
  function $(selector, root) { return (root || document).querySelector(selector); }
  function $all(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }
  function el(tag, attrs) {
    var node = document.createElement(tag);
    attrs = attrs || {};
    Object.keys(attrs).forEach(function (name) {
      var value = attrs[name];
      if (value === null || value === undefined || value === false) return;
      if (name === "class") node.className = value;
      else if (value === true) node.setAttribute(name, "");
      else node.setAttribute(name, String(value));
    });
    for (var i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }
  function append(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(node, c); }); return; }
    node.append(child instanceof Node ? child : String(child));
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function show(node, text) {
    if (!node) return;
    node.textContent = text || "";
    node.hidden = !text;
  }
  function localTime(value, withTime) {
    if (!value) return "";
    var date = new Date(value);
    if (isNaN(date.getTime())) return String(value);
    var options = { timeZone: "Asia/Almaty", year: "numeric", month: "2-digit", day: "2-digit" };
    if (withTime !== false) { options.hour = "2-digit"; options.minute = "2-digit"; }
    try { return date.toLocaleString(LANG === "ru" ? "ru-RU" : "kk-KZ", options); }
    catch (e) { return date.toISOString(); }
  }
  function dl(pairs) {
    var list = el("dl");
    pairs.forEach(function (pair) {
      if (pair[1] === null || pair[1] === undefined || pair[1] === "") return;
      list.append(el("dt", {}, pair[0]), el("dd", {}, pair[1]));
    });
    return list;
  }
  // a form's submit: one request at a time, the same Idempotency-Key if it is sent again
  function onSubmit(form, handler) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (form.dataset.busy) return;
      form.dataset.busy = "1";
      if (!form.dataset.key) form.dataset.key = newKey();
      var buttons = $all("button", form);
      buttons.forEach(function (b) { b.disabled = true; });
      Promise.resolve().then(function () {
        return handler(event, form.dataset.key);
      }).then(function () {
        delete form.dataset.key;
      }, function () {}).then(function () {
        delete form.dataset.busy;
        buttons.forEach(function (b) { b.disabled = false; });
      });
    });
  }
  function value(form, name) {
    var field = form.elements[name];
    return field ? String(field.value || "").trim() : "";
  }
  function normalizePhone(text) {
    var digits = String(text || "").replace(/[\s()\-]/g, "");
    if (/^8[0-9]{10}$/.test(digits)) return "+7" + digits.slice(1);
    if (/^7[0-9]{10}$/.test(digits)) return "+" + digits;
    return digits;
  }
  function safeNext(next) {
    return next && next.charAt(0) === "/" && next.charAt(1) !== "/" && next.charAt(1) !== "\\" ? next : null;
  }
  var HOMES = { applicant: "/me", staff: "/staff", officer: "/officer", auditor: "/audit" };

  // -- the header: who is signed in, which links to show -----------------------------------------
  function header(s) {
    if (!s) return;
    $all("[data-role]").forEach(function (node) {
      if (node.dataset.role === s.role) node.hidden = false;
    });
    var who = $("#who");
    if (who) show(who, t("role." + s.role) + (s.phone ? " " + s.phone : ""));
    var link = $("#sign-in-link");
    if (link) link.hidden = true;
    var out = $("#sign-out");
    if (out) { out.hidden = false; out.addEventListener("click", signOut); }
  }

  // -- pages ------------------------------------------------------------------------------------
  var pages = {};

  pages["sign-in"] = function () {
    var otp = $("#otp-form"), codeForm = $("#code-form"), error = $("#sign-in-error");
    var phone = null;
    onSubmit(otp, function (event, key) {
      show(error, "");
      phone = normalizePhone(value(otp, "phone"));
      return api("POST", "/api/v1/auth/otp", { phone: phone }, { key: key }).then(function () {
        codeForm.hidden = false;
        codeForm.elements.code.focus();
      }, function (err) { show(error, errorText(err)); throw err; });
    });
    onSubmit(codeForm, function (event, key) {
      show(error, "");
      return api("POST", "/api/v1/auth/token", { phone: phone, code: value(codeForm, "code") }, { key: key })
        .then(function (answer) {
          localStorage.setItem(TOKEN_KEY, JSON.stringify(answer));
          var next = safeNext(new URLSearchParams(location.search).get("next"));
          location.href = next || HOMES[answer.role] || "/";
        }, function (err) { show(error, errorText(err)); throw err; });
    });
  };

  pages.apply = function (s) {
    var form = $("#apply-form"), box = $("#preferred"), error = $("#apply-error");
    var result = $("#apply-result");
    if (s.phone && !value(form, "applicant.phone")) form.elements["applicant.phone"].value = s.phone;
    var loading = 0;
    function loadOrganizations() {
      var district = value(form, "district"), language = value(form, "language");
      clear(box);
      if (!district) { box.append(el("p", { class: "hint" }, t("m.choose_district"))); return; }
      box.append(el("p", { class: "hint" }, t("m.loading")));
      var mine = ++loading;
      var query = new URLSearchParams({ district: district, language: language, page_size: "500" });
      api("GET", "/api/v1/organizations?" + query).then(function (page) {
        if (mine !== loading) return;
        clear(box);
        if (!page.items.length) { box.append(el("p", { class: "hint" }, t("m.no_organizations"))); return; }
        page.items.forEach(function (org) {
          var input = el("input", { type: "checkbox", name: "preferred_organizations", value: org.id });
          box.append(el("label", { class: "check" }, input,
                        el("span", {}, org.name + (org.address ? " — " + org.address : ""))));
        });
        box.dataset.loaded = String(page.items.length);
      }, function (err) { clear(box); box.append(el("p", { class: "notice error" }, errorText(err))); });
    }
    box.addEventListener("change", function () {
      var checked = $all("input:checked", box);
      $all("input", box).forEach(function (input) { input.disabled = !input.checked && checked.length >= 3; });
    });
    form.elements.district.addEventListener("change", loadOrganizations);
    form.elements.language.addEventListener("change", loadOrganizations);
    if (value(form, "district")) loadOrganizations();
    onSubmit(form, function (event, key) {
      show(error, "");
      var category = value(form, "benefit.category");
      var data = {
        applicant: { iin: value(form, "applicant.iin"), full_name: value(form, "applicant.full_name"),
                     phone: normalizePhone(value(form, "applicant.phone")) },
        child: { iin: value(form, "child.iin"), full_name: value(form, "child.full_name"),
                 birth_date: value(form, "child.birth_date") },
        queue_type: value(form, "queue_type"),
        language: value(form, "language"),
        district: value(form, "district"),
        preferred_organizations: $all("input:checked", box).map(function (i) { return parseInt(i.value, 10); }),
        desired_start: value(form, "desired_start"),
        benefit: category ? { category: category, document: value(form, "benefit.document") } : null
      };
      return api("POST", "/api/v1/applications", data, { key: key }).then(function (filed) {
        form.hidden = true;
        clear(result);
        result.append(
          el("p", { class: "notice ok" }, t("m.filed")),
          el("p", { class: "big-label" }, t("f.queue_number")),
          el("p", { class: "big-number", id: "filed-queue-number" }, filed.queue_number === null ? "—" : filed.queue_number),
          dl([[t("f.application_number"), filed.application_number], [t("f.queue_name"), filed.queue_name],
              [t("f.filed_at"), localTime(filed.filed_at)], [t("f.status"), en("status", filed.status)]]),
          el("p", {}, el("a", { href: "/me", class: "button" }, t("nav.me")), " ",
             el("a", { href: "/queue/lookup?application_number=" + encodeURIComponent(filed.application_number) }, t("nav.lookup"))));
        result.hidden = false;
        result.scrollIntoView();
      }, function (err) { show(error, errorText(err)); throw err; });
    });
  };

  function actionForm(label, className, fields, handler) {
    var danger = /\bdanger\b/.test(className || "");
    var form = el("form", { class: "inline " + (className || "") }, fields,
                  el("button", { type: "submit", class: danger ? "danger" : null }, label));
    onSubmit(form, function (event, key) { return handler(form, key); });
    return form;
  }

  // a link to an organisation, its name filled in from the public registry
  var organizationNames = {};
  function organizationLink(id) {
    var link = el("a", { href: "/organizations/" + encodeURIComponent(id) }, "#" + id);
    if (!organizationNames[id]) {
      organizationNames[id] = api("GET", "/api/v1/organizations/" + encodeURIComponent(id))
        .then(function (org) { return org.name; }, function () { return null; });
    }
    organizationNames[id].then(function (name) { if (name) link.textContent = name; });
    return link;
  }

  pages.me = function () {
    var list = $("#applications"), error = $("#me-error");
    var shown = {};  // application number -> "status/direction status" as last rendered
    function act(promise, number) {
      show(error, "");
      var before = shown[number];
      return promise.then(function () {
        // the application learns of the queue's change by an event a moment later: reload
        // until it shows
        var tries = 0;
        function again() {
          return load().then(function () {
            if (shown[number] === before && ++tries < 10) {
              return new Promise(function (ok) { setTimeout(ok, 400); }).then(again);
            }
          });
        }
        return again();
      }, function (err) { show(error, errorText(err)); throw err; });
    }
    function render(app) {
      var n = encodeURIComponent(app.application_number);
      shown[app.application_number] = app.status + "/" + (app.direction ? app.direction.status : "");
      var card = el("li", { class: "card", "data-application": app.application_number });
      card.append(el("h3", {}, app.application_number + " · " + en("status", app.status)));
      card.append(el("p", { class: "big-label" }, t("f.queue_number")),
                  el("p", { class: "queue-number" }, app.queue_number === null || app.queue_number === undefined ? "—" : app.queue_number));
      var benefit = app.benefit ? (app.benefit.name && app.benefit.name[LANG] || app.benefit.category) +
        " — " + en("benefit", app.benefit.status) : "";
      var stop = app.stop_list ? en("reason", app.stop_list.reason) +
        (app.stop_list.exits_at ? " (" + t("f.until") + " " + localTime(app.stop_list.exits_at, false) + ")" : "") : "";
      card.append(dl([
        [t("f.child_name"), app.child && app.child.full_name],
        [t("f.queue_name"), app.queue_name],
        [t("f.filed_at"), localTime(app.filed_at)],
        [t("f.benefit"), benefit],
        [t("f.stop_list"), stop]
      ]));
      var d = app.direction;
      if (d) {
        var box = el("div", { class: "direction", "data-direction": d.number },
          el("strong", {}, t("f.direction") + " " + d.number),
          dl([[t("f.status"), en("dstatus", d.status)], [t("f.direction_type"), en("dtype", d.type)],
              [t("f.organization"), organizationLink(d.organization_id)],
              [t("f.issued_at"), localTime(d.issued_at)], [t("f.expires_at"), localTime(d.expires_at)]]));
        card.append(box);
      }
      var actions = el("div", { class: "actions" });
      if (d && d.status === "issued") {
        actions.append(actionForm(t("a.decline"), "danger decline", [], function (form, key) {
          if (!confirm(t("m.confirm_decline"))) return Promise.resolve();
          return act(api("POST", "/api/v1/directions/" + encodeURIComponent(d.number) + "/decline",
                         undefined, { key: key }), app.application_number);
        }));
      }
      if (app.status === "queued") {
        actions.append(actionForm(t("a.postpone"), "postpone",
          el("label", {}, el("span", {}, t("f.until")), el("input", { type: "date", name: "until", required: true })),
          function (form, key) {
            return act(api("POST", "/api/v1/applications/" + n + "/postpone", { until: value(form, "until") }, { key: key }), app.application_number);
          }));
      }
      if (app.status === "stop_listed" && !(app.stop_list && app.stop_list.reason === "documents_check")) {
        actions.append(actionForm(t("a.resume"), "resume", [], function (form, key) {
          return act(api("POST", "/api/v1/applications/" + n + "/resume", undefined, { key: key }), app.application_number);
        }));
      }
      if (app.status !== "withdrawn" && app.status !== "provided") {
        actions.append(actionForm(t("a.withdraw"), "danger withdraw", [], function (form, key) {
          if (!confirm(t("m.confirm_withdraw"))) return Promise.resolve();
          return act(api("POST", "/api/v1/applications/" + n + "/withdraw", undefined, { key: key }), app.application_number);
        }));
      }
      if (actions.childNodes.length) card.append(actions);
      return card;
    }
    function load() {
      return api("GET", "/api/v1/applications?page_size=100").then(function (page) {
        clear(list);
        if (!page.items.length) { list.append(el("p", { class: "empty" }, t("m.no_applications"))); return; }
        list.append(el("ul", { class: "cards" }, page.items.map(render)));
        list.dataset.loaded = "1";
      }, function (err) { clear(list); show(error, errorText(err)); });
    }
    load();
  };

  pages.feed = function () {
    var list = $("#feed"), error = $("#feed-error");
    api("GET", "/api/v1/me/events?page_size=100").then(function (page) {
      clear(list);
      if (!page.items.length) { list.append(el("li", { class: "empty" }, t("m.no_feed"))); }
      page.items.forEach(function (entry) {
        var text = entry.text ? entry.text[LANG] || entry.text.kk || entry.text.ru : entry.kind;
        list.append(el("li", { "data-kind": entry.kind, "data-application": entry.application_number || "" },
          el("time", { datetime: entry.at }, localTime(entry.at)), text));
      });
      list.dataset.loaded = "1";
    }, function (err) { clear(list); show(error, errorText(err)); });
  };

  pages.vacancies = function (s) {
    if (!s || s.role !== "applicant") return;
    var select = $("#claim-with"), out = $("#claim-result");
    api("GET", "/api/v1/applications?page_size=100").then(function (page) {
      page.items.filter(function (a) { return a.status === "queued"; }).forEach(function (a) {
        select.append(el("option", { value: a.application_number }, a.application_number + " — " + (a.child && a.child.full_name || "")));
      });
    });
    $all("button.claim").forEach(function (button) {
      button.addEventListener("click", function () {
        if (!select.value) return;
        button.disabled = true;
        api("POST", "/api/v1/vacancies/" + encodeURIComponent(button.dataset.placeId) + "/claim",
            { application_number: select.value })
          .then(function (answer) {
            show(out, answer.status === "issued" ? t("m.claim_issued") + (answer.direction ? " " + answer.direction.number : "")
                                                 : t("m.claim_pooled"));
          }, function (err) { show(out, errorText(err)); })
          .then(function () { button.disabled = false; });
      });
    });
  };

  pages.staff = function (s) {
    var groups = $("#groups"), error = $("#staff-error"), dirs = $("#org-directions");
    if (!s.org) { show(error, t("m.wrong_role")); return; }
    function loadDirections() {
      var query = new URLSearchParams({ organization_id: s.org, status: "issued", page_size: "100" });
      return api("GET", "/api/v1/directions?" + query).then(function (page) {
        clear(dirs);
        if (!page.items.length) { dirs.append(el("p", { class: "empty" }, t("m.nothing"))); return; }
        dirs.append(el("ul", { class: "cards" }, page.items.map(function (d) {
          return el("li", { class: "card", "data-direction": d.number },
            el("h3", {}, d.number),
            dl([[t("f.child_name"), d.child_name], [t("f.birth_year"), d.birth_year],
                [t("f.language"), en("language", d.language)], [t("f.expires_at"), localTime(d.expires_at)]]),
            actionForm(t("a.enroll"), "enroll", [], function (form, key) {
              return enroll(d.number, key);
            }));
        })));
      }, function (err) { show(error, errorText(err)); });
    }
    function enroll(number, key) {
      show(error, "");
      return api("POST", "/api/v1/directions/" + encodeURIComponent(number) + "/enroll", undefined, { key: key })
        .then(function () { return loadDirections(); }, function (err) { show(error, errorText(err)); throw err; });
    }
    onSubmit($("#enroll-form"), function (event, key) { return enroll(value($("#enroll-form"), "number"), key); });
    api("GET", "/api/v1/organizations/" + encodeURIComponent(s.org)).then(function (org) {
      clear(groups);
      groups.append(el("p", {}, el("a", { href: "/organizations/" + org.id }, org.name)));
      groups.append(el("ul", { class: "cards" }, (org.groups || []).map(function (g) {
        var released = el("p", { class: "released", role: "status" });
        var form = actionForm(t("a.release"), "release",
          el("label", {}, el("span", {}, t("f.places")),
             el("input", { type: "number", name: "places", min: 1, max: 100, value: 1, required: true })),
          function (form, key) {
            show(error, "");
            return api("POST", "/api/v1/organizations/" + org.id + "/groups/" + g.id + "/releases",
                       { places: parseInt(value(form, "places"), 10) }, { key: key })
              .then(function (answer) {
                clear(released);
                append(released, [t("m.released") + ": ", answer.place_ids.map(function (id) { return el("code", { class: "place-id" }, id + " "); })]);
                setTimeout(loadDirections, 1500);
              }, function (err) { show(error, errorText(err)); throw err; });
          });
        return el("li", { class: "card", "data-group-id": g.id },
          el("h3", {}, g.name),
          dl([[t("f.group_type"), en("group_type", g.group_type)], [t("f.birth_year"), g.birth_year],
              [t("f.language"), en("language", g.language)], [t("f.capacity"), g.capacity],
              [t("f.enrolled"), g.enrolled]]),
          form, released);
      })));
      groups.dataset.loaded = "1";
    }, function (err) { clear(groups); show(error, errorText(err)); });
    loadDirections();
  };

  pages.officer = function () {
    var ok = $("#officer-result"), error = $("#officer-error");
    function done(text) { show(error, ""); show(ok, text); }
    function failed(err) { show(ok, ""); show(error, errorText(err)); throw err; }
    var load = $("#benefit-load"), view = $("#benefit-view"), verify = $("#benefit-form");
    var current = null;
    function showApplication(app) {
      current = app.application_number;
      clear(view);
      var b = app.benefit;
      view.append(el("ul", { class: "cards" }, el("li", { class: "card", "data-application": app.application_number },
        el("h3", {}, app.application_number + " · " + en("status", app.status)),
        dl([[t("f.child_name"), app.child && app.child.full_name],
            [t("f.applicant_name"), app.applicant && app.applicant.full_name],
            [t("f.benefit"), b ? (b.name && b.name[LANG] || b.category) : t("m.no_benefit_claim")],
            [t("f.benefit_tier"), b ? en("tier", b.tier) : ""],
            [t("f.benefit_document"), b ? b.document : ""],
            [t("f.benefit_status"), b ? en("benefit", b.status) : ""],
            [t("f.note"), b ? b.note : ""]]))));
      verify.hidden = !(b && b.status === "claimed");
    }
    onSubmit(load, function () {
      show(error, "");
      return api("GET", "/api/v1/applications/" + encodeURIComponent(value(load, "number")))
        .then(showApplication, failed);
    });
    onSubmit(verify, function (event, key) {
      var approved = !(event.submitter && event.submitter.value === "false");
      var note = value(verify, "note");
      return api("POST", "/api/v1/applications/" + encodeURIComponent(current) + "/benefit/verify",
                 { approved: approved, note: note || null }, { key: key })
        .then(function (app) { showApplication(app); done(t("m.done")); }, failed);
    });
    var stop = $("#stop-form");
    onSubmit(stop, function (event, key) {
      var n = encodeURIComponent(value(stop, "number"));
      var exit = event.submitter && event.submitter.value === "exit";
      var request = exit
        ? api("POST", "/api/v1/applications/" + n + "/stop-list/exit", undefined, { key: key })
        : api("POST", "/api/v1/applications/" + n + "/stop-list",
              { reason: value(stop, "reason"), until: value(stop, "until") || null }, { key: key });
      return request.then(function (row) {
        done(t("m.done") + ": " + row.application_number + " — " + en("status", row.status));
      }, failed);
    });
    var orgForm = $("#org-form"), groupForm = $("#group-form");
    onSubmit(orgForm, function (event, key) {
      var fee = value(orgForm, "monthly_fee_kzt");
      var data = {
        name: value(orgForm, "name"), address: value(orgForm, "address"),
        district: value(orgForm, "district"), ownership: value(orgForm, "ownership"),
        kind: value(orgForm, "kind"),
        languages: $all("input[name=languages]:checked", orgForm).map(function (i) { return i.value; }),
        monthly_fee_kzt: fee === "" ? null : parseInt(fee, 10)
      };
      return api("POST", "/api/v1/organizations", data, { key: key }).then(function (org) {
        groupForm.elements.organization_id.value = org.id;
        orgForm.dataset.created = String(org.id);
        done(t("m.done") + ": " + org.name + " (ID " + org.id + ")");
      }, failed);
    });
    onSubmit(groupForm, function (event, key) {
      var data = {
        name: value(groupForm, "name"), group_type: value(groupForm, "group_type"),
        birth_year: parseInt(value(groupForm, "birth_year"), 10), language: value(groupForm, "language"),
        capacity: parseInt(value(groupForm, "capacity"), 10),
        enrolled: parseInt(value(groupForm, "enrolled") || "0", 10)
      };
      return api("POST", "/api/v1/organizations/" + encodeURIComponent(value(groupForm, "organization_id")) + "/groups",
                 data, { key: key }).then(function (group) {
        groupForm.dataset.created = String(group.id);
        done(t("m.done") + ": " + group.name + " (ID " + group.id + ")");
      }, failed);
    });
  };

  pages.audit = function () {
    var form = $("#audit-form"), list = $("#audit-results"), error = $("#audit-error");
    var total = $("#audit-total"), more = $("#audit-more"), page = 1;
    function query(extra) {
      var q = new URLSearchParams();
      $all("input, select", form).forEach(function (field) {
        if (field.name && String(field.value).trim()) q.set(field.name, String(field.value).trim());
      });
      Object.keys(extra || {}).forEach(function (k) { q.set(k, extra[k]); });
      return q;
    }
    function render(r) {
      return el("li", { class: "card", "data-action": r.action, "data-outcome": r.outcome, "data-actor": r.actor },
        el("h3", {}, r.action),
        dl([[t("f.at"), localTime(r.at)], [t("f.actor"), r.actor], [t("f.role"), en("role", r.role)],
            [t("f.target"), r.target], [t("f.outcome"), r.outcome], [t("f.ip"), r.ip],
            [t("f.fingerprint"), r.fingerprint ? el("code", {}, r.fingerprint) : ""],
            [t("f.user_agent"), r.user_agent], [t("f.request_id"), el("code", {}, r.request_id)]]));
    }
    function search(reset) {
      show(error, "");
      if (reset) { page = 1; clear(list); }
      return api("GET", "/api/v1/audit?" + query({ page: page, page_size: 50 })).then(function (result) {
        result.items.forEach(function (r) { list.append(render(r)); });
        show(total, t("m.total") + ": " + result.total);
        more.hidden = page * result.page_size >= result.total;
        list.dataset.loaded = String(list.childNodes.length);
      }, function (err) { show(error, errorText(err)); throw err; });
    }
    onSubmit(form, function () { return search(true); });
    more.addEventListener("click", function () { page += 1; search(false); });
    $("#audit-csv").addEventListener("click", function () {
      api("GET", "/api/v1/audit?" + query({ format: "csv", page_size: 500 }), undefined, { accept: "text/csv" })
        .then(function (csv) {
          var link = el("a", { href: URL.createObjectURL(new Blob([csv], { type: "text/csv" })), download: "audit.csv" });
          document.body.append(link);
          link.click();
          link.remove();
        }, function (err) { show(error, errorText(err)); });
    });
    $("#verify-chain").addEventListener("click", function () {
      var out = $("#chain-result");
      clear(out);
      api("GET", "/api/v1/audit/verify").then(function (check) {
        out.append(el("p", { class: "notice " + (check.ok ? "ok" : "error"), "data-ok": String(check.ok) },
                      check.ok ? t("m.chain_ok") : t("m.chain_broken")),
                   dl([[t("f.records"), check.records], [t("f.head"), check.head ? el("code", {}, check.head) : ""],
                       [t("m.chain_problem"), check.broken ? check.broken.problem + " (#" + check.broken.seq + ")" : ""]]));
      }, function (err) { show(error, errorText(err)); });
    });
  };

  // -- start ------------------------------------------------------------------------------------
  function start() {
    var s = session();
    header(s);
    var roles = (body.dataset.roles || "").split(",").filter(Boolean);
    if (roles.length) {
      if (!s) {
        location.replace("/sign-in?next=" + encodeURIComponent(location.pathname + location.search));
        return;
      }
      if (roles.indexOf(s.role) < 0) {
        show($("#guard"), t("m.wrong_role"));
        $all("main > :not(h1):not(#guard)").forEach(function (node) { node.hidden = true; });
        return;
      }
    }
    var init = pages[body.dataset.page];
    if (init) init(s);
  }
  // for the browser tests: the fingerprint this device sends, and the fallback hash
  window.Kezek = { fingerprint: fingerprint, sha256Fallback: sha256Fallback };
  start();
})();
