/**
 * Where Sluice deliberately differs from nginx (issue 14, docs/reliability.md "Differential tests
 * against nginx"). Every disagreement of the differential must be explained by these; each decision
 * states what Sluice does, and its check fails when Sluice stops doing it.
 *
 * Two kinds. A *rewrite* turns nginx's outcome into the one Sluice is decided to give (a fragment
 * cut off, Connection-named headers dropped, 501/505 answered as 400); a case whose outcomes agree
 * after the rewrites that apply is decided by them. A *refusal* explains a case one side refuses and
 * the other forwards: it applies to named cases or fuzz mutations, and holds only when the refusing
 * side forwarded nothing the other did not forward too.
 */
import { createHash } from 'node:crypto';
import { type Forwarded, key, type Outcome } from './differential.ts';
import type { DiffCase } from './differential-corpus.ts';

export interface Decision {
  id: string;
  /** What Sluice does, what nginx does, and why Sluice keeps to it. */
  sluice: string;
  nginx: string;
  why: string;
}

interface Rewrite extends Decision {
  /** nginx's outcome as Sluice is decided to give it, or undefined when the decision does not apply. */
  rewrite(c: DiffCase, nginx: Outcome): Outcome | undefined;
}

interface Refusal extends Decision {
  /** Which side refuses. */
  refuser: 'sluice' | 'nginx';
  applies(c: DiffCase): boolean;
  /** Instead of the default check (the refuser refused and forwarded nothing the other did not). */
  holds?(sluice: Outcome, nginx: Outcome): boolean;
}

