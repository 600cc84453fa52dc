import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isNonPublicAddress, matchAllowed, signBody, verifySignature } from './callback.ts';

test('non-public addresses: loopback, private, link-local, unique-local, mapped, multicast', () => {
  for (const a of [
    '127.0.0.1',
    '127.1.2.3',
    '10.0.0.1',
    '172.16.5.4',
    '172.31.255.255',
    '192.168.1.1',
    '169.254.169.254',
    '100.64.0.1',
    '0.0.0.0',
    '224.0.0.1',
    '::1',
    '::',
    'fe80::1',
    'fd00::1',
    'fc12::1',
    '::ffff:127.0.0.1',
    '::ffff:10.1.1.1',
    '::ffff:7f00:1',
    '64:ff9b::7f00:1',
    'ff02::1',
    'not-an-ip',
  ]) {
    assert.equal(isNonPublicAddress(a), true, a);
  }
  for (const a of ['8.8.8.8', '172.32.0.1', '1.1.1.1', '2606:4700::1111', '::ffff:8.8.8.8']) {
    assert.equal(isNonPublicAddress(a), false, a);
  }
});

test('allow-list: same scheme, host and port; path on segment boundaries; no credentials', () => {
  const allow = ['https://hooks.example.com/T000/', 'http://10.0.0.5:8080/cb'];
  assert.ok(matchAllowed('https://hooks.example.com/T000/B1?x=1', allow));
  assert.ok(matchAllowed('https://HOOKS.example.com:443/T000/B1', allow), 'normalised');
  assert.ok(matchAllowed('http://10.0.0.5:8080/cb', allow));
  assert.ok(matchAllowed('http://10.0.0.5:8080/cb/x', allow));
  for (const bad of [
    'https://hooks.example.com/T0001',
    'https://hooks.example.com.evil.net/T000/',
    'http://hooks.example.com/T000/',
    'https://hooks.example.com:8443/T000/',
    'https://user:pw@hooks.example.com/T000/',
    'http://10.0.0.5:8080/cbx',
    'http://10.0.0.5/cb',
    'https://hooks.example.com/T000/../admin',
    'javascript:alert(1)',
    'not a url',
  ]) {
    const m = matchAllowed(bad, allow);
    // `..` is resolved by URL parsing: /T000/../admin becomes /admin, which is off the list.
    assert.equal(m, undefined, bad);
  }
});

test('signatures: t=…,v1=hex HMAC-SHA256 over "t.body"; tolerance; rotation', () => {
  const body = '{"id":"J1"}';
  const sig = signBody('s3cret-s3cret-s3cret', body, 1_700_000_000);
  // echo -n '1700000000.{"id":"J1"}' | openssl dgst -sha256 -hmac s3cret-s3cret-s3cret
  assert.equal(sig, 't=1700000000,v1=e76930804cfd500d26ce5cd771fa70966658849a469b57f2f91051f8e4cc459b');
  assert.equal(verifySignature('s3cret-s3cret-s3cret', sig, body, { nowS: 1_700_000_100 }), true);
  assert.equal(verifySignature('s3cret-s3cret-s3cret', sig, body, { nowS: 1_700_001_000 }), false, 'too old');
  assert.equal(verifySignature('other-secret-000000', sig, body, { nowS: 1_700_000_000 }), false);
  assert.equal(verifySignature('s3cret-s3cret-s3cret', sig, `${body}x`, { nowS: 1_700_000_000 }), false);
  const rotated = `${sig.split(',')[0]},v1=${'0'.repeat(64)},${sig.split(',')[1]}`;
  assert.equal(verifySignature('s3cret-s3cret-s3cret', rotated, body, { nowS: 1_700_000_000 }), true);
  assert.equal(verifySignature('s3cret-s3cret-s3cret', undefined, body), false);
  assert.equal(verifySignature('s3cret-s3cret-s3cret', 'garbage', body), false);
});

test('IPv4-mapped addresses in every spelling are judged by their IPv4 address', () => {
  for (const a of ['::ffff:127.0.0.1', '0:0:0:0:0:ffff:127.0.0.1', '::ffff:7f00:1', '::FFFF:A00:1']) {
    assert.equal(isNonPublicAddress(a), true, a);
  }
  for (const a of ['::ffff:8.8.8.8', '::ffff:808:808']) assert.equal(isNonPublicAddress(a), false, a);
});
