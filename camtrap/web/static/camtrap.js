// camtrap: the little the pages need beyond htmx. Everything works without it: the bulk
// bar is then always shown; with it, it appears once a visit is ticked, with the count.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  function update() {
    var bar = document.getElementById("bulk");
    if (!bar) return;
    var n = document.querySelectorAll('input[name="visit_id"][form="bulk"]:checked').length;
    var all = bar.querySelector('input[name="all"]');
    var on = n > 0 || (all && all.checked);
    bar.classList.toggle("has", !!on);
    var label = bar.querySelector("[data-count]");
    if (label) label.textContent = all && all.checked ? "Every visit of this filter:" :
      n ? n + " selected:" : "Tick visits to review several at once";
  }
  document.addEventListener("change", update);
  document.addEventListener("htmx:afterSwap", update);
  document.addEventListener("DOMContentLoaded", update);
})();
