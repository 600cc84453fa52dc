/**
 * The access settings of a route or of `defaults` (SPEC §13): allow/deny CIDR lists, auth and
 * rate_limit. Part of the one schema (schema.ts spreads `accessShape` into routes and defaults); the
 * files they name are read and checked in src/access/settings.ts, at load.
 */
import { z } from 'zod';
import { RATE_PATTERN } from '../access/rate-limit.ts';
import { DURATION_PATTERN, parseDuration } from './units.ts';

const duration = (description: string) =>
  z
    .union([z.literal(0), z.string().regex(new RegExp(DURATION_PATTERN))], {
      error: 'expected a duration such as 250ms, 5s, 2m or 1h',
    })
    .transform((s) => (s === 0 ? 0 : (parseDuration(s) as number)))
    .meta({ description });

const TOKEN = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;
const headerName = z.string().regex(TOKEN, 'expected a header name such as X-Api-Key');
const oneOrMore = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]);

const JWT_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
] as const;

export const authSchema = z.strictObject({
  basic: z
    .strictObject({
      users: z.string().min(1).meta({
        description:
          'File of `user:hash` lines (htpasswd -B style): bcrypt ($2a$, $2b$, $2y$) or scrypt in PHC form ($scrypt$ln=…,r=…,p=…$salt$hash). Other hashes and plain text are refused at load.',
      }),
      realm: z
        .string()
        .default('sluice')
        .meta({ description: 'Realm of the WWW-Authenticate challenge. Default sluice.' }),
    })
    .optional()
    .meta({ description: 'HTTP basic authentication against a users file (the user name is the identity).' }),
  api_key: z
    .strictObject({
      header: headerName
        .default('X-Api-Key')
        .meta({ description: 'Request header carrying the key. Default X-Api-Key.' }),
      keys: z.string().min(1).meta({
        description:
          'File of `name:key` or `name:sha256:HEX` lines; only SHA-256 hashes are kept in memory, the name is the identity.',
      }),
    })
    .optional()
    .meta({ description: 'API keys in a request header.' }),
  jwt: z
    .strictObject({
      jwks: z
        .url({ protocol: /^https?$/ })
        .optional()
        .meta({
          description: 'URL of the JSON Web Key Set (fetched under jwks_timeout, cached for jwks_cache).',
        }),
      public_key: z
        .string()
        .optional()
        .meta({ description: 'PEM file of the public key (instead of jwks).' }),
      issuer: oneOrMore.meta({ description: 'Accepted `iss` (one or a list).' }),
      audience: oneOrMore.meta({ description: 'Accepted `aud` (one or a list).' }),
      leeway: duration('Clock skew accepted on exp and nbf. Default 30s.').default(30_000),
      algorithms: z.array(z.enum(JWT_ALGORITHMS)).min(1).optional().meta({
        description: 'Accepted signature algorithms (default: any the key supports; never none or HMAC).',
      }),
      identity_claim: z
        .string()
        .min(1)
        .default('sub')
        .meta({ description: 'Claim that is the identity (a string). Default sub.' }),
      jwks_timeout: duration(
        'Longest wait for the JWKS; a request that needs it gets 503 auth-unavailable after this. Default 2s.',
      ).default(2_000),
      jwks_cache: duration(
        'How long a fetched JWKS is used before it is fetched again. Default 10m.',
      ).default(600_000),
      cache: z.boolean().default(true).meta({
        description:
          'Keep verified tokens (until exp, at most 5 minutes) so a repeated token costs no signature check. Default true.',
      }),
    })
    .optional()
    .meta({ description: 'Bearer JSON Web Tokens (signature, exp/nbf, iss, aud).' }),
  identity_header: headerName.optional().meta({
    description:
      'Request header the verified identity is sent upstream in (any value the client sent in it is removed). Default: not sent.',
  }),
  forward_auth: z.boolean().default(false).meta({
    description: "Forward the client's Authorization (or API-key header) upstream. Default false: stripped.",
  }),
});

export const rateLimitSchema = z.strictObject({
  rate: z
    .string()
    .regex(new RegExp(RATE_PATTERN), 'expected a rate such as 100/s, 20/m or 1000/h')
    .meta({ description: 'Sustained rate: N/s, N/m or N/h.' }),
  burst: z.number().int().min(1).max(1_000_000).optional().meta({
    description: 'Requests a full bucket lets through at once. Default: the N of rate.',
  }),
  key: z
    .string()
    .regex(
      /^(client_ip|identity|route|header:[A-Za-z0-9!#$%&'*+.^_`|~-]+)$/,
      'expected client_ip, identity, route or header:NAME',
    )
    .default('client_ip')
    .meta({
      description:
        'What a bucket is per: client_ip (after trusted_proxies), header:NAME (a request without it: per client_ip), identity (needs auth) or route (one bucket). Default client_ip.',
    }),
});

const cidrs = (description: string) => z.array(z.string()).meta({ description });

/** Route-level keys (`false` switches off what `defaults` set). */
export const accessShape = {
  allow: cidrs(
    'Only clients whose address (after client.trusted_proxies) is in these CIDRs or addresses may use the route (403 otherwise).',
  ).optional(),
  deny: cidrs('Clients in these CIDRs or addresses get 403; deny wins over allow.').optional(),
  auth: z
    .union([z.literal(false), authSchema])
    .optional()
    .meta({
      description: 'Authentication: exactly one of basic, api_key or jwt; false switches off defaults.auth.',
    }),
  rate_limit: z
    .union([z.literal(false), rateLimitSchema])
    .optional()
    .meta({ description: 'Token-bucket rate limit (429); false switches off defaults.rate_limit.' }),
};

/** `defaults` keys: apply to every route that does not set its own. */
export const accessDefaultsShape = {
  allow: cidrs('`allow` of every route that sets none (docs/access.md).').optional(),
  deny: cidrs('`deny` of every route that sets none.').optional(),
  auth: authSchema.optional().meta({
    description: '`auth` of every route that sets none; a route switches it off with `auth: false`.',
  }),
  rate_limit: rateLimitSchema.optional().meta({
    description:
      '`rate_limit` of every route that sets none (a route switches it off with `rate_limit: false`); each route has its own buckets.',
  }),
};
