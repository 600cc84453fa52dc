import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildBlockList, inList, TrustedProxies } from './client-address.ts';

test('without trusted proxies the peer is the client, whatever X-Forwarded-For says', () => {
  const t = new TrustedProxies([]);
  assert.equal(t.clientOf('203.0.113.9', '10.0.0.1'), '203.0.113.9');
});

test('through trusted proxies the client is the right-most untrusted X-Forwarded-For entry', () => {
  const t = new TrustedProxies(['127.0.0.1', '10.0.0.0/8', '::1']);
  assert.equal(t.clientOf('127.0.0.1', '198.51.100.7, 10.1.2.3'), '198.51.100.7');
  // A spoofed left-most entry does not win over the address the first trusted proxy saw.
  assert.equal(t.clientOf('127.0.0.1', '1.2.3.4, 198.51.100.7, 10.1.2.3'), '198.51.100.7');
  assert.equal(t.clientOf('::1', '2001:db8::5'), '2001:db8::5');
  assert.equal(t.clientOf('127.0.0.1', undefined), '127.0.0.1');
  // Every entry trusted: the left-most one.
  assert.equal(t.clientOf('127.0.0.1', '10.0.0.5, 10.0.0.6'), '10.0.0.5');
  // Garbage ends the walk: the hop that wrote it is the client.
  assert.equal(t.clientOf('127.0.0.1', 'unknown, 10.0.0.6'), '10.0.0.6');
  // An untrusted peer's header is ignored.
  assert.equal(t.clientOf('192.0.2.1', '10.0.0.6'), '192.0.2.1');
});

test('CIDR lists take IPv4 and IPv6 subnets and single addresses, and refuse what is not one', () => {
  const l = buildBlockList(['192.168.0.0/16', '2001:db8::/32', '203.0.113.5']);
  assert.ok(inList(l, '192.168.4.4'));
  assert.ok(inList(l, '2001:db8:1::1'));
  assert.ok(inList(l, '203.0.113.5'));
  assert.ok(!inList(l, '203.0.113.6'));
  assert.ok(!inList(l, 'nonsense'));
  assert.throws(() => buildBlockList(['10.0.0.0/33']), /prefix length must be 0..32/);
  assert.throws(() => buildBlockList(['10.0.0/8']), /not an IPv4 or IPv6/);
  assert.throws(() => buildBlockList(['::/x']), /prefix length/);
});
