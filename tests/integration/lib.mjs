// Helpers for scrim's integration tests: test PKI, starting scrim, building
// its config, raw-socket HTTP, small HTTP and SSE clients.

import { spawn, execFile as execFileCb } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

export const execFile = promisify(execFileCb);

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '..', '..');
export const SCRIM_BIN = process.env.SCRIM_BIN || path.join(REPO, 'build', 'scrim');

/** The client key tests use, and the provider key scrim holds. */
export const TEST_KEY = 'sk-scrim-test-0123456789';
export const PROVIDER_KEY = 'sk-provider-secret-123';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const sha256hex = (s) => crypto.createHash('sha256').update(s).digest('hex');

/** A temporary directory, removed by the returned cleanup. */
export function tempDir(prefix = 'scrim-test-') {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

// ---------------------------------------------------------------- ports

/**
 * A TCP port that was free a moment ago on 127.0.0.1. Chosen below the
 * kernel's ephemeral range (ip_local_port_range, 32768 and up by
 * default): a port the kernel hands out itself is also what it gives the
 * next outgoing connection, and with hundreds of client sockets open in
 * the test files running beside this one, one of them took a listener's
 * port between freePort() and scrim's bind ("Address already in use").
 */
const PORT_LOW = 20000;
const PORT_HIGH = 32000;
function tryPort(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}
export async function freePort() {
  for (let i = 0; i < 200; i++) {
    const port = PORT_LOW + Math.floor(Math.random() * (PORT_HIGH - PORT_LOW));
    if (await tryPort(port)) return port;
  }
  throw new Error(`no free port in ${PORT_LOW}-${PORT_HIGH - 1} after 200 tries`);
}

// ---------------------------------------------------------------- PKI

async function openssl(args, opts = {}) {
  try {
    return await execFile('openssl', args, opts);
  } catch (e) {
    throw new Error(`openssl ${args.join(' ')} failed: ${e.stderr || e.message}`);
  }
}

/**
 * Sign a leaf certificate with the CA in `pki`, for the given SANs
 * (e.g. ['DNS:localhost', 'IP:127.0.0.1']). Returns {cert, key} paths and PEMs.
 * With {startDate, endDate} (openssl's YYYYMMDDHHMMSSZ) the certificate gets
 * exactly that validity (an expired one, say), signed with `openssl ca`.
 */
export async function makeLeaf(pki, name, sans, { startDate, endDate } = {}) {
  const dir = pki.dir;
  const key = path.join(dir, `${name}.key`);
  const csr = path.join(dir, `${name}.csr`);
  const cert = path.join(dir, `${name}.crt`);
  const ext = path.join(dir, `${name}.ext`);
  fs.writeFileSync(ext, [
    'basicConstraints = critical, CA:FALSE',
    'keyUsage = critical, digitalSignature, keyEncipherment',
    'extendedKeyUsage = serverAuth',
    `subjectAltName = ${sans.join(', ')}`,
    '',
  ].join('\n'));
  await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', csr, '-subj', `/CN=${name}`]);
  if (startDate || endDate) {
    // `openssl x509 -req` cannot backdate; `openssl ca` can, given a minimal database.
    const db = path.join(dir, `${name}.cadb`);
    fs.mkdirSync(db, { recursive: true });
    fs.writeFileSync(path.join(db, 'index.txt'), '');
    fs.writeFileSync(path.join(db, 'serial'), `${crypto.randomBytes(8).toString('hex').replace(/^[89a-f]/, '1')}\n`);
    const cnf = path.join(db, 'ca.cnf');
    fs.writeFileSync(cnf, [
      '[ca]', 'default_ca = testca', '[testca]',
      `database = ${path.join(db, 'index.txt')}`, `new_certs_dir = ${db}`, `serial = ${path.join(db, 'serial')}`,
      'default_md = sha256', 'policy = anything', 'unique_subject = no', 'default_days = 7',
      '[anything]', 'commonName = supplied', '',
    ].join('\n'));
    const dates = [];
    if (startDate) dates.push('-startdate', startDate);
    if (endDate) dates.push('-enddate', endDate);
    await openssl(['ca', '-batch', '-notext', '-config', cnf, '-cert', pki.caCert, '-keyfile', pki.caKey,
      '-in', csr, '-out', cert, '-extfile', ext, ...dates]);
  } else {
    await openssl(['x509', '-req', '-in', csr, '-CA', pki.caCert, '-CAkey', pki.caKey, '-CAcreateserial',
      '-days', '7', '-sha256', '-extfile', ext, '-out', cert]);
  }
  return { cert, key, certPem: fs.readFileSync(cert, 'utf8'), keyPem: fs.readFileSync(key, 'utf8') };
}

/**
 * A self-signed server certificate (its own issuer, not a CA) in `dir` for
 * the given SANs. Returns {cert, key} paths and PEMs.
 */
export async function makeSelfSigned(dir, name, sans) {
  fs.mkdirSync(dir, { recursive: true });
  const key = path.join(dir, `${name}.key`);
  const cert = path.join(dir, `${name}.crt`);
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '7', '-sha256', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:FALSE',
    '-addext', 'extendedKeyUsage=serverAuth',
    '-addext', `subjectAltName=${sans.join(',')}`]);
  return { cert, key, certPem: fs.readFileSync(cert, 'utf8'), keyPem: fs.readFileSync(key, 'utf8') };
}

