/**
 * The one schema of sluice.yaml. The validator, the TypeScript types and the JSON Schema in
 * `schema/sluice.schema.json` (for editors) all come from here; the `description` of each field is its
 * user documentation. Adding a config section means adding it here and resolving it in resolve.ts.
 */
import { z } from 'zod';
import { accessDefaultsShape, accessShape } from './access-schema.ts';
import { LINT_CODE_NAMES } from './lint-codes.ts';
import { DURATION_PATTERN, parseDuration, parseSize, SIZE_PATTERN } from './units.ts';

// A duration is a string with a unit; the bare number 0 is accepted too, as "0s" (disabled).
const duration = (description: string) =>
  z
    .union([z.literal(0), z.string().regex(new RegExp(DURATION_PATTERN))], {
      error: 'expected a duration such as 250ms, 5s, 2m or 1h',
    })
    .transform((s) => (s === 0 ? 0 : (parseDuration(s) as number)))
    .meta({ description });

const size = (description: string) =>
  z
    .string()
    .regex(new RegExp(SIZE_PATTERN), 'expected a size such as 512KB or 10MB')
    .transform((s) => parseSize(s) as number)
    .meta({ description });

export const ADDRESS_PATTERN = '^(\\[[0-9a-fA-F:.]+\\]|[A-Za-z0-9.-]*):\\d{1,5}$';
const address = (description: string) =>
  z
    .string()
    .regex(new RegExp(ADDRESS_PATTERN), 'expected host:port, e.g. 0.0.0.0:8080 or :8080')
    .refine((s) => !(Number(s.slice(s.lastIndexOf(':') + 1)) > 65535), 'the port must be 0..65535')
    .meta({ description });

const percent = (description: string) =>
  z
    .string()
    .regex(/^\d+(\.\d+)?%$/, 'expected a percentage such as 20%')
    .refine((v) => Number(v.slice(0, -1)) <= 100, 'a percentage is at most 100%')
    .transform((v) => Number(v.slice(0, -1)) / 100)
    .meta({ description });

const name = z
  .string()
  .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'names use letters, digits, "_", "-" and "." (at most 64)');

/** Per-phase timeouts (SPEC §4). Every field may be set on defaults, an upstream or a route. */
const timeoutsShape = {
  connect: duration('Opening a new connection to a target (TCP + TLS). 0s disables. Default 5s.'),
  send: duration('Idle gap while writing the request body to the upstream. 0s disables. Default 30s.'),
  ttfb: duration('From the request fully sent until response headers arrive. 0s disables. Default 30s.'),
  read: duration('Idle gap between chunks of the response body. 0s disables. Default 60s.'),
  total: duration(
    'From request headers received until the response is complete, across all attempts. 0s disables. Default 29s.',
  ),
  idle: duration(
    'WebSocket (and other Upgrade) tunnels: silence in both directions after which the tunnel is closed; total does not apply to them. 0s disables. Default 5m.',
  ),
};
const timeouts = z.strictObject(timeoutsShape).partial();

export const TARGET_PATTERN = '^https?://';
const target = z.string().refine(isHttpUrl, 'expected an http:// or https:// URL').meta({
  description: 'Base URL of one upstream server, e.g. http://127.0.0.1:9001',
  pattern: TARGET_PATTERN,
  format: 'uri',
});

