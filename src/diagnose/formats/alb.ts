/**
 * AWS Application Load Balancer access logs (space-separated, quoted request and user agent):
 * `type time elb client:port target:port request_processing_time target_processing_time
 * response_processing_time elb_status_code target_status_code received_bytes sent_bytes "request"
 * "user_agent" ssl_cipher ssl_protocol target_group_arn "trace_id" "domain_name" "chosen_cert_arn"
 * matched_rule_priority request_creation_time …`. Classic ELB lines (no leading `type`, no creation
 * time) are read too.
 *
 * Latency: the three processing times summed; when ALB wrote `-1` (it could not dispatch the request,
 * or the target did not answer before the idle timeout) it is `time − request_creation_time`, which
 * is then the time the load balancer waited. A 504 the load balancer generated itself (target status
 * `-`) is a timeout: in phase `connect` when the request was never dispatched
 * (request_processing_time `-1`), else `ttfb` (the target did not answer in time).
 */
import { type LogParser, type LogRecord, parseNumber } from './record.ts';

const MAX_FIELDS = 24;
const starts = new Int32Array(MAX_FIELDS);
const ends = new Int32Array(MAX_FIELDS);

/** Splits b[from, to) into at most MAX_FIELDS fields (quoted ones without quotes); returns the count. */
function fields(b: Uint8Array, from: number, to: number): number {
  let n = 0;
  let i = from;
  while (i < to && n < MAX_FIELDS) {
    while (i < to && b[i] === 32) i++;
    if (i >= to) break;
    if (b[i] === 34) {
      let q = i + 1;
      while (q < to && b[q] !== 34) q++;
      starts[n] = i + 1;
      ends[n] = q;
      i = q + 1;
    } else {
      let j = i;
      while (j < to && b[j] !== 32) j++;
      starts[n] = i;
      ends[n] = j;
      i = j;
    }
    n++;
  }
  return n;
}

const text = (b: Uint8Array, i: number) => String.fromCharCode(...b.subarray(starts[i], ends[i]));

/** `http`, `https`, `h2`, `grpcs`, `ws`, `wss`. */
function isType(b: Uint8Array, i: number): boolean {
  const len = ends[i] - starts[i];
  if (len < 2 || len > 5) return false;
  const t = text(b, i);
  return t === 'http' || t === 'https' || t === 'h2' || t === 'grpcs' || t === 'ws' || t === 'wss';
}

/** YYYY-MM-DDT… */
const isIso = (b: Uint8Array, i: number) =>
  ends[i] - starts[i] >= 19 && b[starts[i] + 4] === 45 && b[starts[i] + 10] === 84;

export const albParser: LogParser = {
  format: 'alb',
  phases: true,
  parse(b: Buffer, start: number, end: number, rec: LogRecord): boolean {
    const n = fields(b, start, end);
    // ALB: the first field is the type; Classic ELB starts with the time.
    let o: number;
    if (n >= 14 && isType(b, 0) && isIso(b, 1)) o = 1;
    else if (n >= 12 && isIso(b, 0)) o = 0;
    else return false;
    const rpt = parseNumber(b, starts[o + 4], ends[o + 4]);
    const tpt = parseNumber(b, starts[o + 5], ends[o + 5]);
    const rspt = parseNumber(b, starts[o + 6], ends[o + 6]);
    const status = parseNumber(b, starts[o + 7], ends[o + 7]);
    if (Number.isNaN(rpt + tpt + rspt) || !(status >= 100 && status <= 599)) return false;
    // "GET http://host:80/path?q HTTP/1.1"
    const rs = starts[o + 11];
    const re = ends[o + 11];
    let sp1 = rs;
    while (sp1 < re && b[sp1] !== 32) sp1++;
    rec.buf = b;
    rec.methodAt = rs;
    if (sp1 >= re) {
      rec.methodEnd = re;
      rec.targetAt = rs;
      rec.targetEnd = re;
    } else {
      rec.methodEnd = sp1;
      let sp2 = re - 1;
      while (sp2 > sp1 && b[sp2] !== 32) sp2--;
      rec.targetAt = sp1 + 1;
      rec.targetEnd = sp2 > sp1 ? sp2 : re;
    }
    rec.templated = false;
    rec.status = status;
    rec.budgetMs = Number.NaN;
    rec.skip = false;
    rec.timeAt = -1;
    rec.time = Number.NaN;
    if (rpt >= 0 && tpt >= 0 && rspt >= 0) rec.latencyMs = (rpt + tpt + rspt) * 1000;
    else {
      rec.time = Date.parse(text(b, o));
      const created = o === 1 && n > 21 && isIso(b, 21) ? Date.parse(text(b, 21)) : Number.NaN;
      rec.latencyMs = created > 0 && rec.time >= created ? rec.time - created : Number.NaN;
    }
    const ts = starts[o + 8];
    const elbGenerated = ends[o + 8] - ts === 1 && b[ts] === 45; // target status `-`
    rec.timeoutPhase = status === 504 && elbGenerated ? (rpt < 0 ? 'connect' : 'ttfb') : null;
    if (Number.isNaN(rec.time) && status === 504) rec.time = Date.parse(text(b, o));
    return true;
  },
  time: (rec) => rec.time,
};