/**
 * A test CA and a server certificate for localhost and 127.0.0.1 (as SANs)
 * signed by it, made with the openssl CLI in `dir`.
 * Returns {dir, caCert, caKey, caPem, cert, key, certPem, keyPem} (paths + PEMs).
 */
export async function makeTestPKI(dir) {
  fs.mkdirSync(dir, { recursive: true });
  const caKey = path.join(dir, 'ca.key');
  const caCert = path.join(dir, 'ca.crt');
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', caKey, '-out', caCert, '-days', '7', '-sha256', '-subj', '/CN=scrim test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  const pki = { dir, caKey, caCert, caPem: fs.readFileSync(caCert, 'utf8') };
  const leaf = await makeLeaf(pki, 'server', ['DNS:localhost', 'IP:127.0.0.1']);
  return { ...pki, cert: leaf.cert, key: leaf.key, certPem: leaf.certPem, keyPem: leaf.keyPem };
}

// ---------------------------------------------------------------- config

/**
 * A scrim config in the format of conf/scrim.conf.
 *   providerUrl  the fake provider's URL (http://127.0.0.1:PORT)
 *   caFile       ca_file for both providers (TLS tests)
 *   keys         {key_id: key} for [keys]; default {test: TEST_KEY}
 *   port, adminPort   listen ports; free ones are picked when omitted
 *   gateway      extra or overriding [gateway] keys, e.g. {header_timeout: '1s'}
 *   provider     extra or overriding keys for [provider fake], e.g. {timeout: '1s'}
 *   anthropicProvider  the same for [provider fakeanthropic]
 *   redis        a [redis] section: a URL string, or {url, fail_mode,
 *                timeout, default_max_tokens, ...} (written as given)
 *   prices       a [prices] section: {glob: 'IN OUT'} (USD per million tokens)
 *   extra        raw text appended at the end
 * Returns the text; the chosen ports are in the text and in
 * configFor.lastPorts. Use parsePorts(text) to read them back.
 */
