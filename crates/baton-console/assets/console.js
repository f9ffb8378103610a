// Baton console: the only script. Live sections (data-live) are redrawn from Server-Sent
// Events; each event's data is the section's new HTML, rendered and escaped by the server.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-live]").forEach(function (section) {
    var source = new EventSource(section.getAttribute("data-live"));
    source.addEventListener("update", function (event) {
      section.innerHTML = event.data;
      section.setAttribute("data-updated", String(Date.now()));
    });
    source.addEventListener("end", function () { source.close(); });
  });
  // Typed confirmations: a button stays disabled until its input holds the expected text.
  document.querySelectorAll("[data-confirm]").forEach(function (input) {
    var button = document.getElementById(input.getAttribute("data-confirm"));
    var expected = input.getAttribute("data-expected");
    var check = function () { button.disabled = input.value !== expected; };
    input.addEventListener("input", check);
    check();
  });
});
