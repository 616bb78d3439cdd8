(function () {
  "use strict";
  // Runs in <head>: the class hides the other cycles' prices before the first paint (no flash).
  document.documentElement.className += " js";
  function show(cycle) {
    var blocks = document.querySelectorAll(".price[data-cycle]");
    for (var i = 0; i < blocks.length; i++) {
      blocks[i].classList.toggle("shown", blocks[i].getAttribute("data-cycle") === cycle);
    }
    var links = document.querySelectorAll("a[data-href-" + cycle + "]");
    for (var j = 0; j < links.length; j++) {
      links[j].setAttribute("href", links[j].getAttribute("data-href-" + cycle));
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    var radios = document.querySelectorAll("input[name=cycle]");
    for (var k = 0; k < radios.length; k++) {
      radios[k].addEventListener("change", function (event) { show(event.target.value); });
      if (radios[k].checked) { show(radios[k].value); }
    }
  });
})();
