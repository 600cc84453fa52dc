/**
 * Access-log line formats (SPEC §13): `json` (the default, one JSON object per line), `combined`
 * (nginx's, byte for byte, so every tool that reads nginx logs reads it), or a template of
 * nginx-style `$variables`. A template is compiled once at load into literal strings and field
 * readers; a line is then one pass of string concatenation over fields the entry already holds.
 */
import type { AccessLogEntry } from './access-log.ts';

/**
 * The request a line is about, for `$http_NAME` and `$server_protocol`: a symbol-keyed field, which
 * JSON.stringify skips (the JSON line is unchanged) and which costs one property on the entry.
 */
export const REQUEST_OF: unique symbol = Symbol('request');

export const COMBINED =
  '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"';

type Reader = (e: AccessLogEntry) => string;

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const pad = (n: number) => (n < 10 ? `0${n}` : String(n));

let localSecond = -1;
let localText = '';
let isoText = '';
/** `$time_local` (`02/Dec/2026:15:28:30 +0000`) and `$time_iso8601`, made at most once per second. */
function times(): void {
  const ms = Date.now();
  const sec = Math.floor(ms / 1000);
  if (sec === localSecond) return;
  localSecond = sec;
  const d = new Date(ms);
  const off = -d.getTimezoneOffset();
  const sign = off < 0 ? '-' : '+';
  const abs = Math.abs(off);
  const hh = pad(Math.floor(abs / 60));
  const mm = pad(abs % 60);
  const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  localText = `${pad(d.getDate())}/${MONTHS[d.getMonth()]}/${d.getFullYear()}:${clock} ${sign}${hh}${mm}`;
  isoText = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${clock}${sign}${hh}:${mm}`;
}

// nginx's default escaping: `"`, `\`, control characters and bytes above 0x7e become \xHH.
function needsEscape(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return true;
  }
  return false;
}
function esc(s: string): string {
  if (!needsEscape(s)) return s;
  let out = '';
  for (const ch of Buffer.from(s, 'utf8')) {
    if (ch === 0x22 || ch === 0x5c || ch < 0x20 || ch > 0x7e)
      out += `\\x${ch.toString(16).toUpperCase().padStart(2, '0')}`;
    else out += String.fromCharCode(ch);
  }
  return out;
}

const dash = (v: string | null | undefined) => (v === undefined || v === null || v === '' ? '-' : v);
const num = (v: number | null | undefined) => (v === null || v === undefined ? '-' : String(v));
const secs = (ms: number | null | undefined) =>
  ms === null || ms === undefined ? '-' : (ms / 1000).toFixed(3);
const addr = (e: AccessLogEntry) => {
  const a = e.client;
  if (!a) return '-';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
};
const queryAt = (p: string) => p.indexOf('?');
const protocol = (e: AccessLogEntry) => {
  const v = e[REQUEST_OF]?.httpVersion;
  return v ? `HTTP/${v}` : 'HTTP/1.1';
};

