// Shared pieces of the proxy and audit benchmarks' load generators
// (bench/proxy/load.mjs, bench/proxy/rate.mjs): the 4 KB chat body, an
// HTTP/1.1 response parser that handles Content-Length and chunked bodies,
// connection set-up (plain TCP, TLS, or CONNECT through a proxy then TLS)
// and percentiles. Node built-ins only.

import net from 'node:net';
import tls from 'node:tls';

/**
 * A non-streaming OpenAI chat-completions body of exactly `size` bytes:
 * a system prompt, one earlier exchange and a long user turn of plain
 * prose (no personal data, so scrubbing scans all of it and replaces
 * nothing).
 */
export function chatBody(size = 4096) {
  const head = JSON.stringify({
    model: 'gpt-4o-mini',
    temperature: 0.3,
    max_tokens: 300,
    messages: [
      { role: 'system', content: 'You help an operations team read build and deploy logs. Keep answers short and name the step that failed.' },
      { role: 'user', content: 'The nightly release pipeline went red again. Can you tell me where it broke?' },
      { role: 'assistant', content: 'Paste the log of the failing stage and I will point at the first real error.' },
      { role: 'user', content: '@@' },
    ],
  });
  const [before, after] = head.split('@@');
  const prose = 'Stage package began at 01:10 and pulled 212 layers from the cache. '
    + 'The signing step waited on the hardware module for ninety seconds, retried twice '
    + 'and then continued without a timestamp. Upload of the second artifact stalled at '
    + 'sixty percent until the mirror dropped the connection. ';
  let room = size - before.length - after.length;
  if (room < 0) throw new Error(`body size ${size} is too small`);
  let text = '';
  while (text.length + prose.length <= room) text += prose;
  text += 'x'.repeat(room - text.length);
  const body = before + text + after;
  if (Buffer.byteLength(body) !== size) throw new Error('body size mismatch');
  JSON.parse(body);
  return body;
}

/** The request bytes, ready to write: headers plus body. */
export function requestBytes({ method = 'POST', path, host, headers = {}, body = '' }) {
  const lines = [`${method} ${path} HTTP/1.1`, `Host: ${host}`];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
  return Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n'), Buffer.from(body)]);
}

/**
 * Incremental HTTP/1.1 response parser. feed(buf) returns an array of the
 * responses completed by it: {status, headers (lower-case names), body
 * (Buffer), close (the server will close)}.
 */
export class ResponseParser {
  constructor() { this.buf = Buffer.alloc(0); this.cur = null; }

  feed(chunk) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const done = [];
    for (;;) {
      if (!this.cur) {
        const end = this.buf.indexOf('\r\n\r\n');
        if (end < 0) return done;
        const lines = this.buf.subarray(0, end).toString('latin1').split('\r\n');
        this.buf = this.buf.subarray(end + 4);
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
        if (!m) throw new Error(`bad status line: ${lines[0].slice(0, 80)}`);
        const headers = {};
        for (let i = 1; i < lines.length; i++) {
          const c = lines[i].indexOf(':');
          if (c > 0) headers[lines[i].slice(0, c).trim().toLowerCase()] = lines[i].slice(c + 1).trim();
        }
        const status = Number(m[1]);
        const chunked = /chunked/i.test(headers['transfer-encoding'] || '');
        const len = chunked ? -1 : Number(headers['content-length'] ?? (status === 204 || status === 304 ? 0 : NaN));
        if (!chunked && Number.isNaN(len)) throw new Error('response without length (read-to-close is not supported)');
        this.cur = { status, headers, chunked, len, parts: [], close: /close/i.test(headers.connection || '') };
      }
      const r = this.cur;
      if (!r.chunked) {
        if (this.buf.length < r.len) return done;
        r.parts.push(this.buf.subarray(0, r.len));
        this.buf = this.buf.subarray(r.len);
      } else {
        let finished = false;
        for (;;) {
          const eol = this.buf.indexOf('\r\n');
          if (eol < 0) return done;
          const size = parseInt(this.buf.subarray(0, eol).toString('latin1'), 16);
          if (Number.isNaN(size)) throw new Error('bad chunk size');
          if (size === 0) {
            // the last chunk, then trailers (if any) and an empty line
            const rest = this.buf.subarray(eol + 2);
            if (rest.length < 2) return done;
            if (rest[0] === 13 && rest[1] === 10) {
              this.buf = rest.subarray(2);
            } else {
              const tEnd = rest.indexOf('\r\n\r\n');
              if (tEnd < 0) return done;
              this.buf = rest.subarray(tEnd + 4);
            }
            finished = true;
            break;
          }
          if (this.buf.length < eol + 2 + size + 2) return done;
          r.parts.push(this.buf.subarray(eol + 2, eol + 2 + size));
          this.buf = this.buf.subarray(eol + 2 + size + 2);
        }
        if (!finished) return done;
      }
      done.push({ status: r.status, headers: r.headers, body: Buffer.concat(r.parts), close: r.close });
      this.cur = null;
    }
  }
}

