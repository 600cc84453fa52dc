/**
 * Job ids and owner binding (SPEC §5).
 *
 * An id is `J` + 24 base64url characters: 144 random bits from the CSPRNG, so ids cannot be guessed
 * or enumerated. They are not secret from whoever holds them (they appear in URLs and logs): a job
 * created with credentials is additionally bound to them (`ownerHash`).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

const ID_BYTES = 18;
const ID_PATTERN = /^J[A-Za-z0-9_-]{24}$/;

export function newJobId(): string {
  return `J${randomBytes(ID_BYTES).toString('base64url')}`;
}

/** Whether `id` has the shape of a job id (cheap check before touching the store). */
export function isJobId(id: string): boolean {
  return ID_PATTERN.test(id);
}

function headerValue(v: string | string[] | undefined): string | undefined {
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v.join('; ') : v;
}

/**
 * SHA-256 (hex) over the request's `Authorization` and `Cookie` values, or undefined when it carries
 * neither (a public job). Each value is length-prefixed and labelled, so no pair of values can
 * collide with another by moving bytes from one header to the other.
 */
export function ownerHash(headers: IncomingHttpHeaders): string | undefined {
  const auth = headerValue(headers.authorization);
  const cookie = headerValue(headers.cookie);
  if (auth === undefined && cookie === undefined) return undefined;
  const h = createHash('sha256');
  h.update('sluice-job-owner/1\n');
  for (const [label, v] of [
    ['authorization', auth],
    ['cookie', cookie],
  ] as const) {
    if (v === undefined) h.update(`${label}:-\n`);
    else h.update(`${label}:${Buffer.byteLength(v)}:${v}\n`);
  }
  return h.digest('hex');
}

/**
 * Whether a request whose credentials hash to `requester` may see a job owned by `owner`. A public
 * job (no owner) is visible to anyone holding its id. Compared in constant time.
 */
export function ownerMatches(owner: string | undefined, requester: string | undefined): boolean {
  if (owner === undefined) return true;
  if (requester === undefined) return false;
  const a = Buffer.from(owner, 'latin1');
  const b = Buffer.from(requester, 'latin1');
  // Both are hex SHA-256 digests (64 bytes); unequal lengths only for corrupted data.
  if (a.length !== b.length) return false;
  return timingSafeEqual(a, b);
}
