// Preloaded into the Portkey gateway by bench/run.sh (`node -r`): its
// start-server.js listens on every interface and has no option for the
// address, so this makes any listen() without an explicit host bind to
// 127.0.0.1 instead. The benchmark never opens a port beyond loopback.
'use strict';
const net = require('node:net');

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function listenOnLoopback(...args) {
  const first = args[0];
  if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    if (args[1] === undefined || args[1] === null) args[1] = '127.0.0.1';
    else if (typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1');
  } else if (first && typeof first === 'object' && !first.path && !first.host && !first.fd && !first._handle) {
    args[0] = { ...first, host: '127.0.0.1' };
  }
  return listen.apply(this, args);
};