export async function configFor({
  providerUrl, caFile, keys = { test: TEST_KEY }, port, adminPort,
  gateway = {}, provider = {}, anthropicProvider = {}, redis, prices, extra = '',
  route = {}, anthropicRoute = {},
} = {}) {
  if (!providerUrl) throw new Error('configFor: providerUrl is required');
  port = port || await freePort();
  adminPort = adminPort || await freePort();
  const section = (header, obj) => {
    const lines = [header];
    for (const [k, v] of Object.entries(obj)) {
      if (v === undefined || v === null) continue;
      if (Array.isArray(v)) for (const x of v) lines.push(`${k} = ${x}`);
      else lines.push(`${k} = ${v}`);
    }
    return lines.join('\n') + '\n';
  };
  const gw = {
    listen: `127.0.0.1:${port}`,
    admin_listen: `127.0.0.1:${adminPort}`,
    auth: 'keys',
    log_level: 'info',
    drain_timeout: '10s',
    rules_dir: path.join(REPO, 'rules'),
    // Audit log, CA and other state: a fresh folder per configuration.
    state_dir: tempDir('scrim-state-'),
    ...gateway,
  };
  const keyLines = {};
  for (const [id, k] of Object.entries(keys)) keyLines[id] = `sha256:${sha256hex(k)}`;
  const base = providerUrl.replace(/\/+$/, '');
  const fake = {
    base_url: `${base}/v1`,
    api_key_env: 'FAKE_PROVIDER_KEY',
    auth_header: 'bearer',
    ca_file: caFile,
    connect_timeout: '2s',
    timeout: '30s',
    ...provider,
  };
  const fakeAnthropic = {
    base_url: base,
    api_key_env: 'FAKE_PROVIDER_KEY',
    auth_header: 'x-api-key',
    header: 'anthropic-version: 2023-06-01',
    ca_file: caFile,
    connect_timeout: '2s',
    timeout: '30s',
    ...anthropicProvider,
  };
  const text = [
    '# scrim test config (generated by tests/integration/lib.mjs)',
    section('[gateway]', gw),
    section('[keys]', keyLines),
    section('[provider fake]', fake),
    section('[provider fakeanthropic]', fakeAnthropic),
    section('[route anthropic]', { prefix: '/anthropic/', provider: 'fakeanthropic', ...anthropicRoute }),
    section('[route all]', { prefix: '/v1/', provider: 'fake', ...route }),
    redis ? section('[redis]', typeof redis === 'string' ? { url: redis } : redis) : '',
    prices ? section('[prices]', prices) : '',
    extra,
  ].join('\n');
  configFor.lastPorts = { port, adminPort };
  return text;
}

/** Read listen and admin_listen ports back out of a config text. */
export function parsePorts(config) {
  const get = (key) => {
    const m = config.match(new RegExp(`^\\s*${key}\\s*=\\s*(\\S+)\\s*$`, 'm'));
    if (!m) return undefined;
    const hp = m[1];
    const i = hp.lastIndexOf(':');
    return { host: hp.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(hp.slice(i + 1)) };
  };
  return { listen: get('listen'), admin: get('admin_listen') };
}

// ---------------------------------------------------------------- scrim

/** One plain HTTP GET; resolves {status, body} or rejects on error/timeout. */
export function httpGet(host, port, p, timeoutMs = 1000) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path: p, agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

const running = new Set();
process.on('exit', () => {
  for (const p of running) { try { p.kill('SIGKILL'); } catch { /* gone */ } }
});

/**
 * Start `scrim serve -c FILE` with `config` (a string) and wait until
 * /healthz on its admin port answers 200.
 * Returns {port, adminPort, url, adminUrl, proc, configPath, stderr(),
 *          stdout(), reload(newConfig), stop(), kill(), exited}.
 */
