/**
 * Credentials files (SPEC §13), read at config load and so again at every reload. Every problem names
 * the file and line; a secret is never echoed back in a message.
 *
 * - users (basic auth): `user:hash` lines, htpasswd-style. Accepted hashes: bcrypt (`$2a$`, `$2b$`,
 *   `$2y$`) and scrypt in PHC form (`$scrypt$ln=15,r=8,p=1$<salt>$<hash>`, salt and hash in base64,
 *   padding optional). Plain text, MD5 (`$apr1$`), SHA-1 (`{SHA}`) and crypt hashes are refused.
 * - keys (api_key): `name:key` (the key is hashed at once, only the hash is kept) or
 *   `name:sha256:HEX` (the SHA-256 of the key, 64 hex digits).
 *
 * Blank lines and lines starting with `#` are skipped.
 */
import { hash } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** A verifiable password hash. */
export type PasswordHash =
  | { readonly kind: 'bcrypt'; readonly hash: string }
  | {
      readonly kind: 'scrypt';
      readonly N: number;
      readonly r: number;
      readonly p: number;
      readonly salt: Buffer;
      readonly hash: Buffer;
    };

/** A problem in a credentials file: `file:line: message`. */
export class CredentialsError extends Error {
  constructor(file: string, line: number | undefined, message: string) {
    super(line === undefined ? `${file}: ${message}` : `${file}:${line}: ${message}`);
    this.name = 'CredentialsError';
  }
}

function readLines(file: string): string[] {
  try {
    return readFileSync(file, 'utf8').split(/\r?\n/);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CredentialsError(
      file,
      undefined,
      code === 'ENOENT' ? 'file not found' : `cannot read it (${code})`,
    );
  }
}

const BCRYPT = /^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$/;
const SCRYPT =
  /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,3}),p=(\d{1,3})\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$/;

/** Parses one stored hash; a string saying why it cannot be used otherwise. */
export function parsePasswordHash(text: string): PasswordHash | string {
  if (text.startsWith('$2')) {
    const m = BCRYPT.exec(text);
    if (!m) return 'malformed bcrypt hash (expected $2b$NN$ and 53 characters)';
    const cost = Number(m[1]);
    if (cost < 4 || cost > 31) return `bcrypt cost ${cost} is out of 4..31`;
    return { kind: 'bcrypt', hash: text };
  }
  if (text.startsWith('$scrypt$')) {
    const m = SCRYPT.exec(text);
    if (!m) return 'malformed scrypt hash (expected $scrypt$ln=N,r=R,p=P$SALT$HASH)';
    const ln = Number(m[1]);
    const r = Number(m[2]);
    const p = Number(m[3]);
    if (ln < 1 || ln > 20 || r < 1 || p < 1) return 'scrypt parameters out of range (ln 1..20, r ≥ 1, p ≥ 1)';
    const salt = Buffer.from(m[4], 'base64');
    const hash = Buffer.from(m[5], 'base64');
    if (hash.length < 16) return 'scrypt hash shorter than 16 bytes';
    return { kind: 'scrypt', N: 2 ** ln, r, p, salt, hash };
  }
  if (text.startsWith('$apr1$') || text.startsWith('$1$'))
    return 'MD5 hashes are refused: use bcrypt (htpasswd -B)';
  if (text.startsWith('{SHA}')) return 'SHA-1 hashes are refused: use bcrypt (htpasswd -B)';
  if (text.startsWith('$5$') || text.startsWith('$6$'))
    return 'SHA-crypt hashes are not supported: use bcrypt or scrypt';
  return 'not a bcrypt ($2b$…) or scrypt ($scrypt$…) hash: plain-text passwords are refused';
}

/** Reads a basic-auth users file: user name → hash. Throws CredentialsError. */
export function loadUsers(file: string): Map<string, PasswordHash> {
  const users = new Map<string, PasswordHash>();
  readLines(file).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new CredentialsError(file, i + 1, 'expected user:hash');
    const user = line.slice(0, colon);
    if (users.has(user)) throw new CredentialsError(file, i + 1, `user "${user}" is listed twice`);
    const hash = parsePasswordHash(line.slice(colon + 1));
    if (typeof hash === 'string') throw new CredentialsError(file, i + 1, `user "${user}": ${hash}`);
    users.set(user, hash);
  });
  if (users.size === 0) throw new CredentialsError(file, undefined, 'no users in it');
  return users;
}

/** SHA-256 of a key, hex: the only form in which API keys are kept. */
export function keyHash(key: string): string {
  return hash('sha256', key, 'hex');
}

/** Reads an API keys file: SHA-256 (hex) of the key → key name. Throws CredentialsError. */
export function loadKeys(file: string): Map<string, string> {
  const keys = new Map<string, string>();
  const names = new Set<string>();
  readLines(file).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    if (colon <= 0 || colon === line.length - 1)
      throw new CredentialsError(file, i + 1, 'expected name:key or name:sha256:HEX');
    const name = line.slice(0, colon);
    const rest = line.slice(colon + 1);
    let hash: string;
    if (rest.startsWith('sha256:')) {
      hash = rest.slice(7).toLowerCase();
      if (!/^[0-9a-f]{64}$/.test(hash))
        throw new CredentialsError(file, i + 1, `key "${name}": sha256: needs 64 hex digits`);
    } else {
      if (rest.length < 16)
        throw new CredentialsError(file, i + 1, `key "${name}" is shorter than 16 characters`);
      hash = keyHash(rest);
    }
    if (names.has(name)) throw new CredentialsError(file, i + 1, `key name "${name}" is listed twice`);
    if (keys.has(hash))
      throw new CredentialsError(file, i + 1, `key "${name}" is the same key as "${keys.get(hash)}"`);
    names.add(name);
    keys.set(hash, name);
  });
  if (keys.size === 0) throw new CredentialsError(file, undefined, 'no keys in it');
  return keys;
}
