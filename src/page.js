(function () {
  // Refresh the page body every 10 s from the same URL (same-origin credentials included).
  var every = 10000;
  function tick() {
    fetch(location.pathname, { cache: "no-store" })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
      .then(function (t) {
        var fresh = new DOMParser().parseFromString(t, "text/html").getElementById("main");
        if (fresh) { document.getElementById("main").replaceWith(fresh); }
      })
      .catch(function () {
        var s = document.getElementById("stale");
        if (s) { s.hidden = false; }
      })
      .then(function () { setTimeout(tick, every); });
  }
  setTimeout(tick, every);
})();