export async function startScrim({ config, env = {}, args = [], bin = SCRIM_BIN, readyTimeoutMs = 10_000 } = {}) {
  if (!fs.existsSync(bin)) throw new Error(`scrim binary not found at ${bin} (build it, or set SCRIM_BIN)`);
  const ports = parsePorts(config);
  if (!ports.listen || !ports.admin) throw new Error('startScrim: config needs listen and admin_listen');
  const dir = tempDir('scrim-run-');
  const configPath = path.join(dir, 'scrim.conf');
  fs.writeFileSync(configPath, config);
  const proc = spawn(bin, ['serve', '-c', configPath, ...args], {
    env: { ...process.env, FAKE_PROVIDER_KEY: PROVIDER_KEY, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(proc);
  let err = '';
  let out = '';
  proc.stderr.setEncoding('utf8');
  proc.stdout.setEncoding('utf8');
  proc.stderr.on('data', (d) => { err += d; });
  proc.stdout.on('data', (d) => { out += d; });
  let exitCode = null;
  let exitSignal = null;
  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      exitCode = code;
      exitSignal = signal;
      running.delete(proc);
      resolve({ code, signal });
    });
  });
  proc.on('error', (e) => { err += `\n[spawn error] ${e.message}\n`; });

  const adminHost = ports.admin.host || '127.0.0.1';
  const deadline = Date.now() + readyTimeoutMs;
  let lastErr = '';
  for (;;) {
    if (exitCode !== null || exitSignal !== null) {
      throw new Error(`scrim exited during start (code ${exitCode}, signal ${exitSignal}); stderr:\n${err}`);
    }
    try {
      const r = await httpGet(adminHost, ports.admin.port, '/healthz', 500);
      if (r.status === 200) break;
      lastErr = `healthz answered ${r.status}`;
    } catch (e) {
      lastErr = e.message;
    }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      await exited;
      throw new Error(`scrim not healthy after ${readyTimeoutMs} ms (${lastErr}); stderr:\n${err}`);
    }
    await sleep(50);
  }

  const host = ports.listen.host || '127.0.0.1';
  const scrim = {
    port: ports.listen.port,
    adminPort: ports.admin.port,
    host,
    url: `http://${host}:${ports.listen.port}`,
    adminUrl: `http://${adminHost}:${ports.admin.port}`,
    proc,
    pid: proc.pid,
    dir,
    configPath,
    exited,
    stderr: () => err,
    stdout: () => out,
    get exitCode() { return exitCode; },
    alive: () => exitCode === null && exitSignal === null,
    /** Rewrite the config file and send SIGHUP. */
    reload(newConfig) {
      if (newConfig !== undefined) fs.writeFileSync(configPath, newConfig);
      proc.kill('SIGHUP');
    },
    /** SIGTERM, wait for exit (SIGKILL after timeoutMs); resolves the exit code. */
    async stop(timeoutMs = 15_000) {
      if (exitCode === null && exitSignal === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => { try { proc.kill('SIGKILL'); } catch { /* gone */ } }, timeoutMs);
        await exited;
        clearTimeout(t);
      }
      try { fs.rmSync(dir, { recursive: true, force: true }); } catch { /* ignore */ }
      return exitCode;
    },
    async kill() {
      if (exitCode === null && exitSignal === null) {
        proc.kill('SIGKILL');
        await exited;
      }
      try { fs.rmSync(dir, { recursive: true, force: true }); } catch { /* ignore */ }
    },
  };
  return scrim;
}

// ---------------------------------------------------------------- redis

/**
 * Start a private redis-server on a free loopback port, in a temporary
 * directory. With {persist: true} it keeps an append-only file fsynced on
 * every write, so that its data survives kill() and restart().
 * Returns {url, port, dir, proc, pid, stop(), kill(), pause() (SIGSTOP),
 * resume() (SIGCONT), restart() (a new server on the same port and dir),
 * cli(...args) (redis-cli against it; resolves stdout, trimmed)}.
 *
 * With {cluster: true} it is a Redis Cluster of one node holding all 16384
 * slots. Such a cluster redirects nothing, but it refuses what a real one
 * refuses: a multi-key command or a script whose keys are in more than
 * one slot (CROSSSLOT, and "Script attempted to access keys that do not
 * hash to the same slot" for keys a script did not declare), and SELECT
 * of a database other than 0. restart() keeps its nodes.conf, so the node
 * comes back owning its slots.
 */