function isHttpUrl(s: string): boolean {
  if (!/^https?:\/\//.test(s)) return false;
  try {
    new URL(s);
    return true;
  } catch {
    return false;
  }
}

const weightedTarget = z.strictObject({
  url: target,
  weight: z
    .number()
    .int()
    .min(1)
    .max(1000)
    .default(1)
    .meta({ description: 'Relative share of traffic (default 1).' }),
});

const health = z.strictObject({
  path: z
    .string()
    .startsWith('/')
    .default('/healthz')
    .meta({ description: 'Path probed with GET on every target.' }),
  interval: duration('Time between probes of one target. Default 5s.').default(5_000),
  timeout: duration('A probe slower than this fails. Default 1s.').default(1_000),
  unhealthy_after: z
    .number()
    .int()
    .min(1)
    .default(3)
    .meta({ description: 'Consecutive failed probes to mark a target unhealthy.' }),
  healthy_after: z
    .number()
    .int()
    .min(1)
    .default(2)
    .meta({ description: 'Consecutive good probes to mark it healthy again.' }),
});

const outlier = z.strictObject({
  consecutive_failures: z.number().int().min(1).default(5).meta({
    description: 'Consecutive connection failures, timeouts or 5xx that eject a target. Default 5.',
  }),
  base_ejection: duration(
    'First ejection lasts this long; each repeat ejection lasts longer. Default 30s.',
  ).default(30_000),
  max_ejection: duration('Longest ejection. Default 5m.').default(300_000),
  eject_last: z
    .boolean()
    .default(false)
    .meta({ description: 'Allow ejecting the last available target (default false: keep serving from it).' }),
});

const circuit = z.strictObject({
  error_rate: percent(
    'Open when errors (timeouts, connection failures, 5xx) exceed this share. Default 50%.',
  ).default(0.5),
  min_requests: z
    .number()
    .int()
    .min(1)
    .default(20)
    .meta({ description: 'Requests in the window before the rate counts.' }),
  window: duration('Sliding window over which the error rate is measured. Default 10s.').default(10_000),
  open_for: duration('How long the circuit stays open before half-open probes. Default 30s.').default(30_000),
  half_open_requests: z
    .number()
    .int()
    .min(1)
    .default(3)
    .meta({ description: 'Probe requests admitted while half-open.' }),
});

// ---- shaping (SPEC §13) -------------------------------------------------------------------------
const headerValue = z.string().meta({
  description:
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the literal ${…} syntax being documented
    'Header value; ${client_ip}, ${request_id}, ${host} and ${route} are filled in per request, any other ${NAME} from the environment at load.',
});
const headerEdits = z.strictObject({
  set: z.record(z.string(), headerValue).optional().meta({
    description: 'Headers to set: any value already there (from the client or the upstream) is replaced.',
  }),
  add: z
    .record(z.string(), z.union([headerValue, z.array(headerValue)]))
    .optional()
    .meta({ description: 'Headers to add beside any already there (a list adds several).' }),
  remove: z.array(z.string()).optional().meta({ description: 'Header names to remove.' }),
});
const headers = z
  .strictObject({
    request: headerEdits.optional().meta({ description: 'Edits of the request sent upstream.' }),
    response: headerEdits.optional().meta({
      description:
        "Edits of the upstream's response sent to the client (not of the gateway's own problem responses).",
    }),
  })
  .meta({
    description:
      'Header edits (SPEC §13), merged per header name over route > upstream > defaults (the most specific layer that names a header decides it; within it, remove applies after set and add). Hop-by-hop and framing headers cannot be edited; Host has its own option. See docs/shaping.md.',
  });
const hostMode = z.string().meta({
  description:
    "Host sent upstream: keep (the client's, default), upstream (the chosen target's own host:port, for virtual-hosted backends) or a host name. X-Forwarded-Host keeps the client's.",
});
const rewrite = z
  .union([
    z.strictObject({
      prefix: z.string().startsWith('/', 'a prefix starts with "/"').meta({
        description: "Replaces the route's matched path prefix (`/` drops it, like strip_prefix).",
      }),
    }),
    z.strictObject({
      regex: z.string().meta({
        description: 'JavaScript regular expression matched against the normalised path (query excluded).',
      }),
      to: z
        .string()
        // biome-ignore lint/suspicious/noTemplateCurlyInString: the literal ${1} syntax being documented
        .meta({ description: 'Replacement of the matched part; $1 or ${1} for groups, $$ for a $.' }),
    }),
  ])
  .meta({
    description:
      'Path rewrite before forwarding: { prefix: NEW } or { regex, to }. The result is normalised again; one holding a dot segment or an encoded "/" is refused with 400. Not with strip_prefix.',
  });

const upstream = z.strictObject({
  targets: z
    .array(z.union([target, weightedTarget]))
    .min(1, 'an upstream needs at least one target')
    .meta({ description: 'Target URLs, or { url, weight } objects.' }),
  balance: z.enum(['round-robin', 'least-request', 'random']).default('round-robin').meta({
    description:
      'How a target is picked: round-robin (weighted), least-request (power of two choices), random.',
  }),
  health: health.optional().meta({ description: 'Active health checks (off unless set).' }),
  outlier: outlier.optional().meta({ description: 'Passive outlier ejection (off unless set).' }),
  circuit: circuit.optional().meta({ description: 'Circuit breaker on the error rate (off unless set).' }),
  max_concurrent: z.number().int().positive().optional().meta({
    description: 'Most requests in flight to this upstream; excess waits up to queue_timeout, then 503.',
  }),
  queue_timeout: duration('How long a request may wait for a max_concurrent slot. Default 1s.').default(
    1_000,
  ),
  timeouts: timeouts.optional().meta({ description: 'Timeouts for every route using this upstream.' }),
  max_body: size('Largest request body accepted for routes of this upstream (413).').optional(),
  max_connections: z
    .number()
    .int()
    .positive()
    .optional()
    .meta({ description: 'Most open connections to each target (default: unlimited).' }),
  tls: z
    .strictObject({
      ca: z.string().optional().meta({
        description:
          'PEM file of the CA(s) to trust for https:// targets instead of the system ones (e.g. an internal CA).',
      }),
      servername: z.string().optional().meta({
        description: 'Name to send as SNI and to verify the certificate against (default: the target host).',
      }),
      insecure: z.boolean().default(false).meta({
        description: 'Accept any certificate (like curl -k). Only for tests and trusted networks.',
      }),
    })
    .optional()
    .meta({ description: 'TLS towards https:// targets. Verification is on by default.' }),
  headers: headers.optional(),
  host: hostMode.optional(),
});

const lint = z
  .strictObject({
    ignore: z.array(z.enum(LINT_CODE_NAMES)).default([]).meta({
      description:
        'Lint findings of `sluice check` (and the start-up log) not to report, by code, e.g. [ttfb-below-total] on a streaming route. Codes: docs/operations.md.',
    }),
  })
  .optional();

const method = z.string().regex(/^[A-Z]+$/, 'methods are upper-case tokens such as GET or POST');

const ALGORITHMS = ['br', 'zstd', 'gzip'] as const;
const compress = z
  .union([
    z.boolean(),
    z.strictObject({
      types: z.array(z.string()).optional().meta({
        description:
          'Media types to compress (`text/*` allowed). Default: text, JSON, JavaScript, SVG and XML types (never text/event-stream).',
      }),
      min_size: size('Smallest response compressed (by Content-Length, when known). Default 1KB.').default(
        1024,
      ),
      algorithms: z
        .array(z.enum(ALGORITHMS))
        .min(1)
        .default([...ALGORITHMS])
        .meta({
          description:
            'Encodings offered, in order of preference on equal q-values. Default [br, zstd, gzip].',
        }),
    }),
  ])
  .meta({
    description:
      'Compress responses the client accepts (Accept-Encoding) and the upstream did not encode: true, or { types, min_size, algorithms }. Off unless set.',
  });

const route = z.strictObject({
  name: name.meta({ description: 'Unique name, used in logs, metrics and errors.' }),
  match: z
    .strictObject({
      path: z
        .string()
        .startsWith('/', 'a path prefix starts with "/"')
        .default('/')
        .meta({ description: 'Path prefix, matched on whole segments of the normalised path.' }),
      host: z.string().optional().meta({
        description: 'Host to match (case-insensitive, port ignored); "*.example.com" for subdomains.',
      }),
      methods: z.array(method).optional().meta({ description: 'Methods to match (default: all).' }),
      headers: z
        .record(z.string(), z.string())
        .optional()
        .meta({ description: 'Headers that must be present with exactly these values.' }),
    })
    .prefault({}),
  upstream: name.meta({ description: 'Name of the upstream under `upstreams:`.' }),
  strip_prefix: z
    .boolean()
    .default(false)
    .meta({ description: 'Remove the matched path prefix before forwarding.' }),
  websocket: z.boolean().default(true).meta({
    description:
      'Proxy WebSocket and other Upgrade requests on this route (connect and ttfb apply to the handshake, then timeouts.idle). Default true.',
  }),
  timeouts: timeouts.optional(),
  max_body: size('Largest request body accepted (413).').optional(),
  lint: lint.meta({ description: "This route's lint findings to silence." }),
  retry: z
    .strictObject({
      attempts: z.number().int().min(1).max(10).meta({ description: 'Tries in all, the first included.' }),
      on: z
        .array(z.union([z.enum(['connect', 'reset', 'ttfb']), z.number().int().min(500).max(599)]))
        .default(['connect', 'reset'])
        .meta({
          description: 'Conditions that allow a retry: connect, reset, ttfb (timeout) and 5xx status codes.',
        }),
      budget: percent(
        'Retries may add at most this share of requests (over 10 s, min 3 per second). Default 20%.',
      ).default(0.2),
      per_try: duration('Budget of one try (default: what is left of total).').optional(),
      backoff: duration('Base of the jittered exponential backoff between tries. Default 25ms.').default(25),
      buffer: size(
        'A request body up to this size is kept while it is sent, so that a retryable request with a body (PUT, or POST with Idempotency-Key) can be retried after a reset or a ttfb timeout; a larger body streams and is retried only after a connect failure. Default 64KB.',
      ).default(64 * 1024),
    })
    .optional()
    .meta({ description: 'Retries of idempotent requests (or with Idempotency-Key).' }),
  async: z
    .strictObject({
      mode: z.enum(['off', 'auto', 'queue', 'prefer']).default('off').meta({
        description:
          'off | auto (202 when slow) | queue (202 at once, delivered by workers) | prefer (on Prefer: respond-async).',
      }),
      after: duration(
        'auto/prefer: answer 202 when no response headers came within this. Default 5s.',
      ).default(5_000),
      timeout: duration('Budget of the upstream call once it runs in the background. Default 15m.').default(
        900_000,
      ),
      keep: duration('How long a finished job and its result are kept. Default 1h.').default(3_600_000),
      max_result: size(
        'Largest result stored; larger ends the job failed (result-too-large). Default 10MB.',
      ).default(10 * 1024 * 1024),
      max_body: size('Largest request body stored for queue mode. Default 10MB.').default(10 * 1024 * 1024),
      attempts: z
        .number()
        .int()
        .min(1)
        .max(20)
        .default(3)
        .meta({ description: 'queue: delivery tries where safe.' }),
      callback: z
        .strictObject({
          allow: z.array(z.string()).min(1).meta({
            description: 'URL prefixes a Callback-Url header may name (e.g. https://hooks.example.com/).',
          }),
          secret: z.string().min(16).meta({ description: 'HMAC-SHA256 key signing callback bodies.' }),
        })
        .optional()
        .meta({ description: "Completion webhooks to the request's Callback-Url, when allowed." }),
    })
    .optional()
    .meta({ description: 'Asynchronous offload: slow requests become jobs to poll (202 + Location).' }),
  cache: z
    .strictObject({
      ttl: duration(
        'Freshness for responses whose upstream gave none (no max-age, s-maxage or Expires). No default: `cache: {}` stores only what the upstream made cacheable.',
      ).optional(),
      stale_while_revalidate: duration(
        'Serve a stale response at once and refresh it in the background, this long past its freshness (RFC 5861), when the response does not say. Default: none.',
      ).optional(),
      stale_if_error: duration(
        'Serve a stale response, this long past its freshness, when the upstream errs (5xx), times out in any phase, is unreachable, has its circuit open or is shed (RFC 5861), when the response does not say. Default: none.',
      ).optional(),
      max_entry: size('Largest response stored; larger ones stream through uncached. Default 1MB.').default(
        1024 * 1024,
      ),
      vary_limit: z.number().int().min(1).max(1000).default(16).meta({
        description: 'Variants kept per URL (Vary); the least recently used goes first. Default 16.',
      }),
    })
    .optional()
    .meta({
      description:
        'RFC 9111 shared cache for GET and HEAD, with stale-while-revalidate, stale-if-error and coalescing of concurrent misses.',
    }),
  compress: compress.optional(),
  headers: headers.optional(),
  host: hostMode.optional(),
  rewrite: rewrite.optional(),
  ...accessShape,
});

const client = z
  .strictObject({
    header_timeout: duration('The whole request head must arrive within this (408). Default 10s.').default(
      10_000,
    ),
    body_idle_timeout: duration('Idle gap while reading a request body (408). Default 30s.').default(30_000),
    send_timeout: duration('Client not reading the response: the connection is closed. Default 60s.').default(
      60_000,
    ),
    keepalive_timeout: duration(
      'Idle keep-alive client connections are closed after this. Default 75s.',
    ).default(75_000),
    max_header_size: size('Largest request head (431). Default 16KB.').default(16 * 1024),
    max_headers: z
      .number()
      .int()
      .positive()
      .default(100)
      .meta({ description: 'Most request headers (431).' }),
    trusted_proxies: z
      .array(z.string())
      .default([])
      .meta({ description: 'CIDRs (or addresses) whose X-Forwarded-* headers are kept and extended.' }),
  })
  .prefault({});

const certPair = z.strictObject({
  cert: z.string().meta({ description: 'PEM certificate file (with its chain).' }),
  key: z.string().meta({ description: 'PEM private key file.' }),
});
const listener = z.union([
  address('host:port, plain HTTP.'),
  z.strictObject({
    address: address('host:port.'),
    tls: z
      .union([certPair, z.array(certPair).min(1)])
      .optional()
      .meta({
        description:
          'TLS: { cert, key } or a list of them (the one whose names match the client SNI is chosen, the first otherwise); the files are reloaded when they change.',
      }),
  }),
]);

const WORKERS_EXPECTED = 'expected auto (one process per core) or a number of processes, 1 to 256';

export const configSchema = z.strictObject({
  listen: z
    .union([address('Public listener, host:port.'), z.array(listener).min(1)])
    .default('0.0.0.0:8080')
    .meta({
      description:
        'Public listener, host:port; or a list of listeners, each host:port or { address, tls: { cert, key } | [ … ] } for HTTPS.',
    }),
  admin: z
    .strictObject({
      listen: address('Admin listener (metrics, health, API). Default 127.0.0.1:8081.').default(
        '127.0.0.1:8081',
      ),
      token: z.string().optional().meta({ description: 'Bearer token for the admin API.' }),
    })
    .prefault({}),
  access_log: z
    .union([
      z.string(),
      z.strictObject({
        path: z.string().default('stdout').meta({ description: 'stdout, stderr, off, or a file path.' }),
        format: z.string().default('json').meta({
          description:
            "json (default), combined (nginx's), or a template of nginx-style $variables (docs/shaping.md#access-log-formats).",
        }),
      }),
    ])
    .default('stdout')
    .meta({
      description:
        'Where the access log goes: stdout, stderr, off, or a file path (JSON lines); or { path, format: json | combined | TEMPLATE }. SIGUSR1 reopens the file (logrotate).',
    }),
  watch: z.boolean().default(true).meta({
    description:
      'Reload the config file when it changes (debounced; editors that save by renaming are followed). A valid file applies to new requests, in-flight ones keep theirs; an invalid one is refused with file:line and the running config stays. Default true.',
  }),
  cache_size: size(
    'Memory for every route cache together; the least recently used entries are evicted. Default 64MB.',
  ).default(64 * 1024 * 1024),
  shutdown_timeout: duration(
    'On SIGTERM, how long in-flight requests may take to finish. Default 30s.',
  ).default(30_000),
  client,
  defaults: z
    .strictObject({
      timeouts: timeouts.prefault({}),
      max_body: size('Largest request body accepted (413). Default 10MB.').default(10 * 1024 * 1024),
      client_timeout: duration(
        'Alias of chain.client (the timeout of whatever sits right in front of Sluice); prefer chain.client.',
      ).optional(),
      compress: compress.optional(),
      headers: headers.optional(),
      host: hostMode.optional(),
      ...accessDefaultsShape,
    })
    .prefault({}),
  chain: z
    .strictObject({
      client: duration(
        'How long the client waits for an answer (e.g. a browser, a mobile app, a caller SDK).',
      ).optional(),
      apigw: z.boolean().default(false).meta({
        description:
          'An AWS API Gateway sits in front: its 29s integration timeout is one more layer of the chain.',
      }),
      lb: duration(
        'How long the load balancer (or CDN, ingress) in front of Sluice waits for an answer.',
      ).optional(),
      app: duration(
        "The upstream app's own request timeout (e.g. its server or framework timeout).",
      ).optional(),
    })
    .optional()
    .meta({
      description:
        'The timeouts around Sluice, outermost first, for the chain lint of `sluice check`: each must give up after everything inside it (client > API Gateway > lb > route total > app).',
    }),
  lint: lint.meta({ description: 'Lint findings to silence on every route and for the chain.' }),
  workers: z
    .union(
      [
        z.literal('auto'),
        z
          .number()
          .int({ error: WORKERS_EXPECTED })
          .min(1, { error: WORKERS_EXPECTED })
          .max(256, { error: WORKERS_EXPECTED }),
      ],
      { error: WORKERS_EXPECTED },
    )
    .default(1)
    .meta({
      description:
        'Processes serving the public listener, sharing its port (SO_REUSEPORT): a number, or auto (one per core). The first also runs the admin listener and counts for the whole instance. Default 1.',
    }),
  store: z
    .string()
    .regex(/^(sqlite:.+|rediss?:\/\/.+)$/, 'expected sqlite:PATH or redis://host:port/db')
    .default('sqlite:./.sluice/sluice.db')
    .meta({ description: 'Where async jobs live: sqlite:PATH (one instance) or redis://… (several).' }),
  jobs: z
    .strictObject({
      prefix: z
        .string()
        .startsWith('/')
        .default('/_sluice/jobs')
        .meta({ description: 'Public path of the job resource.' }),
      workers: z
        .number()
        .int()
        .min(1)
        .default(8)
        .meta({ description: 'queue mode: deliveries in flight per instance.' }),
      lease: duration(
        'How long an instance holds a running job (an auto/prefer call, a queue delivery) without renewing it; renewed every third of it. A job whose instance stopped is recovered by another within one lease plus 5 s (auto → failed interrupted; queue → delivered again where safe). Default 10s.',
      ).default(10_000),
    })
    .prefault({}),
  alerts: z
    .strictObject({
      webhook: z
        .string()
        .url()
        .optional()
        .meta({ description: 'Slack-compatible webhook receiving firing/resolved alerts.' }),
      secret: z.string().min(16).optional().meta({
        description:
          'HMAC-SHA256 key (at least 16 characters) signing every webhook body as `Sluice-Signature: t=<unix seconds>,v1=<hex>`, like job callbacks. Default: unsigned.',
      }),
      min_requests: z.number().int().min(1).default(20).meta({
        description:
          'Latency and rate rules judge a route only once its window holds this many requests; below it an alert neither starts nor resolves. Default 20.',
      }),
      window: duration('Sliding window of latency percentiles and rates. Default 30s.').default(30_000),
      rules: z
        .array(
          z.strictObject({
            name: name.meta({ description: 'Rule name, shown in notifications.' }),
            when: z.string().meta({
              description:
                'Condition: "p50|p95|p99 > N% of timeout" (the timeout that fires first: ttfb when it is below total, else total), "timeout_rate > N%", "error_rate > N%", "circuit_open", or "target_down" (per upstream: a target failed its health check or is ejected).',
            }),
            for: duration('How long the condition must hold before firing. Default 10s.').default(10_000),
            routes: z.array(z.string()).optional().meta({
              description:
                'Only these routes (default: every route); for target_down, the upstreams of these routes.',
            }),
          }),
        )
        .default([]),
    })
    .prefault({}),
  upstreams: z.record(name, upstream).meta({ description: 'Named groups of targets.' }),
  routes: z.array(route).min(1, 'at least one route is needed'),
});

/** The config as written (after validation and unit conversion), before defaults are resolved per route. */
export type ConfigFile = z.output<typeof configSchema>;
export type TimeoutsInput = z.output<typeof timeouts>;

/** JSON Schema of sluice.yaml, for editors (`# yaml-language-server: $schema=…`). */
export function configJsonSchema(): Record<string, unknown> {
  return {
    ...z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }),
    title: 'Sluice configuration (sluice.yaml)',
  };
}
