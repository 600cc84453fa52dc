/**
 * The JSON-lines access logs `sluice logs` reads: Sluice's own, Kong's (the file-log / http-log
 * plugins' document) and AWS API Gateway's JSON access logs (`$context` variables under the names
 * the console's JSON example uses, and the common variations of them).
 */
import { type LogParser, type LogRecord, parseClfTime } from './record.ts';

type Json = Record<string, unknown>;

function object(b: Buffer, start: number, end: number): Json | undefined {
  while (start < end && (b[start] === 32 || b[start] === 9)) start++;
  if (b[start] !== 123) return undefined; // {
  try {
    const v: unknown = JSON.parse(b.toString('utf8', start, end));
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : undefined;
  } catch {
    return undefined;
  }
}

/** A number, or a numeric string (API Gateway logs every `$context` value as a string); else NaN. */
function num(v: unknown): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && v !== '' && v !== '-') return Number(v);
  return Number.NaN;
}

/** Where JSON formats put the method and the target as bytes (for folding); longer ones are cut. */
const scratch = Buffer.alloc(64 * 1024);

function setRequest(rec: LogRecord, method: string, target: string): void {
  rec.buf = scratch;
  rec.methodAt = 0;
  rec.methodEnd = scratch.write(method.slice(0, 64), 0);
  rec.targetAt = rec.methodEnd;
  rec.targetEnd = rec.targetAt + scratch.write(target, rec.targetAt);
}

function reset(rec: LogRecord): void {
  rec.templated = false;
  rec.timeoutPhase = null;
  rec.budgetMs = Number.NaN;
  rec.latencyMs = Number.NaN;
  rec.time = Number.NaN;
  rec.timeAt = -1;
  rec.skip = false;
}

const JOB_OUTCOMES = new Set(['job_completed', 'job_failed', 'job_cancelled']);

/** Sluice's access log (one JSON line per request, SPEC §7): phase and budget are known. */
export const sluiceParser: LogParser = {
  format: 'sluice',
  phases: true,
  parse(b, start, end, rec) {
    const o = object(b, start, end);
    if (!o || typeof o.method !== 'string' || typeof o.path !== 'string' || typeof o.status !== 'number')
      return false;
    if (typeof o.outcome !== 'string' || !('request_id' in o)) return false;
    reset(rec);
    setRequest(rec, o.method, o.path);
    rec.status = o.status;
    // The line written when a job ends describes the job, not a request (its total is the job's age).
    rec.skip = JOB_OUTCOMES.has(o.outcome);
    rec.latencyMs = num(o.total);
    if (o.outcome === 'timeout') rec.timeoutPhase = typeof o.phase === 'string' ? o.phase : 'total';
    const budget = num(o.budget_ms);
    if (budget > 0) rec.budgetMs = budget;
    rec.time = typeof o.time === 'string' ? Date.parse(o.time) : Number.NaN;
    return true;
  },
  time: (rec) => rec.time,
};

/** Kong's log plugins: request.method/uri, response.status, latencies.request (ms), started_at (epoch ms). */
export const kongParser: LogParser = {
  format: 'kong',
  phases: false,
  parse(b, start, end, rec) {
    const o = object(b, start, end);
    if (!o) return false;
    const req = o.request as Json | undefined;
    const res = o.response as Json | undefined;
    const lat = o.latencies as Json | undefined;
    if (!req || typeof req !== 'object' || !res || typeof res !== 'object' || !lat || typeof lat !== 'object')
      return false;
    const status = num(res.status);
    if (typeof req.method !== 'string' || !(status >= 100)) return false;
    reset(rec);
    setRequest(
      rec,
      req.method,
      typeof req.uri === 'string' ? req.uri : typeof req.url === 'string' ? req.url : '/',
    );
    rec.status = status;
    // latencies.request: from the first byte read from the client to the last byte sent to it.
    const total = num(lat.request);
    rec.latencyMs = total >= 0 ? total : Number.NaN;
    rec.time = num(o.started_at);
    return true;
  },
  time: (rec) => rec.time,
};

function str(o: Json, ...keys: string[]): string | undefined {
  for (const k of keys) {
    const v = o[k];
    if (typeof v === 'string' && v !== '' && v !== '-') return v;
  }
  return undefined;
}

/** Whether a value of the line (or of an object in it) says INTEGRATION_TIMEOUT or "… timed out". */
function saysTimeout(o: Json, depth = 0): boolean {
  for (const v of Object.values(o)) {
    if (typeof v === 'string' && (v === 'INTEGRATION_TIMEOUT' || v.includes('timed out'))) return true;
    if (depth === 0 && v !== null && typeof v === 'object' && saysTimeout(v as Json, 1)) return true;
  }
  return false;
}

/**
 * AWS API Gateway (REST and HTTP APIs) JSON access logs: `httpMethod`, `resourcePath` (the route
 * template, kept as it is) or `routeKey` (`GET /pets/{id}`) or `path`, `status`, `responseLatency`
 * (else `integrationLatency`), `requestTimeEpoch` (else `requestTime`, CLF). A 504 whose line says
 * `INTEGRATION_TIMEOUT` (`$context.error.responseType`) or "Endpoint request timed out"
 * (`$context.error.message`) is a timeout in the `integration` phase.
 */
export const apigwParser: LogParser = {
  format: 'apigw',
  // Only when the line logs `$context.error.*`: the aggregate shows timeouts once a line names one.
  phases: false,
  parse(b, start, end, rec) {
    const o = object(b, start, end);
    if (!o) return false;
    const status = num(o.status);
    let method = str(o, 'httpMethod', 'method', 'http_method');
    let target = str(o, 'resourcePath', 'resource_path');
    let templated = target !== undefined;
    const routeKey = str(o, 'routeKey', 'route_key');
    if (target === undefined && routeKey !== undefined && routeKey !== '$default') {
      const sp = routeKey.indexOf(' ');
      if (sp > 0) {
        method ??= routeKey.slice(0, sp);
        target = routeKey.slice(sp + 1);
      } else target = routeKey;
      templated = true;
    }
    if (target === undefined) {
      target = str(o, 'path', 'requestPath', 'uri');
      templated = false;
    }
    const hasApigwKey =
      'requestTimeEpoch' in o ||
      'requestTime' in o ||
      'httpMethod' in o ||
      'routeKey' in o ||
      'resourcePath' in o;
    if (!hasApigwKey || method === undefined || target === undefined || !(status >= 100)) return false;
    reset(rec);
    setRequest(rec, method, target);
    rec.templated = templated;
    rec.status = status;
    let latency = num(o.responseLatency ?? o.latency);
    if (Number.isNaN(latency)) latency = num(o.integrationLatency ?? o.integration_latency);
    rec.latencyMs = latency >= 0 ? latency : Number.NaN;
    if (status === 504 && saysTimeout(o)) rec.timeoutPhase = 'integration';
    const epoch = num(o.requestTimeEpoch);
    rec.time =
      epoch > 0
        ? epoch
        : typeof o.requestTime === 'string'
          ? parseClfTime(Buffer.from(o.requestTime), 0)
          : Number.NaN;
    return true;
  },
  time: (rec) => rec.time,
};
