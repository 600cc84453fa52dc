/**
 * The one schema of sluice.yaml. The validator, the TypeScript types and the JSON Schema in
 * `schema/sluice.schema.json` (for editors) all come from here; the `description` of each field is its
 * user documentation. Adding a config section means adding it here and resolving it in resolve.ts.
 */
import { z } from 'zod';
import { DURATION_PATTERN, parseDuration, parseSize, SIZE_PATTERN } from './units.ts';

const duration = (description: string) =>
  z
    .string()
    .regex(new RegExp(DURATION_PATTERN), 'expected a duration such as 250ms, 5s, 2m or 1h')
    .transform((s) => parseDuration(s) as number)
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
};
const timeouts = z.strictObject(timeoutsShape).partial();

const target = z
  .string()
  .url('expected an http:// or https:// URL')
  .regex(/^https?:\/\//, 'expected an http:// or https:// URL')
  .meta({ description: 'Base URL of one upstream server, e.g. http://127.0.0.1:9001' });

const upstream = z.strictObject({
  targets: z.array(target).min(1, 'an upstream needs at least one target'),
  timeouts: timeouts.optional().meta({ description: 'Timeouts for every route using this upstream.' }),
  max_body: size('Largest request body accepted for routes of this upstream (413).').optional(),
  max_connections: z
    .number()
    .int()
    .positive()
    .optional()
    .meta({ description: 'Most open connections to each target (default: unlimited).' }),
});

const method = z.string().regex(/^[A-Z]+$/, 'methods are upper-case tokens such as GET or POST');

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
  timeouts: timeouts.optional(),
  max_body: size('Largest request body accepted (413).').optional(),
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

export const configSchema = z.strictObject({
  listen: address('Public listener, host:port.').default('0.0.0.0:8080'),
  admin: z
    .strictObject({
      listen: address('Admin listener (metrics, health, API). Default 127.0.0.1:8081.').default(
        '127.0.0.1:8081',
      ),
      token: z.string().optional().meta({ description: 'Bearer token for the admin API.' }),
    })
    .prefault({}),
  access_log: z
    .string()
    .default('stdout')
    .meta({ description: 'Where the JSON access log goes: stdout, stderr, off, or a file path.' }),
  shutdown_timeout: duration(
    'On SIGTERM, how long in-flight requests may take to finish. Default 30s.',
  ).default(30_000),
  client,
  defaults: z
    .strictObject({
      timeouts: timeouts.prefault({}),
      max_body: size('Largest request body accepted (413). Default 10MB.').default(10 * 1024 * 1024),
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
