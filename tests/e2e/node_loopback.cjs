// Preloaded with `node --require` by the e2e tests: every server's listen() goes to 127.0.0.1.
// (@modelcontextprotocol/server-everything calls app.listen(PORT), which listens on all interfaces.)
"use strict";
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const first = args[0];
  if (first !== null && typeof first === "object" && !Array.isArray(first)) {
    if (first.path === undefined) args[0] = { ...first, host: "127.0.0.1" };
  } else if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    if (typeof args[1] === "string") args[1] = "127.0.0.1";
    else args.splice(1, 0, "127.0.0.1");
  } else if (first === undefined || typeof first === "function") {
    args.splice(0, 0, 0, "127.0.0.1");
  }
  return listen.apply(this, args);
};