export async function startRedis({ persist = false, cluster = false, bin = 'redis-server', readyTimeoutMs = 5000 } = {}) {
  const dir = tempDir('scrim-redis-');
  const port = await freePort();
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '',
    '--daemonize', 'no', '--logfile', ''];
  if (persist) args.push('--appendonly', 'yes', '--appendfsync', 'always');
  else args.push('--appendonly', 'no');
  // The cluster bus gets a free port of its own: by default it is port +
  // 10000, which may be in the kernel's ephemeral range and taken.
  if (cluster) {
    args.push('--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, 'nodes.conf'),
      '--cluster-port', String(await freePort()));
  }
  const cli = async (...a) => {
    const { stdout } = await execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...a]);
    return stdout.trim();
  };
  const r = { url: `redis://127.0.0.1:${port}`, port, dir, proc: null, pid: null, cli, cluster };
  let exited = Promise.resolve();
  const spawnOne = async () => {
    const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(proc);
    let log = '';
    proc.stdout.setEncoding('utf8');
    proc.stderr.setEncoding('utf8');
    proc.stdout.on('data', (d) => { log += d; });
    proc.stderr.on('data', (d) => { log += d; });
    let gone = false;
    exited = new Promise((resolve) => proc.on('exit', (code, signal) => { gone = true; running.delete(proc); resolve({ code, signal }); }));
    r.proc = proc;
    r.pid = proc.pid;
    r.log = () => log;
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      if (gone) throw new Error(`redis-server exited during start:\n${log}`);
      try {
        if ((await cli('PING')) === 'PONG') break;
      } catch { /* not yet */ }
      if (Date.now() > deadline) throw new Error(`redis-server not ready after ${readyTimeoutMs} ms:\n${log}`);
      await sleep(20);
    }
    if (!cluster) return;
    // All slots to this node (once: a restarted node reads them back from
    // nodes.conf), then wait until the node calls the cluster usable.
    if (/^cluster_slots_assigned:0\s*$/m.test(await cli('CLUSTER', 'INFO'))) {
      const ok = await cli('CLUSTER', 'ADDSLOTSRANGE', '0', '16383');
      if (ok !== 'OK') throw new Error(`CLUSTER ADDSLOTSRANGE answered ${ok}`);
    }
    for (;;) {
      if (/^cluster_state:ok\s*$/m.test(await cli('CLUSTER', 'INFO'))) break;
      if (Date.now() > deadline) throw new Error(`redis cluster not ok after ${readyTimeoutMs} ms:\n${await cli('CLUSTER', 'INFO')}`);
      await sleep(20);
    }
  };
  const signal = async (sig) => {
    if (r.proc && r.proc.exitCode === null && r.proc.signalCode === null) {
      r.proc.kill(sig);
      await exited;
    }
  };
  r.kill = () => signal('SIGKILL');
  r.pause = () => { r.proc.kill('SIGSTOP'); };
  r.resume = () => { r.proc.kill('SIGCONT'); };
  r.restart = async () => { await signal('SIGKILL'); await spawnOne(); };
  r.stop = async () => {
    try { r.proc.kill('SIGCONT'); } catch { /* gone */ }
    await signal('SIGTERM');
    try { fs.rmSync(dir, { recursive: true, force: true }); } catch { /* ignore */ }
  };
  await spawnOne();
  return r;
}

// ---------------------------------------------------------------- raw HTTP

/**
 * Parse one or more HTTP/1.x responses out of `buf` (a Buffer).
 * Each: {status, statusLine, headers (lower-cased; repeated ones joined with
 * ', '), headerList [[name, value]], body (string), complete}.
 */
