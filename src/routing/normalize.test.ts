import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { normalizePath, parseTarget, removeDotSegments } from './normalize.ts';

describe('removeDotSegments (RFC 3986 §5.2.4)', () => {
  test('the RFC examples', () => {
    // §5.2.4 step-by-step examples, as absolute paths.
    assert.equal(removeDotSegments('/a/b/c/./../../g'), '/a/g');
    // "mid/content=5/../6" → "mid/6", rooted here.
    assert.equal(removeDotSegments('/mid/content=5/../6'), '/mid/6');
  });

  test('the RFC §5.4 reference resolution results that exercise dot segments', () => {
    // Base "http://a/b/c/d;p?q": merged paths before dot-segment removal, and their expected results.
    const cases: [string, string][] = [
      ['/b/c/./g', '/b/c/g'],
      ['/b/c/g/.', '/b/c/g/'], // a final "." leaves the trailing slash
      ['/b/c/.', '/b/c/'], // "."
      ['/b/c/./', '/b/c/'], // "./"
      ['/b/c/..', '/b/'], // ".."
      ['/b/c/../', '/b/'], // "../"
      ['/b/c/../g', '/b/g'], // "../g"
      ['/b/c/../..', '/'], // "../.."
      ['/b/c/../../', '/'], // "../../"
      ['/b/c/../../g', '/g'], // "../../g"
      ['/b/c/../../../g', '/g'], // abnormal: "../../../g"
      ['/b/c/../../../../g', '/g'], // abnormal: "../../../../g"
      ['/./g', '/g'],
      ['/../g', '/g'],
      ['/b/c/g.', '/b/c/g.'],
      ['/b/c/.g', '/b/c/.g'],
      ['/b/c/g..', '/b/c/g..'],
      ['/b/c/..g', '/b/c/..g'],
      ['/b/c/./../g', '/b/g'],
      ['/b/c/./g/.', '/b/c/g/'],
      ['/b/c/g/./h', '/b/c/g/h'],
      ['/b/c/g/../h', '/b/c/h'],
      ['/b/c/g;x=1/./y', '/b/c/g;x=1/y'],
      ['/b/c/g;x=1/../y', '/b/c/y'],
    ];
    for (const [input, want] of cases) assert.equal(removeDotSegments(input), want, input);
  });

  test('paths without dot segments are returned as they are', () => {
    assert.equal(removeDotSegments('/'), '/');
    assert.equal(removeDotSegments('/api/v1/users'), '/api/v1/users');
    assert.equal(removeDotSegments('/api/v1/'), '/api/v1/');
  });
});

describe('normalizePath', () => {
  test('dot segments are removed and can never climb above the root', () => {
    assert.equal(normalizePath('/api/../admin'), '/admin');
    assert.equal(normalizePath('/api/./x'), '/api/x');
    assert.equal(normalizePath('/api/x/../../admin'), '/admin');
    assert.equal(normalizePath('/../../../etc/passwd'), '/etc/passwd');
    assert.equal(normalizePath('/api/..'), '/');
  });

  test('percent-encoded dots are dot segments too', () => {
    assert.equal(normalizePath('/api/%2e%2e/admin'), '/admin');
    assert.equal(normalizePath('/api/%2E%2E/admin'), '/admin');
    assert.equal(normalizePath('/api/.%2e/admin'), '/admin');
    assert.equal(normalizePath('/api/%2e/x'), '/api/x');
  });

  test('percent-encoded unreserved characters are decoded, others upper-cased and kept', () => {
    assert.equal(normalizePath('/%61pi/x'), '/api/x');
    assert.equal(normalizePath('/%7Euser/%2D%2E%5F'), '/~user/-._');
    assert.equal(normalizePath('/a%20b'), '/a%20b');
    assert.equal(normalizePath('/a%c3%a9'), '/a%C3%A9');
    assert.equal(normalizePath('/a%3fb'), '/a%3Fb');
  });

  test('%2F stays encoded: it is data, not a separator', () => {
    assert.equal(normalizePath('/api/a%2Fb'), '/api/a%2Fb');
    assert.equal(normalizePath('/api/a%2fb'), '/api/a%2Fb');
    // "..%2F" is not a dot segment, so it cannot climb either.
    assert.equal(normalizePath('/api/..%2Fadmin'), '/api/..%2Fadmin');
    assert.equal(normalizePath('/api/%2e%2e%2fadmin'), '/api/..%2Fadmin');
  });

  test('repeated slashes are merged', () => {
    assert.equal(normalizePath('/api//x'), '/api/x');
    assert.equal(normalizePath('//api///x//'), '/api/x/');
    assert.equal(normalizePath('//admin'), '/admin');
    assert.equal(normalizePath('/api/.//..//admin'), '/admin');
  });

  test('already normal paths are returned unchanged (same string)', () => {
    for (const p of ['/', '/api', '/api/', '/api/v1/users', '/a.b/c..d/.e'])
      assert.equal(normalizePath(p), p);
  });

  test('invalid paths are refused', () => {
    assert.equal(normalizePath(''), undefined);
    assert.equal(normalizePath('api/x'), undefined);
    assert.equal(normalizePath('/api/%zz'), undefined);
    assert.equal(normalizePath('/api/%2'), undefined);
    assert.equal(normalizePath('/api/%'), undefined);
  });
});

describe('parseTarget', () => {
  test('origin-form: path normalised, query untouched', () => {
    assert.deepEqual(parseTarget('/api/../admin?x=%2e%2e/../y&z=%41'), {
      path: '/admin',
      query: '?x=%2e%2e/../y&z=%41',
      authority: undefined,
    });
    assert.deepEqual(parseTarget('/'), { path: '/', query: '', authority: undefined });
    assert.deepEqual(parseTarget('/a?'), { path: '/a', query: '?', authority: undefined });
  });

  test('absolute-form: authority lower-cased and returned apart', () => {
    assert.deepEqual(parseTarget('http://Example.COM:8080/a//b?q=1'), {
      path: '/a/b',
      query: '?q=1',
      authority: 'example.com:8080',
    });
    assert.deepEqual(parseTarget('https://example.com'), {
      path: '/',
      query: '',
      authority: 'example.com',
    });
    assert.deepEqual(parseTarget('http://example.com?q'), {
      path: '/',
      query: '?q',
      authority: 'example.com',
    });
  });

  test('a fragment ends the target, the query included (found by the request fuzz, issue 14)', () => {
    assert.deepEqual(parseTarget('/a?x=1#frag'), { path: '/a', query: '?x=1', authority: undefined });
    assert.deepEqual(parseTarget('/a#f?x=1'), { path: '/a', query: '', authority: undefined });
    assert.deepEqual(parseTarget('http://h/a?q#f'), { path: '/a', query: '?q', authority: 'h' });
  });

  test('malformed targets are refused', () => {
    assert.equal(parseTarget('*'), undefined);
    assert.equal(parseTarget('ftp://example.com/x'), undefined);
    assert.equal(parseTarget('example.com:443'), undefined);
    assert.equal(parseTarget('/a/%g0'), undefined);
  });
});
