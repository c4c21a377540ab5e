// Small enhancements for every store page; each works without it.
(function () {
  "use strict";
  // The project switcher submits as soon as a project is chosen.
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
    var button = select.form.querySelector("button");
    if (button) button.hidden = true;
  });
})();
