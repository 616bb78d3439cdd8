(function () {
  "use strict";
  // tariff preview --serve: reload when the server says the config was rebuilt.
  var seen = null;
  var source = new EventSource("/__tariff/events");
  source.onmessage = function (event) {
    if (seen !== null && event.data !== seen) { window.location.reload(); }
    seen = event.data;
  };
})();
