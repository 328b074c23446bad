// Per-route actions: a route can replace rules' own actions, by entity
// type or by rule id glob (redact instead of tokenize, block secrets).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeProvider } from '../fake_provider/provider.mjs';
import { startScrim, configFor, request, auth, chatBody, TEST_KEY, show } from './lib.mjs';

let provider;
let scrim;

before(async () => {
  provider = await startFakeProvider();
  scrim = await startScrim({
    config: await configFor({
      providerUrl: provider.url,
      route: { actions: 'EMAIL=redact CREDIT_CARD=mask secret.*=block' },
    }),
  });
});

after(async () => {
  await scrim?.stop();
  await provider?.close();
});

async function chat(text) {
  return request(scrim.port, {
    method: 'POST', path: '/v1/chat/completions',
    headers: { ...auth(TEST_KEY), 'content-type': 'application/json' }, body: chatBody(text),
  });
}

test('a type mapped to redact and another to mask reach the provider that way', async () => {
  provider.reset();
  const r = await chat('mail ana.lopez@example.com, card 4111 1111 1111 1111, ip 203.0.113.7');
  assert.equal(r.status, 200, show(r));
  const sent = JSON.parse(provider.requests[0].body).messages[0].content;
  assert.match(sent, /mail \[EMAIL\], card \*\*\*\* \*\*\*\* \*\*\*\* 1111, ip <IP_ADDRESS_[0-9a-f]{6,}>/, sent);
  // Tokenized values still come back; redacted ones cannot.
  assert.match(r.body.toString(), /203\.0\.113\.7/);
});

test('a rule id glob mapped to block refuses the request, nothing forwarded', async () => {
  provider.reset();
  const r = await chat('my github token is ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789');
  assert.equal(r.status, 403, show(r));
  assert.match(r.body.toString(), /secret\.github_token/);
  assert.equal(provider.requests.length, 0);
});

test('a virtual key\'s own actions (keys create --actions) apply to its requests', async () => {
  const { startRedis, execFile: ex, SCRIM_BIN: bin } = await import('./lib.mjs');
  const redis = await startRedis();
  const g = await startScrim({ config: await configFor({ providerUrl: provider.url, redis: { url: redis.url } }) });
  try {
    const out = (await ex(bin, ['keys', 'create', '-c', g.configPath, '--name', 'acts',
      '--actions', 'EMAIL=hash IP_ADDRESS=redact'])).stdout;
    const key = out.match(/^key: (\S+)$/m)[1];
    provider.reset();
    const r = await request(g.port, {
      method: 'POST', path: '/v1/chat/completions',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: chatBody('mail ana.lopez@example.com from 203.0.113.7'),
    });
    assert.equal(r.status, 200, show(r));
    const sent = JSON.parse(provider.requests[0].body).messages[0].content;
    assert.match(sent, /^mail EMAIL-[0-9a-f]{12} from \[IP_ADDRESS\]$/, sent);
    const bad = await ex(bin, ['keys', 'create', '-c', g.configPath, '--name', 'x', '--actions', 'EMAIL=shred'])
      .then(() => null, (e) => e);
    assert.ok(bad && bad.code === 2, 'an unknown action is refused');
  } finally {
    await g.stop();
    await redis.stop();
  }
});