/** Every variable a template may use, nginx's common ones first, then Sluice's. */
const VARIABLES: Record<string, Reader> = {
  remote_addr: addr,
  remote_user: () => '-',
  time_local: () => {
    times();
    return localText;
  },
  time_iso8601: () => {
    times();
    return isoText;
  },
  msec: () => (Date.now() / 1000).toFixed(3),
  request: (e) => (e.method === '' ? '-' : esc(`${e.method} ${e.path} ${protocol(e)}`)),
  request_method: (e) => dash(e.method),
  request_uri: (e) => dash(esc(e.path)),
  uri: (e) => {
    const q = queryAt(e.path);
    return dash(esc(q === -1 ? e.path : e.path.slice(0, q)));
  },
  args: (e) => {
    const q = queryAt(e.path);
    return q === -1 ? '-' : dash(esc(e.path.slice(q + 1)));
  },
  server_protocol: protocol,
  host: (e) => {
    const h = e[REQUEST_OF]?.headers.host;
    if (!h) return '-';
    const i = h.charCodeAt(0) === 91 ? h.indexOf(']') + 1 : h.indexOf(':');
    return esc((i <= 0 ? h : h.slice(0, i)).toLowerCase());
  },
  status: (e) => String(e.status),
  body_bytes_sent: (e) => String(e.bytes_out),
  request_time: (e) => secs(e.total),
  upstream_addr: (e) => (e.target ? e.target.slice(e.target.indexOf('//') + 2) : '-'),
  upstream_status: (e) => (e.target ? String(e.status) : '-'),
  upstream_connect_time: (e) => (e.target ? secs(e.connect ?? 0) : '-'),
  upstream_header_time: (e) => (e.target && e.ttfb !== null ? secs((e.connect ?? 0) + e.ttfb) : '-'),
  request_id: (e) => e.request_id,
  // Sluice's own: the JSON log's fields under their JSON names (times in ms, like the JSON log).
  route: (e) => dash(e.route),
  upstream: (e) => dash(e.upstream),
  target: (e) => dash(e.target),
  outcome: (e) => e.outcome,
  phase: (e) => dash(e.phase),
  error: (e) => dash(e.error),
  attempts: (e) => String(e.attempts),
  retries: (e) => String(e.retries),
  bytes_in: (e) => String(e.bytes_in),
  bytes_out: (e) => String(e.bytes_out),
  dns: (e) => num(e.dns),
  connect: (e) => num(e.connect),
  tls: (e) => num(e.tls),
  ttfb: (e) => num(e.ttfb),
  total: (e) => String(e.total),
  budget_ms: (e) => String(e.budget_ms),
  budget_source: (e) => dash(e.budget_source),
  cache: (e) => dash(e.cache),
  encoding: (e) => dash(e.encoding),
  job: (e) => dash(e.job),
};

export const LOG_VARIABLES: readonly string[] = Object.keys(VARIABLES);

function header(name: string): Reader {
  const key = name.replace(/_/g, '-');
  return (e) => {
    const v = e[REQUEST_OF]?.headers[key];
    if (v === undefined) return '-';
    return esc(Array.isArray(v) ? v.join(', ') : v);
  };
}

type Part = string | Reader;

function parse(template: string): Part[] | string {
  const parts: Part[] = [];
  let lit = '';
  const re = /\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))/g;
  let last = 0;
  for (let m = re.exec(template); m !== null; m = re.exec(template)) {
    lit += template.slice(last, m.index);
    last = m.index + m[0].length;
    const name = m[1] ?? m[2];
    let reader: Reader | undefined = VARIABLES[name];
    if (reader === undefined && name.startsWith('http_') && name.length > 5)
      reader = header(name.slice(5).toLowerCase());
    if (reader === undefined)
      return `unknown variable $${name} (known: ${LOG_VARIABLES.map((v) => `$${v}`).join(', ')}, $http_NAME)`;
    if (lit) parts.push(lit);
    lit = '';
    parts.push(reader);
  }
  lit += template.slice(last);
  if (lit) parts.push(lit);
  return parts;
}

/** Why a format cannot be used (an unknown variable), or undefined. */
export function logFormatProblem(format: string): string | undefined {
  if (format === 'json' || format === 'combined') return undefined;
  if (format.trim() === '') return 'expected json, combined or a template with $variables';
  const parts = parse(format);
  return typeof parts === 'string' ? parts : undefined;
}

/** The line (with its newline) of an entry in a format; the format was checked at load. */
export function compileLogFormat(format: string): (e: AccessLogEntry) => string {
  if (format === 'json') return (e) => `${JSON.stringify(e)}\n`;
  const parts = parse(format === 'combined' ? COMBINED : format);
  if (typeof parts === 'string') throw new Error(parts);
  const n = parts.length;
  return (e) => {
    let out = '';
    for (let i = 0; i < n; i++) {
      const p = parts[i];
      out += typeof p === 'string' ? p : p(e);
    }
    return `${out}\n`;
  };
}