/** Read an HTTP response head from a raw socket (the answer to CONNECT). */
function readHead(sock, timeoutMs) {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const t = setTimeout(() => fail(new Error('timeout waiting for the CONNECT answer')), timeoutMs);
    const onData = (d) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      cleanup();
      const rest = buf.subarray(end + 4);
      if (rest.length) sock.unshift(rest);
      resolve(buf.subarray(0, end).toString('latin1'));
    };
    const onErr = (e) => fail(e);
    const onEnd = () => fail(new Error('proxy closed the connection during CONNECT'));
    function cleanup() {
      clearTimeout(t);
      sock.off('data', onData); sock.off('error', onErr); sock.off('end', onEnd);
    }
    function fail(e) { cleanup(); reject(e); }
    sock.on('data', onData); sock.once('error', onErr); sock.once('end', onEnd);
  });
}

function tcpConnect(host, port, timeoutMs) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    const t = setTimeout(() => { s.destroy(); reject(new Error(`timeout connecting to ${host}:${port}`)); }, timeoutMs);
    s.once('connect', () => { clearTimeout(t); s.setNoDelay(true); resolve(s); });
    s.once('error', (e) => { clearTimeout(t); reject(e); });
  });
}

function tlsWrap(opts, timeoutMs) {
  return new Promise((resolve, reject) => {
    const s = tls.connect(opts);
    const t = setTimeout(() => { s.destroy(); reject(new Error('timeout in the TLS handshake')); }, timeoutMs);
    s.once('secureConnect', () => { clearTimeout(t); resolve(s); });
    s.once('error', (e) => { clearTimeout(t); reject(e); });
  });
}

/**
 * Open one connection, with timings.
 *   target      {host, port}: where the TCP connection goes (proxy or server)
 *   connect     "host:port" to CONNECT to through the proxy, or null (direct)
 *   proxyAuth   value of Proxy-Authorization, or null
 *   tls         null (plain) or {servername, ca (PEM string)}
 * Resolves {sock, tTcp, tConnect, tTls} (ms, from the start) and rejects on
 * any failure, a non-200 CONNECT answer included.
 */
export async function openConnection({ target, connect = null, proxyAuth = null, tls: tlsOpts = null, timeoutMs = 10000 }) {
  const t0 = performance.now();
  let sock = await tcpConnect(target.host, target.port, timeoutMs);
  const tTcp = performance.now() - t0;
  let tConnect = tTcp;
  if (connect) {
    const lines = [`CONNECT ${connect} HTTP/1.1`, `Host: ${connect}`];
    if (proxyAuth) lines.push(`Proxy-Authorization: ${proxyAuth}`);
    sock.write(lines.join('\r\n') + '\r\n\r\n');
    let head;
    try {
      head = await readHead(sock, timeoutMs);
    } catch (e) { sock.destroy(); throw e; }
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(head);
    if (!status || status[1] !== '200') {
      sock.destroy();
      throw new Error(`CONNECT ${connect}: ${head.split('\r\n')[0]}`);
    }
    tConnect = performance.now() - t0;
  }
  let tTls = tConnect;
  if (tlsOpts) {
    const opts = { servername: tlsOpts.servername, ca: tlsOpts.ca, ALPNProtocols: ['http/1.1'] };
    opts.socket = sock;
    try {
      sock = await tlsWrap(opts, timeoutMs);
    } catch (e) { sock.destroy(); throw e; }
    tTls = performance.now() - t0;
  }
  return { sock, tTcp, tConnect, tTls };
}

/** p-th percentile (0..100) of a sorted numeric array (nearest rank). */
export function pct(sorted, p) {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

/** A growable Float64Array of samples. */
export class Samples {
  constructor(n = 1 << 16) { this.a = new Float64Array(n); this.n = 0; }
  push(v) {
    if (this.n === this.a.length) { const b = new Float64Array(this.a.length * 2); b.set(this.a); this.a = b; }
    this.a[this.n++] = v;
  }
  sorted() { return this.a.slice(0, this.n).sort(); }
}

/** Parse --name value / --flag arguments into an object. */
export function parseArgs(argv, defaults) {
  const o = { ...defaults };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const k = a.slice(2);
    if (!(k in defaults)) throw new Error(`unknown option ${a}`);
    if (typeof defaults[k] === 'boolean') o[k] = true;
    else {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      o[k] = typeof defaults[k] === 'number' ? Number(v) : v;
    }
  }
  return o;
}

/** "host:port" -> {host, port} */
export function hostPort(s) {
  const i = s.lastIndexOf(':');
  return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
}