export function parseResponses(buf) {
  const out = [];
  let off = 0;
  while (off < buf.length) {
    const headEnd = buf.indexOf('\r\n\r\n', off);
    if (headEnd === -1) break;
    const head = buf.subarray(off, headEnd).toString('latin1');
    const lines = head.split('\r\n');
    const statusLine = lines[0];
    const m = statusLine.match(/^HTTP\/(\d\.\d) (\d{3})(?: (.*))?$/);
    const status = m ? Number(m[2]) : NaN;
    const headers = {};
    const headerList = [];
    for (const line of lines.slice(1)) {
      const i = line.indexOf(':');
      if (i <= 0) continue;
      const name = line.slice(0, i).trim().toLowerCase();
      const value = line.slice(i + 1).trim();
      headerList.push([name, value]);
      headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
    }
    let p = headEnd + 4;
    let body;
    let complete = false;
    const noBody = status === 204 || status === 304 || (status >= 100 && status < 200);
    if (noBody) {
      body = Buffer.alloc(0);
      complete = true;
    } else if ((headers['transfer-encoding'] || '').toLowerCase().includes('chunked')) {
      const parts = [];
      for (;;) {
        const le = buf.indexOf('\r\n', p);
        if (le === -1) break;
        const size = parseInt(buf.subarray(p, le).toString('latin1').split(';')[0], 16);
        if (!Number.isFinite(size)) break;
        if (size === 0) {
          // the last chunk, then optional trailers, then an empty line
          const end = buf.indexOf('\r\n\r\n', le);
          if (end === -1) { p = buf.length; break; }
          p = end + 4;
          complete = true;
          break;
        }
        if (le + 2 + size > buf.length) { parts.push(buf.subarray(le + 2)); p = buf.length; break; }
        parts.push(buf.subarray(le + 2, le + 2 + size));
        p = le + 2 + size + 2;
      }
      body = Buffer.concat(parts);
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      body = buf.subarray(p, Math.min(buf.length, p + n));
      complete = body.length === n;
      p += body.length;
    } else {
      body = buf.subarray(p); // close-delimited
      p = buf.length;
    }
    const r = { status, statusLine, httpVersion: m ? m[1] : undefined, headers, headerList, body: body.toString('utf8'), complete };
    try { r.json = JSON.parse(r.body); } catch { r.json = undefined; }
    out.push(r);
    off = p;
    if (!complete) break;
  }
  return out;
}

/**
 * Send raw bytes to 127.0.0.1:port and collect the answer.
 *   bytes       Buffer or string, or an array of them sent one by one with
 *               `delayMs` between pieces
 *   timeoutMs   give up waiting after this (default 5000)
 *   waitClose   true (default): wait for the server to close (or timeout);
 *               false: stop as soon as one complete response is parsed
 *   endAfterSend  half-close (FIN) our side after the last piece
 *   closeAfterSend  destroy our socket after the last piece
 * Resolves {status, headers, body, json, closed, raw, responses, elapsedMs,
 *           firstByteMs, error}.
 */
export function rawRequest(port, bytes, { timeoutMs = 5000, waitClose = true, delayMs = 0, endAfterSend = false, closeAfterSend = false, host = '127.0.0.1' } = {}) {
  const pieces = Array.isArray(bytes) ? bytes : [bytes];
  return new Promise((resolve) => {
    const t0 = Date.now();
    const sock = net.connect({ port, host });
    const chunks = [];
    let closed = false;
    let done = false;
    let error = null;
    let firstByteMs = null;
    let timer = null;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const raw = Buffer.concat(chunks);
      const responses = parseResponses(raw);
      const first = responses[0] || { status: undefined, headers: {}, body: '', json: undefined };
      resolve({
        status: first.status,
        headers: first.headers,
        body: first.body,
        json: first.json,
        statusLine: first.statusLine,
        complete: first.complete,
        closed,
        raw: raw.toString('latin1'),
        responses,
        elapsedMs: Date.now() - t0,
        firstByteMs,
        error,
      });
      sock.destroy();
    };
    timer = setTimeout(finish, timeoutMs);
    sock.on('data', (d) => {
      if (firstByteMs === null) firstByteMs = Date.now() - t0;
      chunks.push(d);
      if (!waitClose) {
        const rs = parseResponses(Buffer.concat(chunks));
        if (rs.length && rs[0].complete) finish();
      }
    });
    sock.on('end', () => { closed = true; finish(); });
    sock.on('close', () => { closed = true; finish(); });
    sock.on('error', (e) => { error = e.code || e.message; closed = true; });
    sock.on('connect', async () => {
      for (let i = 0; i < pieces.length; i++) {
        if (done || sock.destroyed) return;
        if (i > 0 && delayMs > 0) await sleep(delayMs);
        if (done || sock.destroyed) return;
        try { sock.write(pieces[i]); } catch { return; }
      }
      if (closeAfterSend) { sock.destroy(); closed = false; finish(); return; }
      if (endAfterSend) sock.end();
    });
  });
}

