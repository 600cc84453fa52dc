import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  DURATION_PATTERN,
  formatDuration,
  formatSize,
  parseDuration,
  parseSize,
  SIZE_PATTERN,
} from './units.ts';

test('parseDuration: every unit', () => {
  assert.equal(parseDuration('250ms'), 250);
  assert.equal(parseDuration('5s'), 5_000);
  assert.equal(parseDuration('2m'), 120_000);
  assert.equal(parseDuration('1h'), 3_600_000);
  assert.equal(parseDuration('29s'), 29_000);
});

test('parseDuration: zero disables (0 and 0s, any unit)', () => {
  assert.equal(parseDuration('0'), 0);
  assert.equal(parseDuration('0s'), 0);
  assert.equal(parseDuration('0ms'), 0);
  assert.equal(parseDuration('0h'), 0);
});

test('parseDuration: fractions', () => {
  assert.equal(parseDuration('1.5s'), 1_500);
  assert.equal(parseDuration('0.25s'), 250);
  assert.equal(parseDuration('1.5m'), 90_000);
  assert.equal(parseDuration('0.5h'), 1_800_000);
  assert.equal(parseDuration('2.5ms'), 3); // rounded to whole milliseconds
});

test('parseDuration: a tiny positive duration never rounds down to 0 (which would disable it)', () => {
  assert.equal(parseDuration('0.4ms'), 1);
  assert.equal(parseDuration('0.0001s'), 1);
});

test('parseDuration: rejects bare numbers, unknown units and junk', () => {
  for (const bad of [
    '5',
    '5x',
    '',
    's',
    '-1s',
    '1e3ms',
    '5 s',
    '5S',
    '5sec',
    '1d',
    '.5s',
    '5.s',
    '1h30m',
    'NaN',
    '0x10s',
  ]) {
    assert.equal(parseDuration(bad), undefined, `parseDuration(${JSON.stringify(bad)})`);
  }
});

test('parseSize: every unit, binary multiples, KiB synonyms', () => {
  assert.equal(parseSize('512B'), 512);
  assert.equal(parseSize('512KB'), 512 * 1024);
  assert.equal(parseSize('10MB'), 10 * 1024 * 1024);
  assert.equal(parseSize('1GB'), 1024 ** 3);
  assert.equal(parseSize('16KiB'), 16 * 1024);
  assert.equal(parseSize('2MiB'), 2 * 1024 ** 2);
  assert.equal(parseSize('1GiB'), 1024 ** 3);
  assert.equal(parseSize('0'), 0);
  assert.equal(parseSize('0B'), 0);
});

test('parseSize: fractions', () => {
  assert.equal(parseSize('1.5KB'), 1536);
  assert.equal(parseSize('0.5MB'), 512 * 1024);
  assert.equal(parseSize('2.5GB'), 2.5 * 1024 ** 3);
});

test('parseSize: rejects bare numbers, unknown and lower-case units', () => {
  for (const bad of ['512', '10mb', '10 MB', '10M', '10K', '10TB', '-1KB', 'KB', '', '1e3B', '10kb']) {
    assert.equal(parseSize(bad), undefined, `parseSize(${JSON.stringify(bad)})`);
  }
});

test('formatDuration: the largest unit that divides evenly, fractions of seconds', () => {
  assert.equal(formatDuration(0), '0s');
  assert.equal(formatDuration(250), '250ms');
  assert.equal(formatDuration(999), '999ms');
  assert.equal(formatDuration(1_000), '1s');
  assert.equal(formatDuration(1_500), '1.5s');
  assert.equal(formatDuration(1_050), '1050ms');
  assert.equal(formatDuration(29_000), '29s');
  assert.equal(formatDuration(90_000), '90s');
  assert.equal(formatDuration(60_000), '1m');
  assert.equal(formatDuration(120_000), '2m');
  assert.equal(formatDuration(3_600_000), '1h');
  assert.equal(formatDuration(5_400_000), '90m');
});

test('formatDuration round-trips through parseDuration', () => {
  for (const ms of [0, 1, 250, 1_000, 1_500, 1_050, 29_000, 60_000, 90_000, 3_600_000, 7_200_000, 123_456]) {
    assert.equal(parseDuration(formatDuration(ms)), ms, `round trip of ${ms}`);
  }
});

test('formatSize: the largest unit that divides evenly, else bytes', () => {
  assert.equal(formatSize(0), '0B');
  assert.equal(formatSize(512), '512B');
  assert.equal(formatSize(1024), '1KB');
  assert.equal(formatSize(1536), '1536B');
  assert.equal(formatSize(16 * 1024), '16KB');
  assert.equal(formatSize(10 * 1024 * 1024), '10MB');
  assert.equal(formatSize(1024 ** 3), '1GB');
  assert.equal(formatSize(3 * 1024 ** 3), '3GB');
});

test('formatSize round-trips through parseSize', () => {
  for (const b of [0, 1, 512, 1024, 1536, 16 * 1024, 10 * 1024 * 1024, 1024 ** 3, 5 * 1024 ** 3]) {
    assert.equal(parseSize(formatSize(b)), b, `round trip of ${b}`);
  }
});

test('the JSON Schema patterns accept exactly what the parsers accept', () => {
  const d = new RegExp(DURATION_PATTERN);
  for (const s of ['0', '0s', '250ms', '1.5s', '2m', '1h', '5', '5x', '-1s', '.5s', '1d', '5 s']) {
    assert.equal(d.test(s), parseDuration(s) !== undefined, `duration ${JSON.stringify(s)}`);
  }
  const z = new RegExp(SIZE_PATTERN);
  for (const s of ['0', '0B', '512B', '1.5KB', '10MB', '1GiB', '512', '10mb', '10 MB', '10TB']) {
    assert.equal(z.test(s), parseSize(s) !== undefined, `size ${JSON.stringify(s)}`);
  }
});