/** The request targets in a case's bytes (request lines of every pipelined request). */
function targets(c: DiffCase): string[] {
  const text = c.bytes.toString('latin1');
  return [...text.matchAll(/(?:^|\n)[A-Za-z]+[ \t]+(\S+)[ \t]+HTTP\//g)].map((m) => m[1]);
}

/**
 * nginx refuses (400) a path whose `..` climbs above the root. It decodes the path first, `%2F`
 * included (so `/%2F/..` is `//..`, which climbs), and merges slashes.
 */
function climbsAboveRoot(target: string): boolean {
  const path = target
    .replace(/^https?:\/\/[^/?#]*/i, '')
    .split(/[?#]/)[0]
    .replace(/%2f/gi, '/');
  let depth = 0;
  for (const raw of path.split('/')) {
    const seg = raw.replace(/%2e/gi, '.');
    if (seg === '' || seg === '.') continue;
    if (seg === '..') {
      if (--depth < 0) return true;
    } else depth++;
  }
  return false;
}

const byName =
  (names: readonly string[], mutations: readonly string[] = []) =>
  (c: DiffCase) =>
    names.includes(c.name) || c.mutations.some((m) => mutations.includes(m));

const REWRITES: Rewrite[] = [
  {
    id: 'fragment-stripped',
    sluice: 'forwards the target without its `#fragment`',
    nginx: 'forwards the `#fragment` to the upstream',
    why: 'A request target has no fragment (RFC 9112 §3.2); one sent anyway is cut off, query included, so it reaches neither the route match nor the upstream (fixed in parseTarget by this battery).',
    rewrite(_c, nginx) {
      if (!nginx.forwarded.some((f) => f.target.includes('#'))) return undefined;
      const cut = (s: string) => s.split('#')[0];
      return {
        ...nginx,
        forwarded: nginx.forwarded.map((f) => ({ ...f, target: cut(f.target), path: cut(f.path) })),
      };
    },
  },
  {
    id: 'connection-named-dropped',
    sluice: 'drops every header the `Connection` header names',
    nginx: 'forwards them (it only replaces `Connection` itself)',
    why: 'RFC 9110 §7.6.1: a proxy must remove the fields Connection lists; SPEC §3 says so too. A client naming `X-Secret` in Connection must not get it to the upstream.',
    rewrite(c, nginx) {
      const named = new Set(
        [...c.bytes.toString('latin1').matchAll(/(?:^|\n)connection:[ \t]*([^\r\n]*)/gi)].flatMap((m) =>
          m[1].split(',').map((t) => t.trim().toLowerCase()),
        ),
      );
      named.delete('close');
      named.delete('keep-alive');
      if (named.size === 0) return undefined;
      const strip = (f: Forwarded) => ({ ...f, headers: f.headers.filter(([n]) => !named.has(n)) });
      const forwarded = nginx.forwarded.map(strip);
      if (JSON.stringify(forwarded) === JSON.stringify(nginx.forwarded)) return undefined;
      return { ...nginx, forwarded };
    },
  },
  {
    id: 'status-400',
    sluice: 'answers `400 bad-request` (problem+json)',
    nginx:
      'answers `501` for a Transfer-Encoding it does not implement and `505` for a version other than 1.x',
    why: "SPEC §4's catalogue has one status for a malformed or ambiguous request; the problem's `detail` names the cause. Both refuse and close; only the code differs.",
    rewrite(_c, nginx) {
      if (!nginx.statuses.some((s) => s === 501 || s === 505)) return undefined;
      return { ...nginx, statuses: nginx.statuses.map((s) => (s === 501 || s === 505 ? 400 : s)) };
    },
  },
];

const REFUSALS: Refusal[] = [
  {
    id: 'bare-lf',
    refuser: 'sluice',
    sluice: 'refuses a bare LF as a line end (400)',
    nginx: 'accepts it',
    why: 'RFC 9112 §2.2 lets a recipient accept a bare LF, and a front end that does while the server behind does not is the classic split (HTTP Garden). Sluice accepts only CRLF.',
    applies: byName(
      ['te-te-lf-in-previous', 'pipelined-malformed-after-valid', 'chunk-lf-only'],
      ['bare-lf', 'chunk-bare-lf', 'value-lf'],
    ),
  },
  {
    id: 'chunk-lines',
    refuser: 'sluice',
    sluice:
      'refuses whitespace, NUL or a bare LF in a chunk-size line, and a last chunk without its final CRLF (400)',
    nginx: 'accepts them',
    why: "RFC 9112 §7.1 has no whitespace, NUL or bare LF in a chunk-size line; each leniency is a parser discrepancy a smuggled request can hide in (the HTTP Garden's most common class). One refusal goes beyond the RFC: §7.1.1 allows whitespace (BWS) around an extension's `;` and `=`, which llhttp's strict mode refuses; no client is known to send it, and the lenient parser that would accept it accepts far worse.",
    applies: byName(
      [
        'chunk-size-trailing-space',
        'chunk-ext-bare-lf',
        'chunk-ext-nul',
        'last-chunk-no-final-crlf-then-request',
        'chunk-ext-bws',
      ],
      ['chunk-ext-bws', 'chunk-size-bad'],
    ),
  },
  {
    id: 'invalid-field-lines',
    refuser: 'sluice',
    sluice: 'refuses a header line without a colon or with a name that is not a token (400)',
    nginx: 'drops the line and forwards the rest (`ignore_invalid_headers on`)',
    why: 'RFC 9112 §5 makes such a message invalid; silently dropping a line means the gateway and the upstream may not agree on which headers a request had. Refusing leaves no doubt.',
    applies: byName(['header-name-high-bytes'], ['no-colon', 'name-bad-char']),
  },
  {
    id: 'trailer-fields',
    refuser: 'sluice',
    sluice: 'refuses a trailer section holding Content-Length or an invalid line (400)',
    nginx: 'ignores the trailer section',
    why: 'A framing field is never allowed in a trailer section (RFC 9110 §6.5.1) and an invalid line makes the message invalid; llhttp refuses both, the safer reading (the HTTP Garden found servers that merge trailers into the header section).',
    applies: byName(['trailer-content-length', 'trailer-bad-field']),
  },
  {
    id: 'methods-and-versions',
    refuser: 'sluice',
    sluice: 'refuses a method outside llhttp’s registered list and HTTP/1.2 (400)',
    nginx: 'forwards any upper-case method, and HTTP/1.2 as 1.1',
    why: 'Node’s parser knows a fixed list of methods (the IANA registry’s common ones); an unknown token is refused rather than forwarded blind. HTTP/1.2 does not exist.',
    applies: byName(['method-custom', 'version-1-2'], ['version-bad']),
  },
  {
    id: 'absolute-form-host',
    refuser: 'sluice',
    sluice: 'refuses an absolute-form target whose authority differs from Host (400)',
    nginx: 'routes by the target’s authority and ignores Host (RFC 9112 §3.2.2)',
    why: 'SPEC §3: two names for the host of one request is ambiguous, and a gateway that routes by Host while the upstream reads the target (or the reverse) can be steered. Sluice refuses instead of choosing.',
    applies: byName(['absolute-form-other-host'], ['absolute-other-host']),
  },
  {
    id: 'dot-segments-above-root',
    refuser: 'nginx',
    sluice: 'removes dot segments (`..` above the root stays at the root) and forwards the normalised path',
    nginx: 'refuses a path whose `..` climbs above the root (400)',
    why: 'SPEC §3 and RFC 3986 §5.2.4: `/../a` is `/a`. Normalising before routing is what keeps `/api/../admin` out of another route; refusing would be safe too, but a normalised path can be forwarded.',
    applies: (c) => targets(c).some(climbsAboveRoot),
  },
  {
    id: 'open-after-refusal',
    refuser: 'nginx',
    sluice:
      'keeps the connection open after refusing a request whose framing was clear (no body), and answers the next one',
    nginx: 'closes the connection after any 400',
    why: 'A refused request without a body leaves no bytes whose meaning is in doubt, so the next request on the connection starts where it is known to start. A refusal with a body, or of framing, closes (the pipelining battery checks that nothing behind it is read).',
    applies: () => true,
    holds: (sluice, nginx) =>
      nginx.statuses.length < sluice.statuses.length &&
      nginx.statuses.every((s, i) => s === sluice.statuses[i]) &&
      nginx.statuses.at(-1) === 400 &&
      forwardedWithin(nginx, sluice),
  },
  {
    id: 'te-ows',
    refuser: 'nginx',
    sluice: 'reads `Transfer-Encoding:<TAB>chunked` as chunked and forwards the decoded body',
    nginx: 'answers 501',
    why: 'A tab before a field value is optional whitespace (RFC 9110 §5.6.3), so the value is exactly `chunked`. Both sides agree on the framing; nginx only compares the raw bytes.',
    applies: byName(['te-te-tab']),
  },
];

export const DECISIONS: readonly Decision[] = [...REWRITES, ...REFUSALS];

function multiset(o: Outcome): string[] {
  return o.forwarded.map(
    (f) =>
      `${f.method} ${f.path} ${createHash('sha256').update(f.body).digest('hex')} ${JSON.stringify(f.headers)}`,
  );
}

/** Each of `sub`'s forwarded requests is also among `sup`'s. */
function forwardedWithin(sub: Outcome, sup: Outcome): boolean {
  const left = multiset(sup);
  for (const k of multiset(sub)) {
    const i = left.indexOf(k);
    if (i === -1) return false;
    left.splice(i, 1);
  }
  return true;
}

const refused = (o: Outcome) => o.statuses.some((s) => s >= 400 && s < 500);

/** The decisions that explain a disagreement, or undefined when none does (a finding). */
export function decide(c: DiffCase, sluice: Outcome, nginx: Outcome): string[] | undefined {
  const used: string[] = [];
  let n = nginx;
  for (const r of REWRITES) {
    const next = r.rewrite(c, n);
    if (next !== undefined) {
      used.push(r.id);
      n = next;
    }
  }
  if (key(sluice) === key(n)) return used;
  for (const r of REFUSALS) {
    if (!r.applies(c)) continue;
    const [refuser, other] = r.refuser === 'sluice' ? [sluice, n] : [n, sluice];
    const holds = r.holds ? r.holds(sluice, n) : refused(refuser) && forwardedWithin(refuser, other);
    if (holds) return [...used, r.id];
  }
  return undefined;
}