// ---------------------------------------------------------------- HTTP client

/**
 * A request through node's http client.
 * Resolves {status, headers, body, json, socket, chunks: [{t, data}], t0, tEnd}.
 */
export function request(port, { method = 'GET', path: p = '/', headers = {}, body, agent = false, host = '127.0.0.1', timeoutMs = 20_000, onChunk } = {}) {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const h = { ...headers };
    let payload;
    if (body !== undefined) {
      payload = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
      if (!Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) h['content-type'] = 'application/json';
      h['content-length'] = Buffer.byteLength(payload);
    }
    const req = http.request({ host, port, method, path: p, headers: h, agent }, (res) => {
      const chunks = [];
      res.on('data', (d) => {
        const c = { t: Date.now(), data: d.toString('utf8') };
        chunks.push(c);
        if (onChunk) onChunk(c, req, res);
      });
      res.on('end', () => {
        const text = chunks.map((c) => c.data).join('');
        let json;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, body: text, json, socket: req.socket, chunks, t0, tEnd: Date.now() });
      });
      res.on('error', reject);
      res.on('aborted', () => reject(new Error('response aborted')));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`request timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

/** Authorization header for the test key. */
export const auth = (key = TEST_KEY) => ({ authorization: `Bearer ${key}` });

/** A chat completion body with a single user message. */
export const chatBody = (text, extra = {}) => ({ model: 'fake-model', messages: [{ role: 'user', content: text }], ...extra });

/** Parse an SSE text into [{event, data}] (data joined across data: lines). */
export function parseSSE(text) {
  const events = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    if (!block.trim()) continue;
    let event;
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
    if (data.length || event) events.push({ event, data: data.join('\n') });
  }
  return events;
}

/** Join the content of OpenAI chat.completion.chunk SSE events. */
export function chatStreamContent(text) {
  let s = '';
  for (const e of parseSSE(text)) {
    if (e.data === '[DONE]') continue;
    try {
      const j = JSON.parse(e.data);
      for (const c of j.choices || []) if (c.delta && typeof c.delta.content === 'string') s += c.delta.content;
    } catch { /* not JSON */ }
  }
  return s;
}

/** Asserts an OpenAI-shaped error body and returns its error object. */
export function errorOf(resp) {
  let j = resp.json;
  if (j === undefined) {
    try { j = JSON.parse(resp.body); } catch { /* fallthrough */ }
  }
  if (!j || typeof j !== 'object' || !j.error || typeof j.error !== 'object') {
    throw new Error(`expected an OpenAI-shaped error body, got status ${resp.status} body ${JSON.stringify(String(resp.body).slice(0, 500))}`);
  }
  for (const f of ['message', 'type', 'code']) {
    if (typeof j.error[f] !== 'string' || !j.error[f]) {
      throw new Error(`error body lacks "${f}": ${JSON.stringify(j)}`);
    }
  }
  return j.error;
}

/** Wait until fn() is truthy (polling), or throw after timeoutMs. */
export async function waitFor(fn, { timeoutMs = 2000, intervalMs = 20, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** A short description of a response for assertion messages. */
export function show(r) {
  const b = r.body === undefined ? '' : String(r.body);
  return `status=${r.status} headers=${JSON.stringify(r.headers)} body=${JSON.stringify(b.slice(0, 400))}${r.closed !== undefined ? ` closed=${r.closed}` : ''}${r.error ? ` error=${r.error}` : ''}`;
}
