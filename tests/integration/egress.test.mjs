// The egress proxy ([gateway] egress_proxy): with it, every upstream
// request goes through the proxy, whatever no_proxy/NO_PROXY say in
// scrim's environment; without it, scrim connects directly and ignores
// http_proxy/HTTP_PROXY/ALL_PROXY. Where prompts go is decided by the
// config file alone (docs/configuration.md).
//
// The proxy is a small forward proxy on loopback (absolute-form requests,
// as curl sends them for http:// URLs through an HTTP proxy) that records
// what it relayed.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import { startScrim, configFor, request, auth, chatBody, freePort, show } from './lib.mjs';

let provider;
let proxy;

/** A forward proxy for http:// URLs that counts and relays. */
async function startProxy() {
  const seen = [];
  const server = http.createServer((req, res) => {
    let target;
    try {
      target = new URL(req.url); // absolute-form, or it is not a proxy request
    } catch {
      res.writeHead(400).end('not a proxy request');
      return;
    }
    seen.push({ method: req.method, url: req.url, headers: req.headers });
    const headers = { ...req.headers };
    delete headers['proxy-connection'];
    const up = http.request({
      host: target.hostname, port: target.port, method: req.method,
      path: target.pathname + target.search, headers,
    }, (ur) => {
      res.writeHead(ur.statusCode, { ...ur.headers, 'x-via-test-proxy': '1' });
      ur.pipe(res);
    });
    up.on('error', () => res.writeHead(502).end('proxy: upstream failed'));
    req.pipe(up);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${server.address().port}`, seen, server };
}

before(async () => {
  provider = await startFakeProvider();
  proxy = await startProxy();
});

after(async () => {
  proxy?.server.close();
  if (provider) await provider.close();
});

async function chat(scrim, text) {
  return request(scrim.port, {
    method: 'POST', path: '/v1/chat/completions',
    headers: { ...auth(), 'content-type': 'application/json' },
    body: JSON.stringify(chatBody(text)),
  });
}

test('egress_proxy: the request goes through the proxy, even with no_proxy naming the provider', async () => {
  const scrim = await startScrim({
    config: await configFor({ providerUrl: provider.url, gateway: { egress_proxy: proxy.url } }),
    env: { no_proxy: '127.0.0.1,localhost', NO_PROXY: '127.0.0.1,localhost' },
  });
  try {
    const before = proxy.seen.length;
    const r = await chat(scrim, 'through the proxy');
    assert.equal(r.status, 200, show(r));
    assert.equal(r.json?.choices?.[0]?.message?.content, 'echo: through the proxy');
    assert.equal(proxy.seen.length, before + 1, 'the proxy relayed the request');
    const s = proxy.seen[proxy.seen.length - 1];
    assert.equal(s.url, `${provider.url}/v1/chat/completions`);
    assert.match(s.headers.authorization || '', /^Bearer sk-provider-/, 'the provider key, not the client key');
  } finally {
    await scrim.stop();
  }
});

test('no egress_proxy: scrim connects directly, whatever http_proxy says', async () => {
  const scrim = await startScrim({
    config: await configFor({ providerUrl: provider.url }),
    env: { http_proxy: proxy.url, HTTP_PROXY: proxy.url, ALL_PROXY: proxy.url, all_proxy: proxy.url },
  });
  try {
    const before = proxy.seen.length;
    const r = await chat(scrim, 'direct');
    assert.equal(r.status, 200, show(r));
    assert.equal(proxy.seen.length, before, 'the environment proxy was not used');
  } finally {
    await scrim.stop();
  }
});

test('egress_proxy down: 502, nothing sent around it', async () => {
  const dead = `http://127.0.0.1:${await freePort()}`;
  const scrim = await startScrim({
    config: await configFor({ providerUrl: provider.url, gateway: { egress_proxy: dead } }),
  });
  try {
    const n = provider.requests.length;
    const r = await chat(scrim, 'proxy is down');
    assert.equal(r.status, 502, show(r));
    assert.equal(provider.requests.length, n, 'the provider was not reached directly');
  } finally {
    await scrim.stop();
  }
});
